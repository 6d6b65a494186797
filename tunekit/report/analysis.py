"""The report's analysis: the study's ranking, Pareto fronts, axis effects, importance, agreement.

    report = build(runs)           # runs: one row per trial, as report.load gives them
    report.ranking                 # per (dataset, family, model): min error/time/memory, score, rank

The ranking is the study's: each model's family from its name (``^([a-z]+?(?:v2)?)(?:\\d|_|$)``,
swinv2 counted as swin); per (dataset, family, model) the minimum error_rate, fit_time and gpu_mem
over its runs; ``score = error_rate * (fit_time + 80)``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..runfolder import Status

SCORE_CONSTANT = 80.0
AXES = ("pool", "head", "resize", "lr", "zero_init", "img_size", "batch_size", "precision")
COMPLETED, STOPPED, DIVERGED = Status.COMPLETED.value, Status.STOPPED.value, Status.DIVERGED.value


def family(model: str) -> str:
    """The study's family of a model name: lowercase prefix up to a digit or '_', keeping 'v2'."""
    m = re.match(r"^([a-z]+?(?:v2)?)(?:\d|_|$)", str(model).split(".")[0])
    name = m.group(1) if m else str(model)
    return "swin" if name == "swinv2" else name


def ranking(runs: pd.DataFrame, constant: float = SCORE_CONSTANT) -> pd.DataFrame:
    """Per (dataset, family, model): min error_rate, fit_time, gpu_mem over its runs; score; rank."""
    ok = runs[runs["status"].isin([COMPLETED, DIVERGED]) | runs["status"].isna()].copy()
    if ok.empty:
        columns = ["dataset", "family", "model", "error_rate", "fit_time", "gpu_mem", "score", "rank"]
        return pd.DataFrame(columns=columns)
    ok["family"] = ok["model"].map(family)
    # the study's pivot_table(aggfunc=min), over the (dataset, family, model) groups that occur
    pt = ok.groupby(["dataset", "family", "model"])[["error_rate", "fit_time", "gpu_mem"]].min().reset_index()
    pt["score"] = pt["error_rate"] * (pt["fit_time"] + constant)
    pt = pt.sort_values(["dataset", "score"]).reset_index(drop=True)
    pt["rank"] = pt.groupby("dataset")["score"].rank(method="min").astype(int)
    return pt[["dataset", "family", "model", "error_rate", "fit_time", "gpu_mem", "score", "rank"]]


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


def comparable(runs: pd.DataFrame, metric: str = "error_rate") -> tuple[pd.DataFrame, str]:
    """The runs whose ``metric`` can be compared, and on what basis. When ASHA stopped trials early,
    every trial at the first rung (the same epochs for all; few trials complete), else the
    completed runs."""
    stopped = (runs["status"] == STOPPED).any() if "status" in runs else False
    if stopped and metric == "error_rate" and runs.get("first_rung_error_rate", pd.Series(dtype=float)).notna().any():
        reached = runs[runs["first_rung_error_rate"].notna()].copy()
        epoch = int(reached["first_rung_epoch"].max())
        return reached.assign(error_rate=reached["first_rung_error_rate"]), f"all trials at epoch {epoch}"
    return runs[runs["status"] == COMPLETED].copy(), "the completed runs"


def effects(runs: pd.DataFrame, metric: str = "error_rate") -> pd.DataFrame:
    """For each searched axis: paired differences of ``metric`` between configs equal in all else,
    over the completed runs and, when ASHA stopped trials early, over every trial at the first
    rung (the ``basis`` column)."""
    parts = [_axis_effects(runs[runs["status"] == COMPLETED].copy(), metric).assign(basis="the completed runs")]
    early, basis = comparable(runs, metric)
    if basis != "the completed runs":
        parts.append(_axis_effects(early, metric).assign(basis=basis))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _axis_effects(done: pd.DataFrame, metric: str) -> pd.DataFrame:
    """For axis A with values a and b, every pair of runs that agree on every other config key (and
    dataset) gives metric(b) - metric(a); reported per family and overall as mean difference, its
    spread, the count, and how often b won. Where no such pair exists (a random search), the
    difference of the two values' mean metric, marked "unpaired"."""
    if done.empty:
        return pd.DataFrame()
    done["family"] = done["model"].map(family)
    keys = ["dataset", "model"] + [k for k in (*AXES, "seed", "epochs", "freeze_epochs", "pretrained") if k in done]
    rows = []
    for axis in AXES:
        # a sampled continuous axis (lr from loguniform) has no equal-in-all-else pairs worth
        # reading; the importance table covers it
        if axis not in done or not 2 <= done[axis].nunique() <= 6:
            continue
        others = [k for k in keys if k != axis]
        values = sorted(done[axis].dropna().unique(), key=str)
        base = values[0]
        grouped = done.groupby(others + [axis], dropna=False)[metric].mean().reset_index()
        wide = grouped.pivot_table(index=others, columns=axis, values=metric, dropna=False)
        for other in values[1:]:
            diff = (wide[other] - wide[base]).dropna() if base in wide and other in wide else pd.Series(dtype=float)
            if not diff.empty:
                fam = pd.Series([family(m) for m in diff.index.get_level_values("model")], index=diff.index)
                per_family = [(f, diff[fam == f]) for f in sorted(set(fam))] if fam.nunique() > 1 else []
                for name, part in [("all", diff), *per_family]:
                    rows.append({"axis": axis, "from": label(base), "to": label(other), "family": name,
                                 "method": "paired", "mean_diff": part.mean(),
                                 "std": part.std(ddof=1) if len(part) > 1 else np.nan,
                                 "pairs": len(part), "to_wins": int((part < 0).sum())})
                continue
            # No two runs equal in all else (a random search): compare the means of each value.
            per_family = list(done.groupby("family")) if done["family"].nunique() > 1 else []
            for name, part in [("all", done), *per_family]:
                a, b = part.loc[part[axis] == base, metric], part.loc[part[axis] == other, metric]
                if len(a) and len(b):
                    rows.append({"axis": axis, "from": label(base), "to": label(other), "family": name,
                                 "method": f"unpaired means ({len(a)} vs {len(b)} runs)",
                                 "mean_diff": b.mean() - a.mean(), "std": np.nan, "pairs": 0, "to_wins": np.nan})
    return pd.DataFrame(rows)


def label(value: Any) -> str:
    """A config value as a short label (floats to 4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def importance(runs: pd.DataFrame, metric: str = "error_rate") -> pd.Series:
    """Optuna's fANOVA importance of each searched config key for ``metric`` over the comparable runs
    (see :func:`comparable`; the Series' name says which); empty if too few runs."""
    import optuna

    done, basis = comparable(runs, metric)
    done = done.dropna(subset=[metric])
    params = [k for k in ("model", *AXES, "seed") if k in done and done[k].nunique() > 1]
    if len(done) < 4 or not params:
        return pd.Series(dtype=float)
    distributions = {}
    for key in params:
        if key == "lr":
            distributions[key] = optuna.distributions.FloatDistribution(done[key].min(), done[key].max(), log=True)
        else:
            distributions[key] = optuna.distributions.CategoricalDistribution(
                sorted({_plain(v) for v in done[key]}, key=str))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for _, row in done.iterrows():
        values = {k: (float(row[k]) if k == "lr" else _plain(row[k])) for k in params}
        study.add_trial(optuna.trial.create_trial(params=values, distributions=distributions, value=float(row[metric])))
    scores = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return pd.Series(scores, name=f"importance ({basis})")


def _plain(value: Any) -> Any:
    """A categorical value optuna accepts (None, bool, int, float, str)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


@dataclass
class Report:
    runs: pd.DataFrame
    ranking: pd.DataFrame
    constant: float = SCORE_CONSTANT
    sections: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    effects: pd.DataFrame = field(default_factory=pd.DataFrame)
    importance: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    asha: dict[str, Any] = field(default_factory=dict)
    rank_agreement: pd.DataFrame = field(default_factory=pd.DataFrame)


def build(runs: pd.DataFrame, constant: float = SCORE_CONSTANT) -> Report:
    rank = ranking(runs, constant)
    report = Report(runs, rank, constant)
    for dataset, pt in rank.groupby("dataset", sort=True):
        pt = pt.sort_values("score").reset_index(drop=True)
        pt["pareto_time"] = pareto(pt, "fit_time")
        pt["pareto_mem"] = pareto(pt, "gpu_mem")
        lean = pt[(pt["fit_time"] <= pt["fit_time"].median()) & (pt["gpu_mem"] <= pt["gpu_mem"].median())]
        quarter = (pt["fit_time"] <= pt["fit_time"].quantile(0.25)) & (pt["gpu_mem"] <= pt["gpu_mem"].quantile(0.25))
        leanest = pt[quarter]
        sub = runs[runs["dataset"] == dataset]
        report.sections[str(dataset)] = {
            "top": pt.head(15),
            "lean": lean.sort_values("error_rate").head(15),
            "leanest": leanest.sort_values("error_rate").head(15),
            "repeats": _repeats(sub),
        }
    report.effects = effects(runs)
    report.importance = importance(runs)
    report.asha = _asha(runs)
    report.rank_agreement = _rank_agreement(rank)
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
    """For each pair of datasets: models ranked on both, and the Spearman correlation of their ranks."""
    datasets = sorted(rank["dataset"].unique())
    rows = []
    for i, a in enumerate(datasets):
        for b in datasets[i + 1:]:
            both = rank[rank["dataset"] == a].merge(rank[rank["dataset"] == b], on="model", suffixes=(f"_{a}", f"_{b}"))
            if len(both) >= 2:
                rho = both[f"rank_{a}"].corr(both[f"rank_{b}"], method="spearman")
                rows.append({"dataset_a": a, "dataset_b": b, "models": len(both), "spearman": rho})
    return pd.DataFrame(rows)


def side_by_side(rank: pd.DataFrame) -> pd.DataFrame:
    """Each model's rank on each dataset, one column per dataset."""
    return rank.pivot_table(index="model", columns="dataset", values="rank").sort_index()
