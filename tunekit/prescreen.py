"""The pre-screen of a search: ``prescreen = {"keep": N}`` in a space file.

    spec, screen = prescreen(spec, run_dir, restoring, echo)   # before the plan: spec searches the top N
    agreement(screen, trials, "error_rate", "min")             # for the report: LogME rank vs fine-tuned

The space's model choices are ranked by LogME (:mod:`tunekit.rank`) on the machine that starts the
search, and the space keeps the ``keep`` best (a grid keeps its grid, a choice its choice). The
ranking is written to the run folder (``prescreen.json``); a resumed search reads it back instead of
ranking again, so it resumes the same trials. The fingerprint that guards resuming is the space
file's, pre-screen included.
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
from .runfolder import PRESCREEN_FILE
from .spec import SearchSpec


@dataclass
class Screen:
    keep: int
    rows: list[dict[str, Any]]  # rank.Ranked as dicts, best first, unscored last
    kept: list[str]

    def lines(self) -> list[str]:
        scored = [r for r in self.rows if r["logme"] is not None]
        out = [f"  prescreen LogME on {scored[0]['images'] if scored else 0} training images per model: "
               f"keeping {len(self.kept)} of {len(self.rows)} models"]
        for r in self.rows:
            mark = "keep" if r["model"] in self.kept else "drop"
            score = f"LogME {r['logme']:8.4f}  ({r['seconds']:.1f} s)" if r["logme"] is not None else r["status"]
            out.append(f"    {mark}  {r['model']}: {score}")
        return out


def prescreen(spec: SearchSpec, run_dir: Path, restoring: bool,
              echo: Callable[[str], None]) -> tuple[SearchSpec, Screen]:
    """``spec`` with its model choices cut to the ``keep`` best by LogME, and the ranking."""
    saved = run_dir / PRESCREEN_FILE
    if restoring and saved.is_file():
        screen = load_screen(run_dir)
        echo(f"  prescreen read back from {saved} (not ranked again)")
    else:
        models = [str(m) for m in spec.values_of("model") or []]
        options = {k: v for k, v in spec.prescreen.items() if k != "keep"}
        img_size = spec.values_of("img_size")
        if "img_size" not in options and img_size and len(img_size) == 1:
            options["img_size"] = img_size[0]
        echo(f"prescreen: ranking {len(models)} models by LogME (a forward pass each)")
        rows = rank_apart(spec.data, models, on_row=lambda r: echo(
            f"  {r.model}: " + (f"LogME {r.logme:.4f}" if r.logme is not None else r.status)), **options)
        scored = [r.model for r in rows if r.logme is not None]
        if not scored:
            raise TunekitError("prescreen: no model could be scored (none has pretrained weights here); "
                               "see tunekit weights list")
        screen = Screen(spec.prescreen["keep"], [r.to_dict() for r in rows], scored[: spec.prescreen["keep"]])
    return spec.with_models(screen.kept), screen


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
    """Each kept model's LogME rank beside its fine-tuned rank (its best trial's ``metric``), and the
    Kendall tau between LogME and that metric over the models fine-tuned, with its p-value."""
    from scipy.stats import kendalltau

    best = trials.groupby("model")[metric].min() if mode == "min" else trials.groupby("model")[metric].max()
    rows = []
    for r in screen.rows:
        tuned = best.get(r["model"], math.nan)
        rows.append({"model": r["model"], "logme": r["logme"], "logme_rank": r["rank"],
                     "kept": r["model"] in screen.kept, metric: None if math.isnan(tuned) else float(tuned)})
    both = [r for r in rows if r["logme"] is not None and r[metric] is not None]
    order = sorted(both, key=lambda r: r[metric], reverse=mode == "max")
    for i, r in enumerate(order, 1):
        r["tuned_rank"] = i
    out: dict[str, Any] = {"rows": rows, "n": len(both), "tau": None, "p_value": None}
    if len(both) >= 3:
        sign = -1 if mode == "min" else 1  # a higher LogME should mean a lower error
        tau, p = kendalltau([r["logme"] for r in both], [sign * r[metric] for r in both])
        out["tau"], out["p_value"] = float(tau), float(p)
    return out
