"""The Ray Tune callbacks of a search: TensorBoard files and checkpoint cleanup.

* ``TensorBoardCallback``: per-epoch scalars named after the metric contract, and each trial's
  hyperparameters for TensorBoard's HParams view.
* (``progress.ProgressCallback``: trial events to events.log, and the event stream or a live status.)
* ``CheckpointCleanup``: a finished trial's checkpoints go once Ray's saved state says it finished.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import LoggerCallback

from .. import runfolder
from ..config import FINAL_METRICS, METRICS, SEARCH_KEYS
from ..export import keep_weights
from ..spec import SearchSpec
from .ray_api import trial_local_path


class TensorBoardCallback(LoggerCallback):
    """Per-epoch scalars under the metric names, and each trial's hyperparameters (hparams view)."""

    def __init__(self) -> None:
        self._writers: dict[str, Any] = {}

    def _writer(self, trial):
        from torch.utils.tensorboard import SummaryWriter

        if trial.trial_id not in self._writers:
            self._writers[trial.trial_id] = SummaryWriter(log_dir=trial_local_path(trial), flush_secs=10)
        return self._writers[trial.trial_id]

    def log_trial_start(self, trial) -> None:
        self._writer(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        writer = self._writer(trial)
        step = int(result.get("epoch", iteration))
        for key in METRICS:
            value = result.get(key)
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, value, step)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = self._writer(trial)
        hp = {}
        for key in ("data", *SEARCH_KEYS):
            value = trial.config.get(key)
            if value is not None:
                hp[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
        last = trial.last_result or {}
        final = {f"final/{k}": float(last[k]) for k in FINAL_METRICS if isinstance(last.get(k), (int, float))}
        final["final/epochs"] = float(last.get("epoch", 0) or 0)
        for summary_proto in hparams(hp, final):
            writer.file_writer.add_summary(summary_proto)
        for key, value in final.items():
            writer.add_scalar(key, value, 0)
        writer.close()
        del self._writers[trial.trial_id]


class CheckpointCleanup(Callback):
    """Keep the final weights of the best ``keep_best`` trials (model.safetensors, from their last
    checkpoint) and delete finished trials' checkpoints, but only once Ray's saved experiment state
    records the trial as finished: a search killed before that snapshot resumes the trial from its
    last checkpoint, which must still exist. Unfinished, waiting and errored trials keep theirs."""

    def __init__(self, run_dir: Path, metric: str, mode: str, keep_best: int, keep_checkpoints: bool = False,
                 every_s: float = 5.0) -> None:
        self.run_dir, self.metric, self.mode, self.every_s = run_dir, metric, mode, every_s
        self.keep_best, self.keep_checkpoints = keep_best, keep_checkpoints
        self.pending: set[str] = set()
        self.finals: dict[str, float] = {}  # ended trial -> its metric at its last epoch
        self.ended: set[str] = set()
        self.kept: set[str] = set()  # the trials holding weights now
        self.last = 0.0
        self.wait_s = every_s

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        name = Path(trial.path).name
        self.pending.add(name)
        value = (trial.last_result or {}).get(self.metric)
        if isinstance(value, (int, float)) and not (trial.last_result or {}).get("diverged"):
            self.finals[name] = float(value)

    def on_step_end(self, iteration, trials, **info) -> None:
        if self.pending and time.monotonic() - self.last > self.wait_s:
            start = time.monotonic()
            self.sweep()
            self.last = time.monotonic()
            # reading Ray's saved state grows with the trials: at most ~5% of the driver's time on it
            self.wait_s = max(self.every_s, 20 * (self.last - start))

    def sweep(self) -> None:
        states = runfolder.ray_states(self.run_dir)
        ready = {n for n in self.pending if states.get(n) == "TERMINATED"}
        if not ready:
            return
        self.ended |= ready
        self.kept = tidy(self.run_dir, self.finals, self.mode, self.keep_best, self.keep_checkpoints, self.ended,
                         ready, ready | self.kept)
        self.pending -= ready


def tidy(run_dir: Path, finals: dict[str, float], mode: str, keep_best: int, keep_checkpoints: bool,
         ended: set[str], tidied: set[str], candidates: set[str] | None = None) -> set[str]:
    """The one rule for ended trials, as a search goes (``CheckpointCleanup``) and when it ends (``finish``):
    the ``keep_best`` best of the ``ended`` (by ``finals``) hold their weights (``export.keep_weights``;
    ``candidates``: the folders whose state can have changed), and the ``tidied`` lose their checkpoints
    unless ``keep_checkpoints``. Returns the trials holding weights."""
    kept = keep_weights(run_dir, finals, mode, keep_best, ended, candidates=candidates)
    if not keep_checkpoints:
        for name in tidied:
            runfolder.remove_checkpoints(run_dir / name)
    return kept


def tidy_ended(run_dir: Path, finals: dict[str, float], spec: SearchSpec) -> set[str]:
    """:func:`tidy` for every trial Ray's saved state records as ended (at the end of a search)."""
    ended = {name for name, status in runfolder.ray_states(run_dir).items() if status == "TERMINATED"}
    return tidy(run_dir, finals, spec.mode, spec.keep_best, spec.keep_checkpoints, ended, ended)


def searched_keys(spec: SearchSpec) -> set[str]:
    """Config keys the space varies (sampled, or more than one value): the ones worth printing."""
    return {k for k in spec.space if (values := spec.values_of(k)) is None or len(values) > 1}
