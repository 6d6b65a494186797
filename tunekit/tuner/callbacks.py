"""The Ray Tune callbacks of a search: TensorBoard files, readable progress, checkpoint cleanup.

* ``TensorBoardCallback``: per-epoch scalars named after the metric contract, and each trial's
  hyperparameters for TensorBoard's HParams view.
* ``ProgressCallback``: one readable line per trial event, a best-so-far, and how long each trial
  took to start (a free slot -> its first training step).
* ``CheckpointCleanup``: a finished trial's checkpoints go once Ray's saved state says it finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import LoggerCallback

from .. import runfolder
from ..config import METRICS, SEARCH_KEYS
from ..export import keep_weights
from ..runfolder import Status, ended_status
from ..spec import SearchSpec


class TensorBoardCallback(LoggerCallback):
    """Per-epoch scalars under the metric names, and each trial's hyperparameters (hparams view)."""

    def __init__(self) -> None:
        self._writers: dict[str, Any] = {}

    def _writer(self, trial):
        from torch.utils.tensorboard import SummaryWriter

        if trial.trial_id not in self._writers:
            self._writers[trial.trial_id] = SummaryWriter(log_dir=trial.local_path, flush_secs=10)
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
        final = {f"final/{k}": float(last[k]) for k in ("error_rate", "valid_loss", "accuracy", "f2", "fit_time",
                                                          "gpu_mem") if isinstance(last.get(k), (int, float))}
        final["final/epochs"] = float(last.get("epoch", 0) or 0)
        for summary_proto in hparams(hp, final):
            writer.file_writer.add_summary(summary_proto)
        for key, value in final.items():
            writer.add_scalar(key, value, 0)
        writer.close()
        del self._writers[trial.trial_id]


class ProgressCallback(Callback):
    """One readable line per trial event and a best-so-far, instead of Ray's table flood; and the
    seconds each trial slot sat idle before its next trial's first training step."""

    def __init__(self, echo: Callable[[str], None], metric: str, mode: str, max_epochs: int, total: int,
                 searched: set[str], slots: int = 1) -> None:
        self.echo, self.metric, self.mode, self.max_epochs, self.total = echo, metric, mode, max_epochs, total
        self.searched = searched
        self.slots = slots
        self.start = time.perf_counter()
        self.number: dict[str, int] = {}
        self.best: tuple[float, int] | None = None
        self.counts = {"finished": 0, "stopped": 0, "errored": 0}
        # When each free trial slot became free, oldest first. Ray calls on_trial_start only once a
        # trial's worker is up, so the start is timed from the slot's release: what an idle GPU waits.
        self.free_since: list[float] = []
        self.holding: set[str] = set()  # trials running in a slot
        self.waiting: set[str] = set()  # trials paused by ASHA at a rung, waiting for promotion
        self.started_at: dict[str, float] = {}
        self.start_seconds: list[float] = []  # a free slot -> the trial's first training step

    def setup(self, **info) -> None:
        self.free_since = [time.time()] * self.slots

    def _release_slot(self, trial) -> None:
        if trial.trial_id in self.holding:
            self.holding.discard(trial.trial_id)
            self.free_since.append(time.time())

    def _say(self, trial, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        n = self.number.setdefault(trial.trial_id, len(self.number) + 1)
        self.echo(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] #{n:<3d} {text}")

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started_at[trial.trial_id] = self.free_since.pop(0) if self.free_since else time.time()
        self.holding.add(trial.trial_id)
        if trial.trial_id in self.waiting:
            self.waiting.discard(trial.trial_id)
            self._say(trial, f"promoted after epoch {_epoch(trial)}: continues from its checkpoint")
            return
        c = trial.config
        knobs = " ".join(f"{k}={_short(c[k])}" for k in SEARCH_KEYS if k != "model" and k in self.searched and k in c)
        self._say(trial, f"start    {c.get('model')} {knobs}".rstrip())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        started = self.started_at.pop(trial.trial_id, None)
        if started is not None and isinstance(result.get("ready_time"), float):
            self.start_seconds.append(result["ready_time"] - started)
        value = result.get(self.metric)
        if not isinstance(value, (int, float)):
            return
        n = self.number.setdefault(trial.trial_id, len(self.number) + 1)
        better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
        if better:
            self.best = (value, n)
        best = f"best {self.best[0]:.4f} (#{self.best[1]})"
        self._say(trial, f"epoch {result.get('epoch')}/{self.max_epochs} {self.metric} {value:.4f}   {best}")

    def start_summary(self) -> str | None:
        if not self.start_seconds:
            return None
        s = sorted(self.start_seconds)
        return (f"trial start: median {s[len(s) // 2]:.1f}s (min {s[0]:.1f}s, max {s[-1]:.1f}s) from a free "
                f"trial slot to the trial's first training step, over {len(s)} trial(s)")

    def on_step_end(self, iteration, trials, **info) -> None:
        for trial in trials:  # Ray calls no callback when a scheduler pauses a trial
            if trial.status == "PAUSED" and trial.trial_id in self.holding:
                self._release_slot(trial)
                self.waiting.add(trial.trial_id)
                self._say(trial, f"waits at epoch {_epoch(trial)} for a place in its rung's top (ASHA)")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._release_slot(trial)  # the failed run's slot; its retry takes one like any trial

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._release_slot(trial)
        self.waiting.discard(trial.trial_id)
        last = trial.last_result or {}
        epoch = last.get("epoch", 0)
        status = ended_status(epoch, self.max_epochs, bool(last.get("diverged")))
        if status is Status.DIVERGED:
            self.counts["stopped"] += 1
            self._say(trial, f"diverged at epoch {epoch} (non-finite loss)")
        elif status is Status.STOPPED:
            self.counts["stopped"] += 1
            self._say(trial, f"stopped early by ASHA at epoch {epoch}")
        else:
            self.counts["finished"] += 1
            self._say(trial, f"finished: {self.metric} {last.get(self.metric, float('nan')):.4f}")
        self._status()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._release_slot(trial)
        self.waiting.discard(trial.trial_id)
        self.counts["errored"] += 1
        self._say(trial, f"errored: see {trial.path}/error.txt")
        self._status()

    def _status(self) -> None:
        done = sum(self.counts.values())
        self.echo(f"        {done}/{self.total} done: {self.counts['finished']} finished, "
                  f"{self.counts['stopped']} stopped early, {self.counts['errored']} errored")


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

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        name = Path(trial.path).name
        self.pending.add(name)
        value = (trial.last_result or {}).get(self.metric)
        if isinstance(value, (int, float)) and not (trial.last_result or {}).get("diverged"):
            self.finals[name] = float(value)

    def on_step_end(self, iteration, trials, **info) -> None:
        if self.pending and time.monotonic() - self.last > self.every_s:
            self.last = time.monotonic()
            self.sweep()

    def sweep(self) -> None:
        states = runfolder.ray_states(self.run_dir)
        ready = {n for n in self.pending if states.get(n) == "TERMINATED"}
        if not ready:
            return
        self.ended |= ready
        self.kept = keep_weights(self.run_dir, self.finals, self.mode, self.keep_best, self.ended,
                                 candidates=ready | self.kept)
        for name in ready:
            if not self.keep_checkpoints:
                runfolder.remove_checkpoints(self.run_dir / name)
            self.pending.discard(name)


def searched_keys(spec: SearchSpec) -> set[str]:
    """Config keys the space varies (sampled, or more than one value): the ones worth printing."""
    return {k for k in spec.space if (values := spec.values_of(k)) is None or len(values) > 1}


def _epoch(trial) -> int:
    return int((trial.last_result or {}).get("epoch", 0) or 0)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
