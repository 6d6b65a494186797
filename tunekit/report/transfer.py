"""The study's first question: is timm's ImageNet chart reproduced for fine-tuning? For the ranked models that
have a row in timm's table (``tunekit.timm_table``; a study CSV's older names are read through timm's renames):
fine-tune error against ImageNet top-1, fit time against timm's throughput, the rank correlations with their
intervals, and the models that fine-tune clearly better or worse than their ImageNet accuracy predicts.

    found = imagenet_vs_finetune(ranking)      # dataset -> Transfer (None for fewer than MIN_MODELS models)

"Clearly": a model's error lies outside the prediction interval of a straight line of error on top-1 fitted to
the other models (leave one out), so one model is judged by the others; the interval's level is 1 - 0.05/n for n
models (Bonferroni), so that a list of n models names one by chance in at most 5% of searches, not 5% of its
models. Models trained from scratch are left out (ImageNet accuracy is their pretrained weights', not theirs),
as are names without a top-1 in the table, and a second name of one timm tag (its better-ranked name is kept):
``Transfer.left_out`` says which, and why.
Names without a tag are read as the installed timm's default tag (what a tunekit search of that name loaded; a
study of an older timm may have loaded another tag of the same architecture): the table shows which tag was read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special  # the t quantile scipy.stats's own uses (without its 0.7 s import)

from ..timm_table import load
from .estimates import spearman_interval

MIN_MODELS = 5  # fewer: no estimate (the rank correlation's interval would span almost everything)


@dataclass
class Transfer:
    dataset: str
    models: pd.DataFrame  # model, tag, top1, throughput (inference), error_rate, fit_time, residual, verdict
    accuracy: tuple[float, float, float]  # Spearman of top-1 against fine-tune accuracy (1 - error), its interval
    speed: tuple[float, float, float] | None  # Spearman of throughput against 1 / fit time, its interval
    n_speed: int
    ranked: int = 0  # the dataset's ranked models, those left out included
    left_out: list[str] | None = None  # "model (why)"


def imagenet_vs_finetune(ranking: pd.DataFrame, time_column: str = "fit_time",
                         scratch: frozenset[tuple[str, str]] = frozenset()) -> dict[str, Transfer | None]:
    """``scratch``: the (dataset, model) pairs trained from scratch only (left out)."""
    table = load()
    out: dict[str, Transfer | None] = {}
    for dataset, part in ranking.groupby("dataset", sort=True):
        rows, left, tags = [], [], set()
        for r in part.sort_values("error_rate").itertuples():
            row = table.find(str(r.model))
            if (str(dataset), str(r.model)) in scratch:
                left.append(f"{r.model} (trained from scratch)")
            elif row is None or row.top1 is None:
                left.append(f"{r.model} (no ImageNet top-1 in timm's table)")
            elif row.model in tags:
                left.append(f"{r.model} (timm's {row.model}, as a better-ranked name)")
            else:
                tags.add(row.model)
                rows.append({"model": r.model, "tag": row.model, "top1": row.top1,
                             "throughput": row.infer_samples_per_s,  # one benchmark for all (timm's inference)
                             "error_rate": float(r.error_rate), "fit_time": float(getattr(r, time_column))})
        df = pd.DataFrame(rows)
        if len(df) < MIN_MODELS:
            out[str(dataset)] = None
            continue
        if df["top1"].nunique() < 2 or df["error_rate"].nunique() < 2:
            out[str(dataset)] = None  # nothing to rank
            continue
        rho = spearman(df["top1"], -df["error_rate"])
        accuracy = (rho, *spearman_interval(rho, len(df)))
        timed = df.dropna(subset=["throughput", "fit_time"])
        speed = None
        if len(timed) >= MIN_MODELS and timed["throughput"].nunique() > 1 and timed["fit_time"].nunique() > 1:
            s = spearman(timed["throughput"], -timed["fit_time"])
            speed = (s, *spearman_interval(s, len(timed)))
        df["residual"], df["verdict"] = _outliers(df["top1"].to_numpy(float), df["error_rate"].to_numpy(float),
                                                  level=1 - 0.05 / len(df))
        out[str(dataset)] = Transfer(str(dataset), df.sort_values("top1", ascending=False).reset_index(drop=True),
                                     accuracy, speed, len(timed), len(part), left)
    return out


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rho as scipy.stats.spearmanr computes it: the Pearson correlation of the two columns' average
    ranks (without scipy.stats's 0.7 s import in every search's report); NaN where either has one, as scipy's."""
    if a.isna().any() or b.isna().any():
        return math.nan
    return float(a.rank().corr(b.rank()))


def _outliers(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[list[float], list[str]]:
    """Each point's distance from the line fitted to the others, and whether it is outside their prediction
    interval: 'fine-tunes better' (below: less error than its top-1 predicts), 'worse', or ''."""
    residuals, verdicts = [], []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        xs, ys = x[keep], y[keep]
        n = len(xs)
        slope, intercept = np.polyfit(xs, ys, 1)
        fitted = intercept + slope * xs
        s = math.sqrt(float(np.sum((ys - fitted) ** 2)) / (n - 2)) if n > 2 else math.nan
        sxx = float(np.sum((xs - xs.mean()) ** 2))
        predicted = intercept + slope * x[i]
        half = float(special.stdtrit(n - 2, 0.5 + level / 2)) * s \
            * math.sqrt(1 + 1 / n + (x[i] - xs.mean()) ** 2 / sxx) if n > 2 and sxx > 0 else math.inf
        gap = float(y[i] - predicted)
        residuals.append(gap)
        verdicts.append("" if not math.isfinite(half) or abs(gap) <= half else
                        "fine-tunes better" if gap < 0 else "fine-tunes worse")
    return residuals, verdicts
