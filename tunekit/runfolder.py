"""The run folder's format: its file names, their readers, trial status, checkpoint removal.

A search's run folder ``<storage>/<name>/`` holds::

    search_space.py            a copy of the space file            (SPACE_COPY)
    tunekit_spec.json          the resolved spec, with a fingerprint (SPEC_FILE)
    events.log                 every trial event of the search, one line each (EVENTS_FILE, tuner.progress)
    prescreen.json             the LogME ranking of the model choices, if the space pre-screens (PRESCREEN_FILE)
    step_times.json            packed trials: each network's steps timed alone (STEP_TIMES_FILE, unshared)
    asha_promotions.jsonl      each rung a trial was let past, a JSON line each (PROMOTIONS_FILE, tuner.asha)
    tunekit_stopped.json       why tunekit stopped a search that could not succeed (STOPPED_FILE, tuner.failures)
    experiment_state-*.json    Ray's saved experiment state (trial status and config, plain JSON)
    <trial folder>/            one per trial, named by Ray:
        params.json            the trial's config                  (Ray)
        progress.csv           one row per epoch, the metric contract's columns (Ray's CSV logger)
        result.json            one JSON line per epoch             (Ray's JSON logger)
        events.out.tfevents.*  TensorBoard scalars and hparams     (tuner.callbacks)
        tunekit_run.json       what the trial really used          (RUN_INFO_FILE, tuner.trainable)
        error.txt              the traceback of a failed attempt   (Ray)
        checkpoint_*/checkpoint.pt   the latest epoch's checkpoint, and the one before while it runs (CHECKPOINT_FILE)
    results.csv, ranking.csv, report.md, report.html, *.png, tunekit_report/   (the report)
    wandb/offline-run-*/       W&B's offline runs, if the search logs to W&B offline (tuner.trackers)
    orphaned/<trial folder>/   a trial's first folder that Ray's saved state did not list when the search was
                               killed: run again from the start on --resume (ORPHANS_DIR, tuner.previous)

Everything here reads files (no Ray, nothing unpickled), so a run folder can be read on any
machine. Ray's own file layouts (params/progress/result, the experiment state's ``trial_data``)
are what ``tuner.ray_api`` lists among what tunekit relies on; ``tests/test_ray_api.py`` checks
them against a real run.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas loads where a run folder is read, not in a trial's worker, which only writes one
    import pandas as pd

SPACE_COPY = "search_space.py"
SPEC_FILE = "tunekit_spec.json"
PRESCREEN_FILE = "prescreen.json"
STEP_TIMES_FILE = "step_times.json"
EVENTS_FILE = "events.log"
PROMOTIONS_FILE = "asha_promotions.jsonl"
STOPPED_FILE = "tunekit_stopped.json"
RUN_INFO_FILE = "tunekit_run.json"
CHECKPOINT_FILE = "checkpoint.pt"
PARAMS_FILE = "params.json"
PROGRESS_FILE = "progress.csv"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
ORPHANS_DIR = "orphaned"
REPORT_EVENTS_DIR = "tunekit_report"  # the report's plots as TensorBoard images


class Status(str, Enum):
    """How a trial ended (or not). The epoch it got to is its own field (``epochs_run``)."""

    COMPLETED = "completed"  # ran every epoch
    STOPPED = "stopped early"  # by ASHA, after epochs_run epochs
    DIVERGED = "diverged"  # non-finite loss; error_rate counts as 1.0
    ERRORED = "errored"  # failed after its retries; the reason in the 'error' column
    UNFINISHED = "unfinished"  # an interrupted search: --resume continues it
    NOT_STARTED = "not started"  # an interrupted search never got to it

    @classmethod
    def parse(cls, text: Any) -> Status:
        """A status as results.csv writes it (also the older 'stopped early (epoch 3)' form)."""
        text = str(text)
        for status in cls:
            if text == status.value or text.startswith(status.value + " ("):
                return status
        raise ValueError(f"unknown trial status {text!r}")

    @property
    def ended(self) -> bool:
        """Whether the trial is over (a resume leaves it alone)."""
        return self not in (Status.UNFINISHED, Status.NOT_STARTED)


def ended_status(epochs_run: int, total_epochs: int, diverged: bool) -> Status:
    """The status of a trial Ray reports as ended (TERMINATED), from its last epoch."""
    if diverged:
        return Status.DIVERGED
    return Status.STOPPED if 0 < epochs_run < total_epochs else Status.COMPLETED


def trial_dirs(run: Path) -> list[Path]:
    """The trial folders of a run folder, sorted."""
    return sorted(p for p in run.iterdir() if p.is_dir() and (p / PARAMS_FILE).is_file())


def read_json(path: Path) -> Any:
    """A JSON file's content, or None if it is missing or not (yet) valid JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def last_json_line(path: Path) -> dict[str, Any]:
    """The last complete line of a JSON-lines file (a killed writer may leave the final one cut short)."""
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


def read_progress(trial: Path) -> pd.DataFrame:
    """A trial's progress.csv (one row per epoch); empty before its first epoch or if unreadable."""
    import pandas as pd

    try:
        df = pd.read_csv(trial / PROGRESS_FILE)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame()
    return df if "epoch" in df else pd.DataFrame()


def progress_rows(trial: Path) -> list[dict[str, Any]]:
    """A trial's progress.csv as rows (one per epoch), numbers as numbers and an empty field as NaN: what the
    report reads of every trial, without a DataFrame per trial (a tenth of read_progress's time: the report
    of a 1,020-trial search reads 1,020 of them). Empty before the first epoch or if unreadable."""
    try:
        with open(trial / PROGRESS_FILE, newline="") as f:
            rows = [{k: _number(v) for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    rows = [r for r in rows if isinstance(r.get("epoch"), (int, float)) and math.isfinite(r["epoch"])]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return float("nan")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def history(trial: Path, metric: str) -> dict[int, float]:
    """epoch -> ``metric`` from a trial's progress.csv (missing values: inf)."""
    out = {}
    for row in progress_rows(trial):
        value = row.get(metric, float("inf"))
        out[row["epoch"]] = float(value) if isinstance(value, (int, float)) and not math.isnan(value) else float("inf")
    return out


def append_promotions(path: Path, passes: list[tuple[str, int]]) -> None:
    """Record that each (trial id, rung) of ``passes`` was let past that rung (appended: a line each)."""
    with open(path, "a") as f:
        f.writelines(json.dumps({"trial": trial, "rung": rung}) + "\n" for trial, rung in passes)


def read_promotions(path: Path) -> dict[str, int]:
    """trial id -> the highest rung it was let past, from :func:`append_promotions`' file (a line cut
    short by a killed driver is skipped)."""
    out: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            entry = json.loads(line)
            out[entry["trial"]] = max(out.get(entry["trial"], 0), int(entry["rung"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def ray_trials(run: Path) -> dict[str, dict[str, Any]]:
    """Each trial folder's entry in Ray's newest experiment state file (status, config), by folder name.

    Ray writes ``trial_data`` as a list of [trial JSON string, runtime metadata JSON string] pairs;
    the trial JSON's ``relative_logdir`` is the folder name.
    """
    return _state_trials(run)[0]


def listed_trials(run: Path) -> set[str] | None:
    """The trial folders Ray's newest experiment state lists (the state Ray restores a search from), or None
    where that file, or one of its trials, cannot be read."""
    trials, complete = _state_trials(run)
    return set(trials) if complete else None


def _state_trials(run: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """``ray_trials``, and whether the newest state file and each of its trials were read."""
    files = sorted(run.glob(EXPERIMENT_STATE_GLOB))  # Ray restores from the newest name, as it sorts them
    state = read_json(files[-1]) if files else None
    complete = isinstance(state, dict)
    out = {}
    for entry in (state or {}).get("trial_data", []):
        try:
            trial = json.loads(entry[0] if isinstance(entry, list) else entry)
        except (TypeError, ValueError):
            complete = False
            continue
        if not isinstance(trial, dict):
            complete = False
        elif trial.get("relative_logdir"):  # a trial not started yet has no folder
            out[trial["relative_logdir"]] = trial
    return out, complete


def ray_states(run: Path) -> dict[str, str]:
    """Ray's own status of each trial folder (TERMINATED, ERROR, RUNNING, PAUSED, PENDING)."""
    return {name: str(trial.get("status", "")) for name, trial in ray_trials(run).items()}


def trial_config(trial: Path, ray_trial: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trial's config from the first readable of its three copies: Ray truncates params.json
    and then writes it, so a driver killed in between leaves it empty (seen in the kill test)."""
    for config in (read_json(trial / PARAMS_FILE), (ray_trial or {}).get("config"),
                   last_json_line(trial / RESULT_FILE).get("config")):
        if isinstance(config, dict) and config:
            return config
    return {}


def trial_status(trial: Path, ray_status: str | None, epochs_run: int, total_epochs: int,
                 diverged: bool) -> tuple[Status, str | None]:
    """(status, error) of a trial folder. Ray's status says whether it ended (an error.txt stays
    behind even when a retry then succeeded); without the experiment state, the last result's
    done flag is the best guess."""
    done = ray_status == "TERMINATED" if ray_status else bool(last_json_line(trial / RESULT_FILE).get("done"))
    error = trial / ERROR_FILE
    if error.is_file() and not done:
        lines = [line for line in error.read_text(errors="replace").splitlines() if line.strip()]
        return Status.ERRORED, (lines[-1] if lines else "unknown error")[:300]
    if diverged:
        return Status.DIVERGED, None
    if epochs_run == 0:
        return Status.NOT_STARTED, None
    if not done:
        return Status.UNFINISHED, None
    return ended_status(epochs_run, total_epochs, diverged), None


def retried(trial: Path) -> bool:
    """A failed attempt left its traceback (the trial may have succeeded on a retry)."""
    return (trial / ERROR_FILE).is_file()


def remove_checkpoints(trial: Path) -> None:
    """Delete a trial folder's checkpoints (Ray's ``checkpoint_*`` folders)."""
    for entry in trial.glob("checkpoint_*"):
        shutil.rmtree(entry, ignore_errors=True)
