"""What each searched setting did, estimated only where the runs support it.

    fx = effects(runs)          # one row per estimate: axis, contrast, family, method, estimate, CI, n_runs, basis
    imp = importance(runs)      # each setting's share of the variance in error rate, with an F-test

Three kinds of estimate, each with a 95% interval and the number of runs it rests on:

* **Paired differences**, where runs pair up (a grid search): two runs equal in every other setting
  (dataset, model, the other axes, seed) differ only in this one; the mean of the differences and
  its t-interval. Needs at least 3 pairs.
* **An additive model** otherwise (a random search): ``metric ~ dataset + model + every searched
  axis`` by least squares, the backbone a factor, so a level's coefficient is its difference from
  the base level with the other settings held fixed. Needs at least 3 runs at each of the two
  levels, and the contrast must be identifiable (not confounded with another setting).
* **A trend** for an axis sampled from a range (lr from a log-uniform: more distinct values than a
  grid would have): the change in the metric per decade (per unit for other numbers) in the same
  additive model. The report draws the runs against it (the slice plots) rather than pretending that
  two sampled values make a comparison.

Where none applies, the row says why and gives no number. Importance is type-II analysis of variance
in the same additive model: the variance a setting explains beyond all the others (the rise in the
residual sum of squares when it is dropped), as a share of the total, with its F-test. Its cost is
one least-squares fit per setting, linear in runs and in levels, so 85 backbones or 5,000 runs take
milliseconds (Optuna's fANOVA, the report's former evaluator, grows with levels x trees and did not
finish in 300 s on the study's 66 models). It measures main effects only: an interaction (concat
helps CNNs, not ViTs) shows up in the per-family paired rows, not here.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import special  # the t, F and normal quantiles scipy.stats's own use (without its 0.7 s import)

from ..runfolder import Status
from .study import family

AXES = ("pool", "head", "resize", "lr", "zero_init", "img_size", "batch_size", "precision")
MIN_RUNS = 3  # per level (and pairs) for any estimate
GRID_MAX_VALUES = 6  # a numeric axis with more distinct values was sampled from a range
LOG_AXES = ("lr",)  # trends per decade
COLUMNS = ["axis", "contrast", "family", "method", "estimate", "ci_low", "ci_high", "n_runs", "basis"]
COMPLETED, STOPPED = Status.COMPLETED.value, Status.STOPPED.value


COMPLETED_BASIS = "the completed runs"
SURVIVORS_BASIS = "the completed runs: ASHA's survivors, biased"


def comparable(runs: pd.DataFrame, metric: str = "error_rate") -> tuple[pd.DataFrame, str]:
    """The runs whose ``metric`` can be compared, and on what basis. When ASHA stopped trials early,
    every trial at the first rung (the same epochs for all: the completed runs are the trials ASHA chose
    for doing well there, and an effect measured on them is biased), else the completed runs."""
    stopped = (runs["status"] == STOPPED).any() if "status" in runs else False
    if stopped and metric == "error_rate" and runs.get("first_rung_error_rate", pd.Series(dtype=float)).notna().any():
        reached = runs[runs["first_rung_error_rate"].notna()].copy()
        epoch = int(reached["first_rung_epoch"].max())
        return reached.assign(error_rate=reached["first_rung_error_rate"]), f"all trials at epoch {epoch}"
    return completed(runs), COMPLETED_BASIS


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == COMPLETED].copy() if "status" in runs else runs.copy()


def axis_kinds(runs: pd.DataFrame, within: pd.DataFrame | None = None) -> dict[str, str]:
    """Each searched axis: ``categorical`` (a grid or a choice) or ``continuous`` (sampled from a range),
    judged on all of ``runs`` (two sampled values among a few completed runs are still a range);
    only the axes with two or more values in ``within`` (default: ``runs``)."""
    within = runs if within is None else within
    out = {}
    for axis in AXES:
        if axis not in runs or axis not in within or within[axis].nunique() < 2:
            continue
        numeric = pd.api.types.is_numeric_dtype(runs[axis]) and not pd.api.types.is_bool_dtype(runs[axis])
        out[axis] = "continuous" if numeric and runs[axis].nunique() > GRID_MAX_VALUES else "categorical"
    return out


def effects(runs: pd.DataFrame, metric: str = "error_rate") -> pd.DataFrame:
    """Every estimate (the ``basis`` column says over which runs). When ASHA stopped trials early, first
    over all trials at its first rung, then over the completed runs as ASHA's survivors: they were kept
    for doing well at the rung, so a setting's effect on them is shrunk towards zero and, in a large search,
    its interval misses the truth more often than it says (``benchmarks/asha_sim.py --effects``; figures in
    benchmarks/RESULTS.md)."""
    early, basis = comparable(runs, metric)
    parts = [_effects(early, metric, basis, runs)]
    if basis != COMPLETED_BASIS:
        parts.append(_effects(completed(runs), metric, SURVIVORS_BASIS, runs))
    out = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(not p.empty for p in parts) else None
    return out if out is not None else pd.DataFrame(columns=COLUMNS)


def _effects(runs: pd.DataFrame, metric: str, basis: str, everything: pd.DataFrame) -> pd.DataFrame:
    runs = runs.dropna(subset=[metric])
    if len(runs) < 2:
        return pd.DataFrame(columns=COLUMNS)
    runs = runs.assign(family=runs["model"].map(family))
    kinds = axis_kinds(everything, within=runs)
    model = Additive(runs, metric, kinds)
    rows: list[dict[str, Any]] = []
    for axis, kind in kinds.items():
        if kind == "continuous":
            rows.append(model.trend(axis))
            continue
        levels = sorted(runs[axis].dropna().unique(), key=str)
        for level in levels[1:]:
            rows += _contrast(runs, metric, axis, levels[0], level, model, kinds)
    return pd.DataFrame([{**r, "basis": basis} for r in rows], columns=COLUMNS)


def _contrast(runs: pd.DataFrame, metric: str, axis: str, base: Any, level: Any, model: Additive,
              kinds: dict[str, str]) -> list[dict[str, Any]]:
    """One contrast (``level`` against ``base``): paired if the runs pair up, else the additive model."""
    contrast = f"{label(level)} vs {label(base)}"
    diffs = paired_differences(runs, metric, axis, base, level, [k for k in kinds if k != axis])
    if len(diffs) >= MIN_RUNS:
        rows = [_paired_row(axis, contrast, "all", diffs)]
        families = diffs.index.get_level_values("family")
        if families.nunique() > 1:
            for fam in sorted(set(families)):
                part = diffs[families == fam]
                rows.append(_paired_row(axis, contrast, fam, part) if len(part) >= MIN_RUNS else
                            _none(axis, contrast, fam, f"{len(part)} pair(s): need {MIN_RUNS}", 2 * len(part)))
        return rows
    return [model.contrast(axis, base, level, contrast)]


def paired_differences(runs: pd.DataFrame, metric: str, axis: str, base: Any, level: Any,
                       other_axes: list[str]) -> pd.Series:
    """metric(level) - metric(base) over pairs of runs equal in every other setting, indexed by those
    settings (dataset, model, family, the other axes, seed, epochs...)."""
    keys = ["dataset", "model", "family"] + [k for k in (*other_axes, "seed", "epochs", "freeze_epochs", "pretrained")
                                             if k in runs and k != axis]
    keys = list(dict.fromkeys(keys))
    sub = runs[runs[axis].isin([base, level])]
    if sub.empty:
        return pd.Series(dtype=float)
    wide = sub.groupby(keys + [axis], dropna=False)[metric].mean().unstack(axis)
    if base not in wide or level not in wide:
        return pd.Series(dtype=float)
    return (wide[level] - wide[base]).dropna()


def _paired_row(axis: str, contrast: str, family: str, diffs: pd.Series) -> dict[str, Any]:
    low, high = _t_interval(float(diffs.mean()), float(diffs.std(ddof=1)) / math.sqrt(len(diffs)), len(diffs) - 1)
    return {"axis": axis, "contrast": contrast, "family": family, "method": f"paired ({len(diffs)} pairs)",
            "estimate": float(diffs.mean()), "ci_low": low, "ci_high": high, "n_runs": 2 * len(diffs)}


def _none(axis: str, contrast: str, family: str, why: str, n_runs: int) -> dict[str, Any]:
    return {"axis": axis, "contrast": contrast, "family": family, "method": f"not estimated: {why}",
            "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n_runs": n_runs}


def _t_interval(estimate: float, se: float, df: int) -> tuple[float, float]:
    if df < 1 or not math.isfinite(se):
        return np.nan, np.nan
    half = float(special.stdtrit(df, 0.975)) * se
    return estimate - half, estimate + half


class Additive:
    """Least squares of ``metric ~ dataset + model + axes`` (categorical: one column per level but the
    first; continuous: log10 for lr, else as is)."""

    def __init__(self, runs: pd.DataFrame, metric: str, kinds: dict[str, str]) -> None:
        self.runs, self.metric, self.kinds = runs, metric, kinds
        self.factors = [f for f in ("dataset", "model") if f in runs and runs[f].nunique() > 1] + list(kinds)
        self.blocks = {f: self._block(f) for f in self.factors}
        self.y = runs[metric].to_numpy(dtype=float)

    def _block(self, factor: str) -> pd.DataFrame:
        values = self.runs[factor]
        if self.kinds.get(factor) == "continuous":
            x = values.astype(float)
            return pd.DataFrame({factor: np.log10(x) if factor in LOG_AXES else x}, index=self.runs.index)
        levels = sorted(values.dropna().unique(), key=str)
        return pd.DataFrame({f"{factor}={label(v)}": (values == v).astype(float) for v in levels[1:]},
                            index=self.runs.index)

    def design(self, drop: str | None = None) -> pd.DataFrame:
        parts = [pd.DataFrame({"intercept": 1.0}, index=self.runs.index)]
        parts += [b for f, b in self.blocks.items() if f != drop]
        return pd.concat(parts, axis=1)

    @functools.cached_property
    def full(self) -> tuple[pd.Series, np.ndarray, float, int, int]:
        """The fit with every factor (every contrast and trend reads its coefficient from this one)."""
        return self.fit()

    @functools.cached_property
    def full_rank(self) -> int:
        return int(np.linalg.matrix_rank(self.design().to_numpy()))

    def fit(self, drop: str | None = None) -> tuple[pd.Series, np.ndarray, float, int, int]:
        """(coefficients, their covariance, residual sum of squares, residual df, rank)."""
        x = self.design(drop)
        values = x.to_numpy()
        beta, _, rank, _ = np.linalg.lstsq(values, self.y, rcond=None)
        rss = float(np.sum((self.y - values @ beta) ** 2))
        df = len(self.y) - int(rank)
        cov = (rss / df if df > 0 else np.nan) * np.linalg.pinv(values.T @ values)
        return pd.Series(beta, index=x.columns), cov, rss, df, int(rank)

    def identifiable(self, column: str) -> bool:
        """Whether ``column``'s coefficient is estimable: not a combination of the other columns."""
        return self.full_rank > np.linalg.matrix_rank(self.design().drop(columns=column).to_numpy())

    def contrast(self, axis: str, base: Any, level: Any, contrast: str) -> dict[str, Any]:
        n_base, n_level = int((self.runs[axis] == base).sum()), int((self.runs[axis] == level).sum())
        n = n_base + n_level
        if min(n_base, n_level) < MIN_RUNS:
            return _none(axis, contrast, "all", f"{n_level} vs {n_base} runs: need {MIN_RUNS} per level", n)
        column = f"{axis}={label(level)}"
        if not self.identifiable(column):
            return _none(axis, contrast, "all", "confounded with another setting in these runs", n)
        beta, cov, _, df, _ = self.full
        i = list(beta.index).index(column)
        if df < 1:
            return _none(axis, contrast, "all", "as many settings as runs: no residual to judge it by", n)
        low, high = _t_interval(float(beta[column]), math.sqrt(max(cov[i, i], 0.0)), df)
        return {"axis": axis, "contrast": contrast, "family": "all", "method": "additive model (backbone and other "
                "settings held fixed)", "estimate": float(beta[column]), "ci_low": low, "ci_high": high, "n_runs": n}

    def trend(self, axis: str) -> dict[str, Any]:
        unit = "per decade" if axis in LOG_AXES else "per unit"
        values = self.runs[axis].dropna()
        span = f"{label(values.min())} to {label(values.max())}"
        if len(values) < 2 * MIN_RUNS or not self.identifiable(axis):
            return _none(axis, f"trend {unit} ({span})", "all", f"{len(values)} runs: too few, or confounded",
                         len(values))
        beta, cov, _, df, _ = self.full
        i = list(beta.index).index(axis)
        low, high = _t_interval(float(beta[axis]), math.sqrt(max(cov[i, i], 0.0)), df)
        return {"axis": axis, "contrast": f"trend {unit} ({span})", "family": "all",
                "method": "trend in the additive model", "estimate": float(beta[axis]), "ci_low": low,
                "ci_high": high, "n_runs": len(values)}


def importance(runs: pd.DataFrame, metric: str = "error_rate") -> pd.DataFrame:
    """Type-II ANOVA over the comparable runs: per setting (the backbone, each searched axis, the seed)
    the share of the metric's variance it explains beyond the others, its F statistic and p-value."""
    data, basis = comparable(runs, metric)
    data = data.dropna(subset=[metric])
    columns = ["setting", "share", "F", "p_value", "levels", "n_runs", "basis"]
    kinds = axis_kinds(runs, within=data)
    if "seed" in data and data["seed"].nunique() > 1:
        kinds["seed"] = "categorical"
    model = Additive(data, metric, kinds) if len(data) >= 4 else None
    if model is None or not model.factors:
        return pd.DataFrame(columns=columns)
    _, _, rss, df, rank = model.full
    total = float(np.sum((model.y - model.y.mean()) ** 2))
    if df < 1 or total <= 0:
        return pd.DataFrame(columns=columns)
    rows = []
    for factor in model.factors:
        _, _, rss_without, _, rank_without = model.fit(drop=factor)
        ss, dof = max(rss_without - rss, 0.0), rank - rank_without
        f_stat = (ss / dof) / (rss / df) if dof > 0 and rss > 0 else np.nan
        p_value = float(special.fdtrc(dof, df, f_stat)) if dof > 0 and rss > 0 else np.nan
        rows.append({"setting": factor, "share": ss / total, "F": f_stat, "p_value": p_value,
                     "levels": int(data[factor].nunique()), "n_runs": len(data), "basis": basis})
    return pd.DataFrame(rows, columns=columns).sort_values("share", ascending=False).reset_index(drop=True)


def label(value: Any) -> str:
    """A config value as a short label (floats to 4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def spearman_interval(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The interval of a Spearman correlation of ``n`` pairs: Fisher's z with Bonett and Wright's (2000)
    standard error, sqrt((1 + rho^2 / 2) / (n - 3)). A perfect agreement (|rho| = 1, which n = 5 models
    give one time in 120 by chance alone) is taken at the nearest value a ranking of n can reach (one
    adjacent swap, 1 - 12 / (n (n^2 - 1))), so the interval never has zero width. Coverage, simulated on
    bivariate normals (rho 0.5 to 0.95, n 5 to 40): 0.94 to 0.99 (benchmarks/RESULTS.md; tests/test_report.py)."""
    if n <= 3:
        return np.nan, np.nan
    if abs(rho) >= 1 - 1e-9:
        rho = math.copysign(1 - 12 / (n * (n * n - 1)), rho)
    z, se = math.atanh(rho), math.sqrt((1 + rho * rho / 2) / (n - 3))
    half = float(special.ndtri(0.5 + level / 2)) * se
    return math.tanh(z - half), math.tanh(z + half)
