"""The study's rules ("The best vision models for fine-tuning"), reproduced exactly: families, the
per-model ranking by score, Pareto fronts.

    rank = ranking(runs)          # per (dataset, family, model): min error/time/memory, score, rank

Each model's family from its name (``^([a-z]+?(?:v2)?)(?:\\d|_|$)``, swinv2 counted as swin); per
(dataset, family, model) the minimum error_rate, fit_time and gpu_mem over its runs (the study's
``pivot_table(aggfunc=min)``); ``score = error_rate * (fit_time + 80)``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..runfolder import Status

SCORE_CONSTANT = 80.0
RANKING_COLUMNS = ["dataset", "family", "model", "error_rate", "fit_time", "gpu_mem", "score", "rank"]
COMPLETED, DIVERGED = Status.COMPLETED.value, Status.DIVERGED.value


def family(model: str) -> str:
    """The study's family of a model name: lowercase prefix up to a digit or '_', keeping 'v2'."""
    m = re.match(r"^([a-z]+?(?:v2)?)(?:\d|_|$)", str(model).split(".")[0])
    name = m.group(1) if m else str(model)
    return "swin" if name == "swinv2" else name


UNSHARED = "fit_time_unshared"


def time_basis(runs: pd.DataFrame) -> str:
    """The fit time the score uses: ``fit_time_unshared`` where trials shared GPUs and every run has it
    (``tunekit.unshared``: its work at its network's speed alone), else the measured ``fit_time``."""
    if UNSHARED in runs and len(runs) and runs[UNSHARED].notna().all() and not np.allclose(
            runs[UNSHARED].astype(float), runs["fit_time"].astype(float), equal_nan=True):
        return UNSHARED
    return "fit_time"


def ranking(runs: pd.DataFrame, constant: float = SCORE_CONSTANT) -> pd.DataFrame:
    """Per (dataset, family, model): min error_rate, fit_time, gpu_mem over its runs; score; rank. Where
    trials shared GPUs, also fit_time_unshared, which the score then uses (``time_basis``)."""
    ok = runs[runs["status"].isin([COMPLETED, DIVERGED]) | runs["status"].isna()].copy()
    if ok.empty:
        return pd.DataFrame(columns=RANKING_COLUMNS)
    ok["family"] = ok["model"].map(family)
    basis = time_basis(ok)
    costs = ["error_rate", "fit_time", "gpu_mem"] + ([basis] if basis == UNSHARED else [])
    # the study's pivot_table(aggfunc=min), over the (dataset, family, model) groups that occur
    pt = ok.groupby(["dataset", "family", "model"])[costs].min().reset_index()
    pt["score"] = pt["error_rate"] * (pt[basis] + constant)
    pt = pt.sort_values(["dataset", "score"]).reset_index(drop=True)
    pt["rank"] = pt.groupby("dataset")["score"].rank(method="min").astype(int)
    columns = list(RANKING_COLUMNS)
    if basis == UNSHARED:
        columns.insert(columns.index("fit_time") + 1, UNSHARED)
    return pt[columns]


def pareto(df: pd.DataFrame, x: str, y: str = "error_rate") -> pd.Series:
    """True where no other row is at least as good in both x and y and better in one (both minimized)."""
    values = df[[x, y]].to_numpy(dtype=float)
    front = []
    for xi, yi in values:
        if np.isnan(xi) or np.isnan(yi):
            front.append(False)
            continue
        dominated = ((values[:, 0] <= xi) & (values[:, 1] <= yi) & ((values[:, 0] < xi) | (values[:, 1] < yi)))
        front.append(not dominated.any())
    return pd.Series(front, index=df.index)
