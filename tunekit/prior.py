"""Which backbones to try first, ranked three ways (``tunekit rank --method``, ``prescreen = {"method": ...}``):

    choices = rank_by(models, "prior")                                 # timm's ImageNet top-1, no forward pass
    choices = rank_by(models, "hybrid", keep=4, logme_of=score)        # the prior's top 8, checked by LogME
    kept = select(choices, keep=4)

``prior``   ImageNet top-1 from timm's published table (``timm_table``): free, no forward pass.
``logme``   LogME of each model's features of the user's training images (``tunekit.rank``: a forward pass each).
``hybrid``  the prior's top ``2 x keep`` candidates (half the models when nothing is kept), ranked by LogME; the
            others after them by the prior: tunekit's own rule, after Renggli et al. (2020, "Which Model to
            Transfer?"), who found ImageNet accuracy and a cheap probe together beat either alone.

The default is ``prior``. On the transferability benchmark LogME, NLEEP and SFDA are published on (11 ImageNet
models x 11 datasets) the prior's mean weighted Kendall tau is above LogME's published one, and the hybrid and
LogME can be measured offline only on three real models here, too few to overturn that
(``benchmarks/prior_check.py``; figures in benchmarks/RESULTS.md). A model without an ImageNet top-1 in the
table (a user's own, a tag newer than the table, or one timm publishes no ImageNet score for: in22k-only
weights) has no prior: it is scored by LogME, ranked by it among such models after the others, and never cut by
a pre-screen on the prior's say; the output says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .errors import TunekitError
from .timm_table import load

METHODS = {
    "prior": "ImageNet top-1 from timm's published table (no forward pass)",
    "logme": "LogME on the data's training images (a forward pass per model)",
    "hybrid": "the prior's top 2 x keep candidates ranked by LogME, the others after them by the prior",
}
DEFAULT_METHOD = "prior"
SHORTLIST = 2  # hybrid: candidates per model kept


@dataclass
class Choice:
    model: str
    top1: float | None  # ImageNet top-1 (%), from timm's table; None without a row
    logme: float | None = None  # None: not scored (not asked for, or see status)
    by: str = ""  # what placed it: "ImageNet top-1", "LogME", ...
    status: str = ""  # LogME's: "scored", or why not
    rank: int | None = None  # 1 = first to try
    extra: dict[str, Any] | None = None  # LogME's details (images, seconds, ...), where it ran

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_method(method: str, where: str = "method") -> str:
    if method not in METHODS:
        raise TunekitError(f"{where} must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


def shortlist(n: int, keep: int | None) -> int:
    """How many of the prior's best the hybrid checks by LogME."""
    return min(n, SHORTLIST * keep if keep else max(2, math.ceil(n / 2)))


def rank_by(models: list[str], method: str = DEFAULT_METHOD, keep: int | None = None,
            logme_of: Callable[[list[str]], list[Any]] | None = None) -> list[Choice]:
    """``models`` ranked by ``method``, best first. ``logme_of(names)`` returns ``tunekit.rank.Ranked`` rows (it
    runs only for the models a method needs scored: none for ``prior`` when every model has a table row)."""
    check_method(method)
    table = load()
    choices = {m: Choice(m, (row.top1 if (row := table.find(m)) is not None else None)) for m in models}
    known = sorted((m for m in models if choices[m].top1 is not None), key=lambda m: -choices[m].top1)
    unknown = [m for m in models if choices[m].top1 is None]
    to_score = {"prior": unknown, "logme": list(models),
                "hybrid": known[:shortlist(len(models), keep)] + unknown}[method]
    if to_score:
        if logme_of is None:
            raise TunekitError(f"ranking by {method} needs LogME of {', '.join(to_score)}, and no data was given")
        for r in logme_of(to_score):
            c = choices[r.model]
            c.logme, c.status = r.logme, r.status
            c.extra = {k: v for k, v in r.to_dict().items() if k not in ("model", "logme", "status", "rank")}

    def by_logme(names: list[str], label: str) -> list[str]:
        for m in names:
            choices[m].by = label if choices[m].logme is not None else f"not scored: {choices[m].status or '?'}"
        return sorted(names, key=lambda m: (choices[m].logme is None, -(choices[m].logme or 0.0)))

    if method == "logme":
        order = by_logme(list(models), "LogME")
    elif method == "hybrid":  # the shortlist and the models the prior cannot place, by LogME; then the prior
        checked = known[:shortlist(len(models), keep)]
        order = by_logme(checked + unknown, "LogME (of the prior's shortlist)")
        for m in unknown:
            choices[m].by = choices[m].by.replace("of the prior's shortlist", "no ImageNet top-1 in timm's table")
        rest = known[len(checked):]
        for m in rest:
            choices[m].by = "ImageNet top-1"
        order += rest
    else:
        for m in known:
            choices[m].by = "ImageNet top-1"
        order = known + by_logme(unknown, "LogME (no ImageNet top-1 in timm's table)")
    for i, m in enumerate(order, 1):
        choices[m].rank = i
    return [choices[m] for m in order]


def select(choices: list[Choice], keep: int, method: str = DEFAULT_METHOD,
           usable: Callable[[str], str | None] = lambda model: None) -> list[str]:
    """The models a pre-screen keeps, in ranking order: ``prior``: the best ``keep`` by ImageNet top-1, and
    every scored model the prior cannot place (no row: never cut without evidence); ``logme`` and
    ``hybrid``: the first ``keep`` scored by LogME (the hybrid's shortlist, with the models without a row).
    ``usable(model)``: why a model cannot be trained (no pretrained weights here), or None; one that cannot is
    passed over, its ``status`` saying why (LogME's forward pass finds the same for the models it scores)."""
    def ok(c: Choice) -> bool:
        why = usable(c.model) if c.logme is None else None
        if why:
            c.status, c.by = why, f"passed over: {why}"
        return not why

    if method == "prior":
        kept = _first(choices, keep, lambda c: c.by == "ImageNet top-1" and ok(c))
        kept += [c.model for c in choices if c.top1 is None and c.logme is not None]
    else:
        kept = _first(choices, keep, lambda c: c.logme is not None)
        if len(kept) < keep:  # the shortlist had too few with weights: the next by the prior, as a prior screen would
            kept += _first([c for c in choices if c.model not in kept], keep - len(kept),
                           lambda c: c.by == "ImageNet top-1" and ok(c))
    return [c.model for c in choices if c.model in set(kept)]


def _first(choices: list[Choice], n: int, test: Callable[[Choice], bool]) -> list[str]:
    """The first ``n`` choices passing ``test``, which is asked of no more of them than it takes."""
    out = []
    for c in choices:
        if len(out) == n:
            break
        if test(c):
            out.append(c.model)
    return out
