"""The pre-screen of a search: ``prescreen = {"keep": N, "method": "prior"}`` in a space file.

    spec, screen = prescreen(spec, run_dir, restoring, echo)   # before the plan: spec searches the top N
    agreement(screen, trials, "error_rate", "min")             # for the report: the screen's rank vs fine-tuned

The space's model choices are ranked by ``method`` (:mod:`tunekit.prior`: ``prior``, timm's ImageNet top-1, the
default; ``logme``, LogME on the data, :mod:`tunekit.rank`; ``hybrid``, the prior's shortlist checked by LogME) on
the machine that starts the search, and the space keeps the ``keep`` best (a grid keeps its grid, a choice its
choice). The ranking is written to the run folder (``prescreen.json``); a resumed search reads it back instead of
ranking again, so it resumes the same trials. The fingerprint that guards resuming is the space file's,
pre-screen included.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TunekitError
from .prior import DEFAULT_METHOD, METHODS, rank_by, select
from .runfolder import PRESCREEN_FILE
from .spec import SearchSpec


@dataclass
class Screen:
    keep: int
    rows: list[dict[str, Any]]  # prior.Choice as dicts, best first (a file of tunekit < 0.x: rank.Ranked's)
    kept: list[str]
    method: str = "logme"  # what ranked them (files written before the methods were LogME's)

    def lines(self) -> list[str]:
        out = [f"  prescreen {self.method} ({METHODS.get(self.method, '?')}): keeping {len(self.kept)} of "
               f"{len(self.rows)} models"]
        for r in self.rows:
            mark = "keep" if r["model"] in self.kept else "drop"
            parts = []
            if r.get("top1") is not None:
                parts.append(f"ImageNet top-1 {r['top1']:.2f}")
            if r.get("logme") is not None:
                parts.append(f"LogME {r['logme']:.4f}")
            why = r.get("by") or r.get("status") or ""
            out.append(f"    {mark}  {r['model']}: {', '.join(parts) or '-'}" + (f"  ({why})" if why else ""))
        return out


def prescreen(spec: SearchSpec, run_dir: Path, restoring: bool,
              echo: Callable[[str], None]) -> tuple[SearchSpec, Screen]:
    """``spec`` with its model choices cut to the ``keep`` best by the pre-screen's method, and the ranking."""
    saved = run_dir / PRESCREEN_FILE
    if restoring and saved.is_file():
        screen = load_screen(run_dir)
        echo(f"  prescreen read back from {saved} (not ranked again)")
    else:
        models = [str(m) for m in spec.values_of("model") or []]
        # a resumed search from before the methods, whose ranking was not saved, ranks as it was made: by LogME
        method = spec.prescreen.get("method", "logme" if restoring else DEFAULT_METHOD)
        keep = spec.prescreen["keep"]
        options = {k: v for k, v in spec.prescreen.items() if k not in ("keep", "method")}
        img_size = spec.values_of("img_size")
        if "img_size" not in options and img_size and len(img_size) == 1:
            options["img_size"] = img_size[0]
        echo(f"prescreen: ranking {len(models)} models by {method} ({METHODS[method]})")

        def logme_of(names: list[str]) -> list[Any]:
            echo(f"  LogME of {len(names)} model(s) (a forward pass each)")
            return rank_apart(spec.data, names, on_row=lambda r: echo(
                f"  {r.model}: " + (f"LogME {r.logme:.4f}" if r.logme is not None else r.status)), **options)

        choices = rank_by(models, method, keep=keep, logme_of=logme_of)
        kept = select(choices, keep, method, usable=_no_weights)
        if not kept:
            raise TunekitError(f"prescreen {method}: no model could be ranked (none has a row in timm's table or "
                               f"pretrained weights here); see tunekit weights list")
        screen = Screen(keep, [c.to_dict() for c in choices], kept, method)
    return spec.with_models(screen.kept), screen


def _no_weights(model: str) -> str | None:
    """Why ``model``'s pretrained weights cannot be had here (the prior ranks without them), or None."""
    from .weights import check_weights_available

    try:
        check_weights_available(model)
    except TunekitError:
        return "no pretrained weights here"
    return None


def rank_apart(data: str, models: list[str], on_row: Callable[[Any], None], isolate: bool | None = None,
               **options: Any) -> list[Any]:
    """``rank.rank_models``; on a GPU (or with ``isolate``) in a process of its own that exits after
    it, so the driver keeps no CUDA context or cached GPU memory through the search its trials need
    (the rows are then shown when the ranking ends, not one by one)."""
    from .rank import rank_models

    if isolate is None:
        import torch

        isolate = torch.cuda.is_available()
    if not isolate:
        return rank_models(data, models, on_row=on_row, **options)
    from .device import in_own_process

    rows = in_own_process(rank_models, data, models, **options)
    for row in sorted(rows, key=lambda r: models.index(r.model)):
        on_row(row)
    return rows


def save_screen(screen: Screen, run_dir: Path) -> None:
    (run_dir / PRESCREEN_FILE).write_text(json.dumps(dataclasses.asdict(screen), indent=1))


def load_screen(run_dir: Path) -> Screen | None:
    path = Path(run_dir) / PRESCREEN_FILE
    if not path.is_file():
        return None
    return Screen(**json.loads(path.read_text()))


def agreement(screen: Screen, trials, metric: str, mode: str) -> dict[str, Any]:
    """Each model's pre-screen rank beside its fine-tuned rank (its best trial's ``metric``), and the Kendall
    tau between the two over the models fine-tuned, with its p-value."""
    from scipy.stats import kendalltau

    best = trials.groupby("model")[metric].min() if mode == "min" else trials.groupby("model")[metric].max()
    rows = []
    for r in screen.rows:
        tuned = best.get(r["model"], math.nan)
        rows.append({"model": r["model"], "top1": r.get("top1"), "logme": r.get("logme"), "screen_rank": r["rank"],
                     "kept": r["model"] in screen.kept, metric: None if math.isnan(tuned) else float(tuned)})
    both = [r for r in rows if r["screen_rank"] is not None and r[metric] is not None]
    order = sorted(both, key=lambda r: r[metric], reverse=mode == "max")
    for i, r in enumerate(order, 1):
        r["tuned_rank"] = i
    out: dict[str, Any] = {"rows": rows, "n": len(both), "tau": None, "p_value": None, "method": screen.method}
    if len(both) >= 3:
        tau, p = kendalltau([r["screen_rank"] for r in both], [r["tuned_rank"] for r in both])
        out["tau"], out["p_value"] = float(tau), float(p)
    return out
