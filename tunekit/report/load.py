"""Loading runs for the report: run folders and CSV files -> one DataFrame, one row per run (trial).

A run folder is read through ``runfolder`` (no Ray); a CSV is tunekit's own results.csv or the
study's export (``dataset, model_name, error_rate, fit_time, GPU_mem`` and optional
``lr``/``learning_rate``, ``concat_pool``, ``resize_method``, ``num_experiments``).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import runfolder, unshared
from ..config import SEARCH_KEYS, SEARCH_METRICS, TrialConfig, total_epochs
from ..data.spec import DataSpec
from ..errors import TunekitError
from ..machine import StepKey
from ..prescreen import Screen, load_screen
from ..runfolder import Status

STUDY_COLUMNS = {"model_name": "model", "GPU_mem": "gpu_mem", "learning_rate": "lr", "resize_method": "resize"}


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


def load_screens(sources: list[str | Path]) -> dict[str, Screen]:
    """The pre-screens (prescreen.json) of the run folders among ``sources``, by run name."""
    screens = {}
    for source in sources:
        path = Path(source).expanduser()
        screen = load_screen(path) if path.is_dir() else None
        if screen is not None:
            screens[path.name] = screen
    return screens


def load_run(run: Path) -> pd.DataFrame:
    """One row per trial folder of a run: config, final and best-epoch metrics, epochs, status."""
    if not run.is_dir():
        raise TunekitError(f"{run} is not a run folder (or a .csv file)")
    spec = runfolder.read_json(run / runfolder.SPEC_FILE) or {}
    dataset = _dataset_name(spec.get("data"), run.name)
    metric, mode = spec.get("metric", "error_rate"), spec.get("mode", "min")
    rung = (spec.get("asha") or {}).get("grace_period")  # ASHA's first comparison: every trial gets there
    ray_trials = runfolder.ray_trials(run)
    step_times = unshared.load(run / runfolder.STEP_TIMES_FILE)
    rows = [trial_row(trial, dataset, metric, mode, ray_trials.get(trial.name, {}), rung, step_times)
            for trial in runfolder.trial_dirs(run)]
    if not rows:
        raise TunekitError(f"{run} holds no trial folders (params.json): is it a tunekit search's run folder?")
    df = pd.DataFrame(rows)
    df.insert(0, "run", run.name)
    return df


def trial_row(trial: Path, dataset: str, metric: str, mode: str, ray_trial: dict[str, Any],
              rung: int | None = None, step_times: dict | None = None) -> dict[str, Any]:
    """One trial folder as a row: its config keys, last-epoch metrics, best epoch, status."""
    config = runfolder.trial_config(trial, ray_trial)
    row: dict[str, Any] = {"dataset": dataset, "trial": trial.name}
    row.update({k: config[k] for k in SEARCH_KEYS if k in config})
    history = runfolder.progress_rows(trial)  # rows, not a DataFrame per trial: the report reads every trial
    total = total_epochs(config)
    row["epochs_run"] = 0
    if history:
        last = history[-1]
        row.update({key: last[key] for key in SEARCH_METRICS if key in last})
        scored = [r for r in history if _number(r.get(metric))]
        if scored:  # the first best epoch, as pandas' idxmin/idxmax
            best = (min if mode == "min" else max)(scored, key=lambda r: r[metric])
            row["best_epoch"] = best["epoch"]
            row[f"best_{metric}"] = best[metric]
        row["epochs_run"] = last["epoch"]
        at_rung = [r for r in history if r["epoch"] == rung] if rung and "error_rate" in last else []
        if at_rung:
            row["first_rung_epoch"], row["first_rung_error_rate"] = int(rung), at_rung[0]["error_rate"]
    row["epochs_total"] = total
    diverged = any(str(r.get("diverged")).lower() == "true" for r in history)
    status, error = runfolder.trial_status(trial, ray_trial.get("status"), row["epochs_run"], total, diverged)
    row["status"] = status.value
    if error is not None:
        row["error"] = error
    if status is Status.DIVERGED:
        row["error_rate"] = 1.0
    row["retried"] = runfolder.retried(trial) and status is not Status.ERRORED
    info = runfolder.read_json(trial / runfolder.RUN_INFO_FILE) or {}
    row["device"] = info.get("device")
    if config.get("compile", "off") != "off":  # compile on or auto: what the trial ran, and why
        row["compiled"], row["compile_why"] = info.get("compiled"), info.get("compile_why")
    row["fit_time_unshared"] = _unshared(row, config, info, step_times or {})
    row["path"] = str(trial)
    return row


def _number(value: Any) -> bool:
    """A value a metric can be ranked by (not NaN, as pandas' idxmin skips it)."""
    return isinstance(value, (int, float)) and not math.isnan(value)


def _unshared(row: dict[str, Any], config: dict[str, Any], info: dict[str, Any], step_times: dict) -> float:
    """The trial's fit time unshared (``tunekit.unshared``): its work at its network's speed alone where the
    search timed it; its fit_time where it had its device to itself; else unknown (NaN)."""
    gpu = float((info.get("resources") or {}).get("GPU", 0.0) or 0.0)
    fit_time = row.get("fit_time", float("nan"))
    # the key the measurement stage timed the trial's network under: its precision resolved, compiled or not
    key = StepKey(config.get("model", ""), int(config.get("batch_size", TrialConfig.batch_size)),
                  int(info.get("img_size") or 0), str(info.get("precision") or config.get("precision", "")),
                  compile=bool(info.get("compiled", False)))
    # a run folder written before the measurement stage keyed its step times by the precision as the space asked
    # it (no compile, no frozen field)
    times = step_times.get(key.text()) if step_times else None
    if step_times and times is None and not key.compile:
        times = step_times.get(json.dumps({"batch_size": key.batch_size, "img_size": key.img_size, "model": key.model,
                                           "precision": str(config.get("precision", TrialConfig.precision))},
                                          sort_keys=True))
    if times and info.get("n_train") and row["epochs_run"]:
        frozen = config.get("freeze_epochs", TrialConfig.freeze_epochs) \
            if config.get("pretrained", TrialConfig.pretrained) is not False else 0
        return unshared.unshared_fit_time(times, info["n_train"], info.get("n_valid", 0), frozen, row["epochs_run"],
                                          compiled=key.compile)
    return fit_time if not 0 < gpu < 1 else float("nan")


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
    if "status" in df:  # older results.csv files wrote 'stopped early (epoch 3)'
        df["status"] = df["status"].map(lambda s: Status.parse(s).value)
    else:
        df["status"] = Status.COMPLETED.value
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
