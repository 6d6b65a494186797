"""The report's PNG plots (matplotlib): for report.md and TensorBoard's image tab. report.html shows the
interactive versions (``charts``) of the same charts.

Each function writes one PNG and returns its path, or returns None when the chart would show nothing
(GPU memory of a CPU run: every value 0), so the report says that in a sentence instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import runfolder
from .estimates import COMPLETED_BASIS, LOG_AXES, SURVIVORS_BASIS, label

COST_LABELS = {"fit_time": "fit time (s)", "fit_time_unshared": "fit time unshared (s)",
               "gpu_mem": "peak GPU memory (GiB)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def has_values(series: pd.Series) -> bool:
    """Whether a cost axis has anything to draw: some value that is neither missing nor 0."""
    values = pd.to_numeric(series, errors="coerce")
    return bool((values.fillna(0) != 0).any())


def error_vs_cost(ranked: pd.DataFrame, cost: str, dataset: str, front: pd.Series, path: Path) -> Path | None:
    """The study's chart: one point per model, a colour per family, the Pareto front drawn and named."""
    if not has_values(ranked[cost]):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, (fam, part) in enumerate(ranked.groupby("family")):
        ax.scatter(part[cost], part["error_rate"], label=fam, color=plt.cm.tab20(i % 20), s=36)
    line = ranked[front].sort_values(cost)
    ax.plot(line[cost], line["error_rate"], "k--", lw=1, label="Pareto front")
    for _, r in line.iterrows():
        ax.annotate(r["model"], (r[cost], r["error_rate"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel=COST_LABELS[cost], ylabel="error rate", title=f"{dataset}: error rate against {COST_LABELS[cost]}")
    ax.legend(fontsize=7, ncol=2 if ranked["family"].nunique() < 20 else 3)
    return _save(fig, path)


def imagenet_plot(models: pd.DataFrame, dataset: str, path: Path) -> Path:
    """Fine-tune error against ImageNet top-1, one point per model, the models outside the others' prediction
    interval named (``report.transfer``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter(models["top1"], models["error_rate"], s=30, color="tab:blue")
    slope, intercept = np.polyfit(models["top1"], models["error_rate"], 1)
    xs = np.linspace(models["top1"].min(), models["top1"].max(), 20)
    ax.plot(xs, intercept + slope * xs, "k--", lw=1, label="straight line through them")
    for r in models.itertuples():
        if r.verdict:
            ax.annotate(f"{r.model} ({r.verdict})", (r.top1, r.error_rate), fontsize=7, xytext=(3, 3),
                        textcoords="offset points", color="tab:red")
    ax.set(xlabel="ImageNet top-1 (%), timm's table", ylabel="fine-tune error rate",
           title=f"{dataset}: fine-tuning against ImageNet accuracy ({len(models)} models)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def slice_plot(runs: pd.DataFrame, axis: str, metric: str, dataset: str, path: Path) -> Path:
    """Every run's metric against a sampled axis (lr on a log scale), a colour per family."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (fam, part) in enumerate(runs.groupby("family")):
        ax.scatter(part[axis], part[metric], label=fam, color=plt.cm.tab20(i % 20), s=18, alpha=0.8)
    if axis in LOG_AXES:
        ax.set_xscale("log")
    ax.set(xlabel=axis, ylabel=metric, title=f"{dataset}: {metric} against {axis}")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def effects_plot(fx: pd.DataFrame, path: Path) -> Path | None:
    """Each overall estimate with its 95% interval (rows without an estimate are left out)."""
    rows = fx[(fx["family"] == "all") & fx["estimate"].notna()]
    if rows.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.45 * len(rows)))
    labels = [f"{r.axis}: {r.contrast} ({r.basis}, {int(r.n_runs)} runs)" for r in rows.itertuples()]
    low = (rows["estimate"] - rows["ci_low"]).fillna(0).clip(lower=0)
    high = (rows["ci_high"] - rows["estimate"]).fillna(0).clip(lower=0)
    # orange: every trial at ASHA's first rung; grey: ASHA's survivors (biased); blue: the completed runs
    colours = [{COMPLETED_BASIS: "tab:blue", SURVIVORS_BASIS: "tab:gray"}.get(b, "tab:orange") for b in rows["basis"]]
    ax.barh(labels, rows["estimate"], xerr=[low, high], color=colours, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.invert_yaxis()
    ax.set(xlabel="change in error rate, 95% interval\n(negative: the first value is better)",
           title="what each searched axis did")
    return _save(fig, path)


def learning_curves(runs: pd.DataFrame, path: Path, n: int = 8) -> Path | None:
    """The error-rate curves of the best trials of run folders (CSV sources have no curves)."""
    if "path" not in runs:
        return None
    ranked = runs.dropna(subset=["path", "error_rate"]).sort_values("error_rate").head(n)
    curves = []
    for _, row in ranked.iterrows():
        history = runfolder.read_progress(Path(row["path"]))
        if not history.empty and "error_rate" in history:
            knobs = [f"{k}={label(row[k])}" for k in ("pool", "resize", "lr", "zero_init") if pd.notna(row.get(k))]
            curves.append((" ".join([str(row["model"]), *knobs]), history))
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, history in curves:
        ax.plot(history["epoch"], history["error_rate"], marker="o", ms=3, label=name)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="epoch", ylabel="error rate", title="learning curves of the best trials")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path
