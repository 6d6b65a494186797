"""The scoring report: finished (or interrupted) searches -> ranked backbones, effects, plots.

    tables = build(load_sources(["~/ray_results/pets", "study.csv"]))
    write(tables, Path("report/"))        # report.md, report.html, results.csv, ranking.csv, *.png

Sources are run folders (one row per trial, read from the trial folders without Ray) or CSV
files: tunekit's own results.csv, or the study's export (``dataset, model_name, error_rate,
fit_time, GPU_mem`` and optional ``lr``/``learning_rate``, ``concat_pool``, ``resize_method``,
``num_experiments``). The ranking is the study's: each model's family from its name
(``^([a-z]+?(?:v2)?)(?:\\d|_|$)``, swinv2 counted as swin); per (dataset, family, model) the
minimum error_rate, fit_time and gpu_mem over its runs; ``score = error_rate * (fit_time + 80)``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import SEARCH_KEYS, TrialConfig, reported_epochs
from .data.spec import DataSpec
from .errors import TunekitError

SCORE_CONSTANT = 80.0
AXES = ("pool", "head", "resize", "lr", "zero_init", "img_size", "batch_size", "precision")
STUDY_COLUMNS = {"model_name": "model", "GPU_mem": "gpu_mem", "learning_rate": "lr", "resize_method": "resize"}


# ---- loading ------------------------------------------------------------------------------------

def load_sources(sources: list[str | Path]) -> pd.DataFrame:
    """One row per run (trial) from every source, merged; raises TunekitError if none has any."""
    frames, problems = [], []
    for source in sources:
        path = Path(source).expanduser()
        try:
            frames.append(load_csv(path) if path.suffix.lower() == ".csv" else load_run(path))
        except TunekitError as e:
            problems.append(str(e))
    if not frames or all(f.empty for f in frames):
        raise TunekitError("nothing to report: " + "; ".join(problems or ["no runs found"]))
    for problem in problems:  # the other sources still make a report
        warnings.warn(problem, stacklevel=2)
    return pd.concat(frames, ignore_index=True)


def load_run(run: Path) -> pd.DataFrame:
    """One row per trial folder of a run: config, final and best-epoch metrics, epochs, status."""
    if not run.is_dir():
        raise TunekitError(f"{run} is not a run folder (or a .csv file)")
    spec = _read_json(run / "tunekit_spec.json") or {}
    dataset = _dataset_name(spec.get("data"), run.name)
    metric, mode = spec.get("metric", "error_rate"), spec.get("mode", "min")
    rung = (spec.get("asha") or {}).get("grace_period")  # ASHA's first comparison: every trial gets there
    ray_trials = _ray_trials(run)
    rows = []
    for trial in sorted(p for p in run.iterdir() if p.is_dir() and (p / "params.json").is_file()):
        rows.append(_trial_row(trial, dataset, metric, mode, ray_trials.get(trial.name, {}), rung))
    if not rows:
        raise TunekitError(f"{run} holds no trial folders (params.json): is it a tunekit search's run folder?")
    df = pd.DataFrame(rows)
    df.insert(0, "run", run.name)
    return df


def trial_states(run: Path) -> dict[str, str]:
    """Ray's own status of each trial folder (TERMINATED, ERROR, RUNNING, ...)."""
    return {name: str(trial.get("status", "")) for name, trial in _ray_trials(run).items()}


def _ray_trials(run: Path) -> dict[str, dict[str, Any]]:
    """Each trial folder's entry in Ray's newest experiment state file (status, config; plain JSON,
    nothing is unpickled)."""
    files = sorted(run.glob("experiment_state-*.json"))
    state = _read_json(files[-1]) if files else None
    out = {}
    for entry in (state or {}).get("trial_data", []):
        try:
            trial = json.loads(entry[0] if isinstance(entry, list) else entry)
        except (TypeError, ValueError):
            continue
        if trial.get("relative_logdir"):
            out[trial["relative_logdir"]] = trial
    return out


def _trial_config(trial: Path, ray_trial: dict[str, Any]) -> dict[str, Any]:
    """The trial's config from the first readable of its three copies: Ray truncates params.json
    and then writes it, so a driver killed in between leaves it empty (seen in the kill test)."""
    for config in (_read_json(trial / "params.json"), ray_trial.get("config"),
                   _last_json_line(trial / "result.json").get("config")):
        if isinstance(config, dict) and config:
            return config
    return {}


def _trial_row(trial: Path, dataset: str, metric: str, mode: str, ray_trial: dict[str, Any],
               rung: int | None = None) -> dict[str, Any]:
    config = _trial_config(trial, ray_trial)
    ray_status = ray_trial.get("status")
    row: dict[str, Any] = {"dataset": dataset, "trial": trial.name}
    row.update({k: config[k] for k in SEARCH_KEYS if k in config})
    history = _read_progress(trial / "progress.csv")
    total = reported_epochs(config.get("epochs", TrialConfig.epochs),
                            config.get("freeze_epochs", TrialConfig.freeze_epochs),
                            config.get("pretrained", TrialConfig.pretrained))
    if not history.empty:
        last = history.iloc[-1]
        for key in ("error_rate", "valid_loss", "train_loss", "accuracy", "f2", "fit_time", "images_per_s",
                    "gpu_mem"):
            if key in history:
                row[key] = last.get(key)
        best = history.loc[history[metric].idxmin() if mode == "min" else history[metric].idxmax()]
        row["best_epoch"] = int(best["epoch"])
        row[f"best_{metric}"] = best[metric]
        row["epochs_run"] = int(last["epoch"])
        at_rung = history[history["epoch"] == rung] if rung and "error_rate" in history else history.iloc[:0]
        if len(at_rung):
            row["first_rung_epoch"], row["first_rung_error_rate"] = int(rung), at_rung["error_rate"].iloc[0]
    else:
        row["epochs_run"] = 0
    row["epochs_total"] = total
    # Ray's trial status says how it ended (an error.txt stays behind even when a retry then
    # succeeded); without the experiment state, the last result's done flag is the best guess.
    if ray_status:
        done = ray_status == "TERMINATED"
    else:
        done = bool(_last_json_line(trial / "result.json").get("done"))
    flags = history["diverged"] if "diverged" in history else pd.Series(dtype=str)
    diverged = bool(flags.astype(str).str.lower().eq("true").any())
    error = trial / "error.txt"
    if error.is_file() and not done:
        lines = [line for line in error.read_text(errors="replace").splitlines() if line.strip()]
        row["status"], row["error"] = "errored", (lines[-1] if lines else "unknown error")[:300]
    elif diverged:
        row["status"] = "diverged"
        row["error_rate"] = 1.0
    elif row["epochs_run"] == 0:
        row["status"] = "not started"
    elif not done:
        row["status"] = f"unfinished (epoch {row['epochs_run']})"
    elif row["epochs_run"] < total:
        row["status"] = f"stopped early (epoch {row['epochs_run']})"
    else:
        row["status"] = "completed"
    row["retried"] = error.is_file() and done
    info = _read_json(trial / "tunekit_run.json") or {}
    row["device"] = info.get("device")
    row["path"] = str(trial)
    return row


def load_csv(path: Path) -> pd.DataFrame:
    """The study's export format, or tunekit's own results.csv."""
    if not path.is_file():
        raise TunekitError(f"{path} does not exist")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise TunekitError(f"{path} is not a readable CSV: {e}") from None
    df = df.rename(columns={k: v for k, v in STUDY_COLUMNS.items() if k in df and v not in df})
    if "concat_pool" in df and "pool" not in df:
        df["pool"] = df.pop("concat_pool").map(lambda v: "concat" if str(v).lower() in ("true", "1") else "avg")
    if "num_experiments" in df and "seed" not in df:
        df["seed"] = df.pop("num_experiments")
    missing = [c for c in ("model", "error_rate", "fit_time") if c not in df]
    if missing:
        raise TunekitError(f"{path} has no column(s) {missing} (needs dataset, model_name, error_rate, fit_time, "
                           f"GPU_mem, as the study's export; its columns: {list(df.columns)})")
    if "dataset" not in df:
        df["dataset"] = path.stem
    if "gpu_mem" not in df:
        df["gpu_mem"] = np.nan
    df["status"] = df["status"] if "status" in df else "completed"
    df["run"] = df["run"] if "run" in df else path.stem
    return df


def _dataset_name(data: str | None, fallback: str) -> str:
    if not data:
        return fallback
    try:
        spec = DataSpec.parse(data)
    except TunekitError:
        return str(data)
    return spec.path.name if spec.path is not None and spec.kind in ("folder", "csv", "regex") else spec.kind


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_json_line(path: Path) -> dict:
    """The last complete JSON line (a killed writer may leave the final one cut short)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def _read_progress(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame()
    return df if "epoch" in df else pd.DataFrame()


# ---- the study's ranking --------------------------------------------------------------------------

def family(model: str) -> str:
    """The study's family of a model name: lowercase prefix up to a digit or '_', keeping 'v2'."""
    import re

    m = re.match(r"^([a-z]+?(?:v2)?)(?:\d|_|$)", str(model).split(".")[0])
    name = m.group(1) if m else str(model)
    return "swin" if name == "swinv2" else name


def ranking(runs: pd.DataFrame, constant: float = SCORE_CONSTANT) -> pd.DataFrame:
    """Per (dataset, family, model): min error_rate, fit_time, gpu_mem over its runs; score; rank."""
    ok = runs[runs["status"].isin(["completed", "diverged"]) | runs["status"].isna()].copy()
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
    stopped = runs["status"].astype(str).str.startswith("stopped early").any() if "status" in runs else False
    if stopped and metric == "error_rate" and runs.get("first_rung_error_rate", pd.Series(dtype=float)).notna().any():
        reached = runs[runs["first_rung_error_rate"].notna()].copy()
        epoch = int(reached["first_rung_epoch"].max())
        return reached.assign(error_rate=reached["first_rung_error_rate"]), f"epoch {epoch}, every trial"
    return runs[runs["status"] == "completed"].copy(), "completed runs"


def effects(runs: pd.DataFrame, metric: str = "error_rate") -> pd.DataFrame:
    """For each searched axis: paired differences of ``metric`` between configs equal in all else,
    over the completed runs and, when ASHA stopped trials early, over every trial at the first
    rung (the ``basis`` column)."""
    parts = [_axis_effects(runs[runs["status"] == "completed"].copy(), metric).assign(basis="completed runs")]
    early, basis = comparable(runs, metric)
    if basis != "completed runs":
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
                for name, part in [("all", diff), *((f, diff[fam == f]) for f in sorted(set(fam)))]:
                    rows.append({"axis": axis, "from": _label(base), "to": _label(other), "family": name,
                                 "method": "paired", "mean_diff": part.mean(),
                                 "std": part.std(ddof=1) if len(part) > 1 else np.nan,
                                 "pairs": len(part), "to_wins": int((part < 0).sum())})
                continue
            # No two runs equal in all else (a random search): compare the means of each value.
            for name, part in [("all", done), *done.groupby("family")]:
                a, b = part.loc[part[axis] == base, metric], part.loc[part[axis] == other, metric]
                if len(a) and len(b):
                    rows.append({"axis": axis, "from": _label(base), "to": _label(other), "family": name,
                                 "method": f"unpaired means ({len(a)} vs {len(b)} runs)",
                                 "mean_diff": b.mean() - a.mean(), "std": np.nan, "pairs": 0, "to_wins": np.nan})
    return pd.DataFrame(rows)


def _label(value: Any) -> str:
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


# ---- the whole report ---------------------------------------------------------------------------

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
    done = runs[runs["status"] == "completed"]
    keys = [k for k in ("model", *AXES) if k in done and k != "seed"]
    if done.empty or not keys:
        return pd.DataFrame()
    g = done.groupby(keys, dropna=False)["error_rate"].agg(["count", "mean", "std", "min"]).reset_index()
    return g[g["count"] > 1].sort_values("mean").reset_index(drop=True)


def _asha(runs: pd.DataFrame) -> dict[str, Any]:
    if "epochs_total" not in runs or runs["epochs_total"].isna().all():
        return {}
    stopped = runs["status"].astype(str).str.startswith("stopped early")
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


# ---- writing --------------------------------------------------------------------------------------

def write(report: Report, out: Path, tensorboard_dir: Path | None = None) -> list[Path]:
    """Write report.md, report.html, results.csv, ranking.csv and the PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.csv", out / "ranking.csv"]
    report.runs.to_csv(written[0], index=False)
    report.ranking.to_csv(written[1], index=False)
    plots = _plots(report, out)
    blocks = _blocks(report, plots)
    (out / "report.md").write_text(_markdown(blocks))
    (out / "report.html").write_text(_html(blocks))
    written += [out / "report.md", out / "report.html", *plots.values()]
    if tensorboard_dir is not None and plots:
        _tensorboard_images(plots, tensorboard_dir)
    return written


def terminal_summary(report: Report, n: int = 10) -> list[str]:
    lines = []
    for dataset, parts in report.sections.items():
        top = parts["top"].head(n)
        if top.empty:
            continue
        lines.append(f"{dataset}: top {len(top)} by score = error_rate * (fit_time + {report.constant:g})")
        show = top[["rank", "model", "family", "error_rate", "fit_time", "gpu_mem", "score"]]
        lines += ["  " + line for line in show.to_string(index=False, float_format=_fmt).splitlines()]
    counts = report.runs["status"].astype(str).str.replace(r" \(.*\)", "", regex=True).value_counts()
    lines.append("runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return lines


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) and not math.isnan(v) else "-" if isinstance(v, float) else str(v)


def _plots(report: Report, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, Path] = {}
    for dataset in report.sections:
        pt = report.ranking[report.ranking["dataset"] == dataset]
        for x, label in (("fit_time", "fit time (s)"), ("gpu_mem", "peak GPU memory (GiB)")):
            if pt[x].notna().sum() < 1:
                continue
            fig, ax = plt.subplots(figsize=(8, 5.5))
            for i, (fam, part) in enumerate(pt.groupby("family")):
                ax.scatter(part[x], part["error_rate"], label=fam, color=plt.cm.tab20(i % 20), s=36)
            front = pt[pareto(pt, x)].sort_values(x)
            ax.plot(front[x], front["error_rate"], "k--", lw=1, label="Pareto front")
            for _, r in front.iterrows():
                ax.annotate(r["model"], (r[x], r["error_rate"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set(xlabel=label, ylabel="error rate", title=f"{dataset}: error rate against {label}")
            ax.legend(fontsize=7, ncol=2)
            fig.tight_layout()
            path = out / f"error_vs_{x}_{_slug(dataset)}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            plots[f"{dataset}: error rate against {label}"] = path
    curves = _best_curves(report.runs)
    if curves:
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, history in curves:
            ax.plot(history["epoch"], history["error_rate"], marker="o", ms=3, label=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="epoch", ylabel="error rate", title="learning curves of the best trials")
        ax.legend(fontsize=7)
        fig.tight_layout()
        plots["learning curves of the best trials"] = out / "learning_curves.png"
        fig.savefig(plots["learning curves of the best trials"], dpi=110)
        plt.close(fig)
    overall = report.effects[report.effects["family"] == "all"] if not report.effects.empty else pd.DataFrame()
    if not overall.empty:
        fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(overall)))
        labels = [f"{r.axis}: {r['from']} -> {r.to} " + (f"(n={r.pairs}" if r.pairs else "(unpaired")
                  + f"; {r.basis})" for _, r in overall.iterrows()]
        colors = ["tab:blue" if b == "completed runs" else "tab:orange" for b in overall["basis"]]
        ax.barh(labels, overall["mean_diff"], xerr=overall["std"].fillna(0), color=colors)
        ax.axvline(0, color="k", lw=0.8)
        ax.set(xlabel="change in error rate (negative: better)", title="effect of each searched axis")
        fig.tight_layout()
        plots["axis effects"] = out / "effects.png"
        fig.savefig(plots["axis effects"], dpi=110)
        plt.close(fig)
    return plots


def _best_curves(runs: pd.DataFrame, n: int = 8) -> list[tuple[str, pd.DataFrame]]:
    if "path" not in runs:
        return []
    ranked = runs.dropna(subset=["path", "error_rate"]).sort_values("error_rate").head(n)
    out = []
    for _, row in ranked.iterrows():
        history = _read_progress(Path(row["path"]) / "progress.csv")
        if not history.empty and "error_rate" in history:
            knobs = [f"{k}={_label(row[k])}" for k in ("pool", "resize", "lr", "zero_init") if pd.notna(row.get(k))]
            out.append((" ".join([str(row["model"]), *knobs]), history))
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(text))


def _blocks(report: Report, plots: dict[str, Path]) -> list[tuple[str, Any]]:
    """The report as (kind, content) blocks: h1/h2/p/table/img, rendered to Markdown and HTML."""
    b: list[tuple[str, Any]] = [("h1", "tunekit report")]
    runs = report.runs
    counts = runs["status"].astype(str).str.replace(r" \(.*\)", "", regex=True).value_counts()
    b.append(("p", f"{len(runs)} runs from {runs['run'].nunique()} source(s): "
                   + ", ".join(f"{v} {k}" for k, v in counts.items())
                   + f". Score = error_rate * (fit_time + {report.constant:g}); lower is better. "
                   "Per model, the minimum error rate, fit time and GPU memory over its completed runs "
                   "(the study's rule; runs stopped early are left out, their fit times not being comparable)."))
    unranked = sorted(set(runs["model"]) - set(report.ranking["model"]))
    if unranked:
        b.append(("p", f"Not ranked (no completed run): {', '.join(map(str, unranked))}."))
    cols = ["rank", "family", "model", "error_rate", "fit_time", "gpu_mem", "score", "pareto"]
    for dataset, parts in report.sections.items():
        b.append(("h2", f"{dataset}"))
        top = parts["top"].assign(pareto=_pareto_mark(parts["top"]))
        b.append(("p", "Top 15 by score (pareto: on the error/time (t) or error/memory (m) front):"))
        b.append(("table", top[cols]))
        b.append(("p", "Most accurate at or under the median fit time and GPU memory:"))
        b.append(("table", parts["lean"].assign(pareto=_pareto_mark(parts["lean"]))[cols]))
        b.append(("p", "Most accurate among the leanest quarter (fit time and GPU memory at or under the "
                       "25th percentile):"))
        b.append(("table", parts["leanest"].assign(pareto=_pareto_mark(parts["leanest"]))[cols]))
        if not parts["repeats"].empty:
            b.append(("p", "Repeated configurations (seeds): error rate mean, std and min:"))
            b.append(("table", parts["repeats"]))
        for title, path in plots.items():
            if title.startswith(f"{dataset}:"):
                b.append(("img", (title, path)))
    if not report.effects.empty:
        b.append(("h2", "What each searched axis did"))
        b.append(("p", "Paired differences in error rate between runs equal in every other setting "
                       "(negative: the 'to' value is better); per family and overall, with counts. Where no "
                       "runs pair up (random search), the difference of the mean error rates, marked unpaired. "
                       "Basis: the completed runs and, when ASHA stopped trials early, every trial at ASHA's "
                       "first rung, where all had trained the same epochs."))
        b.append(("table", report.effects))
        if "axis effects" in plots:
            b.append(("img", ("axis effects", plots["axis effects"])))
    if not report.importance.empty:
        b.append(("h2", "Parameter importance"))
        b.append(("p", f"Optuna's fANOVA importance of each searched setting for the error rate (sums to 1), "
                       f"over the {report.importance.name.split('(')[-1].rstrip(')')}."))
        b.append(("table", report.importance.rename_axis("setting").reset_index()))
    if report.asha:
        a = report.asha
        b.append(("h2", "Early stopping (ASHA)"))
        b.append(("p", f"{a['stopped_early']} of {a['trials']} trials stopped early; {a['epochs_run']} epochs run "
                       f"against {a['epochs_if_all_ran']} had every trial run to the end ({a['share']:.0%})."))
    if not report.rank_agreement.empty:
        b.append(("h2", "Do the datasets agree?"))
        b.append(("p", "Spearman correlation of the model ranks between datasets, over the models ranked on both:"))
        b.append(("table", report.rank_agreement))
        b.append(("table", side_by_side(report.ranking).reset_index()))
    if "learning curves of the best trials" in plots:
        b.append(("h2", "Learning curves"))
        b.append(("img", ("learning curves of the best trials", plots["learning curves of the best trials"])))
    bad = runs[runs["status"].isin(["errored", "diverged"])]
    if not bad.empty:
        b.append(("h2", "Errored and diverged runs"))
        b.append(("table", bad[[c for c in ("trial", "model", "status", "error") if c in bad]]))
    return b


def _pareto_mark(df: pd.DataFrame) -> list[str]:
    marks = zip(df.get("pareto_time", []), df.get("pareto_mem", []))
    return [("t" if t else "") + ("m" if m else "") for t, m in marks]


def _markdown(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h1":
            out.append(f"# {content}\n")
        elif kind == "h2":
            out.append(f"## {content}\n")
        elif kind == "p":
            out.append(f"{content}\n")
        elif kind == "table":
            out.append(_md_table(content) + "\n")
        elif kind == "img":
            title, path = content
            out.append(f"![{title}]({path.name})\n")
    return "\n".join(out)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_"
    cells = [[_fmt(v) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([header, rule] + ["| " + " | ".join(r) + " |" for r in cells])


def _html(blocks: list[tuple[str, Any]]) -> str:
    body = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(str(content))}</p>")
        elif kind == "table":
            body.append(content.to_html(index=False, float_format=_fmt, na_rep="-", border=0, classes="t")
                        if not content.empty else "<p><em>(none)</em></p>")
        elif kind == "img":
            title, path = content
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(title)}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table.t{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}"
             "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
             "table.t th{background:#f4f4f4}img{max-width:100%}figcaption{color:#666;font-size:12px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tunekit report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _tensorboard_images(plots: dict[str, Path], log_dir: Path) -> None:
    """The plots as TensorBoard image summaries, so `tensorboard --logdir` shows them too."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for title, path in plots.items():
            writer.add_image(title, np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
