"""The report's analysis: the study's ranking per dataset, lean picks, repeats, effects, importance,
ASHA's accounting, agreement between datasets.

    report = build(runs)           # runs: one row per trial, as report.load gives them
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..prescreen import Screen, agreement
from ..runfolder import Status
from .estimates import AXES, effects, importance, spearman_interval
from .study import SCORE_CONSTANT, UNSHARED, pareto, ranking
from .transfer import Transfer, imagenet_vs_finetune

COMPLETED, STOPPED = Status.COMPLETED.value, Status.STOPPED.value
MIN_MODELS_FOR_AGREEMENT = 5  # fewer models: the rank correlation's interval would span almost everything


@dataclass
class Report:
    runs: pd.DataFrame
    ranking: pd.DataFrame
    constant: float = SCORE_CONSTANT
    sections: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    effects: pd.DataFrame = field(default_factory=pd.DataFrame)
    importance: pd.DataFrame = field(default_factory=pd.DataFrame)
    asha: dict[str, Any] = field(default_factory=dict)
    rank_agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    prescreen: dict[str, dict[str, Any]] = field(default_factory=dict)  # run -> prescreen.agreement(...)
    transfer: dict[str, Transfer | None] = field(default_factory=dict)  # dataset -> ImageNet against fine-tuning

    @property
    def time_basis(self) -> str:
        """The fit time the score ranks by (``study.time_basis``): fit_time, or fit_time_unshared."""
        return UNSHARED if UNSHARED in self.ranking else "fit_time"


def build(runs: pd.DataFrame, constant: float = SCORE_CONSTANT, screens: dict[str, Screen] | None = None) -> Report:
    """The report of ``runs``; ``screens`` (run name -> its pre-screen) adds LogME's ranks beside the
    fine-tuned ones."""
    rank = ranking(runs, constant)
    report = Report(runs, rank, constant)
    for name, screen in (screens or {}).items():
        done = runs[(runs["run"] == name) & (runs["status"] == COMPLETED)]
        report.prescreen[name] = agreement(screen, done, "error_rate", "min")
    for dataset, pt in rank.groupby("dataset", sort=True):
        pt = pt.sort_values("score").reset_index(drop=True)
        t = report.time_basis
        pt["pareto_time"] = pareto(pt, t)
        pt["pareto_mem"] = pareto(pt, "gpu_mem")
        lean = pt[(pt[t] <= pt[t].median()) & (pt["gpu_mem"] <= pt["gpu_mem"].median())]
        quarter = (pt[t] <= pt[t].quantile(0.25)) & (pt["gpu_mem"] <= pt["gpu_mem"].quantile(0.25))
        leanest = pt[quarter]
        sub = runs[runs["dataset"] == dataset]
        report.sections[str(dataset)] = {
            "all": pt,
            "top": pt.head(15),
            "lean": lean.sort_values("error_rate").head(15),
            "leanest": leanest.sort_values("error_rate").head(15),
            "repeats": _repeats(sub),
        }
    report.effects = effects(runs)
    report.importance = importance(runs)
    report.asha = _asha(runs)
    report.rank_agreement = _rank_agreement(rank)
    scratch: frozenset = frozenset()  # (dataset, model) trained from scratch only: no ImageNet weights to judge
    if "pretrained" in runs:
        only = runs["pretrained"].eq(False).groupby([runs["dataset"], runs["model"]]).all()
        scratch = frozenset(only.index[only])
    report.transfer = imagenet_vs_finetune(rank, report.time_basis, scratch) if not rank.empty else {}
    return report


def _repeats(runs: pd.DataFrame) -> pd.DataFrame:
    """Configs run more than once (seeds): error_rate mean +- std and min."""
    done = runs[runs["status"] == COMPLETED]
    keys = [k for k in ("model", *AXES) if k in done and k != "seed"]
    if done.empty or not keys:
        return pd.DataFrame()
    g = done.groupby(keys, dropna=False)["error_rate"].agg(["count", "mean", "std", "min"]).reset_index()
    return g[g["count"] > 1].sort_values("mean").reset_index(drop=True)


def _asha(runs: pd.DataFrame) -> dict[str, Any]:
    if "epochs_total" not in runs or runs["epochs_total"].isna().all():
        return {}
    stopped = runs["status"] == STOPPED
    run_epochs = int(runs["epochs_run"].fillna(0).sum())
    full = int(runs["epochs_total"].fillna(0).sum())
    return {"trials": len(runs), "stopped_early": int(stopped.sum()), "epochs_run": run_epochs,
            "epochs_if_all_ran": full, "share": run_epochs / full if full else math.nan}


def _rank_agreement(rank: pd.DataFrame) -> pd.DataFrame:
    """For each pair of datasets: the models ranked on both, the Spearman correlation of their ranks and
    its 95% interval (``spearman_interval``); no estimate from fewer than 5 models."""
    datasets = sorted(rank["dataset"].unique())
    rows = []
    for i, a in enumerate(datasets):
        for b in datasets[i + 1:]:
            both = rank[rank["dataset"] == a].merge(rank[rank["dataset"] == b], on="model", suffixes=(f"_{a}", f"_{b}"))
            n = len(both)
            if n < 2:
                continue
            rho = both[f"rank_{a}"].corr(both[f"rank_{b}"], method="spearman") if n >= MIN_MODELS_FOR_AGREEMENT \
                else np.nan
            low, high = spearman_interval(rho, n) if math.isfinite(rho) else (np.nan, np.nan)
            rows.append({"dataset_a": a, "dataset_b": b, "models": n, "spearman": rho, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def side_by_side(rank: pd.DataFrame) -> pd.DataFrame:
    """Each model's rank on each dataset, one column per dataset."""
    return rank.pivot_table(index="model", columns="dataset", values="rank").sort_index()
