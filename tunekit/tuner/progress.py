"""A search's progress: every trial event in the run folder's events.log, and on screen either the
event stream or, for big searches, one live status.

    progress = ProgressCallback(echo, "error_rate", "min", max_epochs=6, total=1020, searched={"lr"},
                                display="auto", log_path=run_dir / "events.log")

``display``: ``events`` prints one line per event (start, epoch, promoted, waits, stopped, finished,
errored) with the best so far; ``summary`` prints a status instead: in a terminal one block redrawn
in place (about once a second), elsewhere (CI, a log file) one plain line every ``every_s`` seconds;
``auto`` is ``summary`` beyond ``SUMMARY_ABOVE`` trials. The status: trials done / running / waiting
/ stopped / errored / not started, the best so far with its config, epochs run against the budget
(every trial to the end) and an estimate of the time left. Every event also goes to events.log.

Cost per result is O(1) and per step O(trials running): counts are kept as events arrive, and the
trials ASHA pauses are found among the running ones, never by a scan of every trial.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from ..config import PROGRESS_DISPLAYS, SEARCH_KEYS
from ..runfolder import EVENTS_FILE, Status, ended_status
from .failures import failure_of
from .ray_api import answer_first_interrupt, write_now

DISPLAYS = PROGRESS_DISPLAYS
__all__ = ["DISPLAYS", "EVENTS_FILE", "SUMMARY_ABOVE", "ProgressCallback"]
SUMMARY_ABOVE = 50  # trials: beyond this, auto shows the status instead of the event stream
INTERRUPTED = ("Ctrl-C: stopping the search; its trials go on from their last epoch with --resume "
               "(Ctrl-C again: stop at once, without the report)")
INTERRUPTED_AGAIN = "Ctrl-C again: stopping at once, once Ray has saved the trials (a third Ctrl-C: now)"


class ProgressCallback(Callback):
    """Trial events to events.log and to the screen (stream or status); the seconds each trial slot
    sat idle before its next trial's first training step."""

    def __init__(self, echo: Callable[[str], None], metric: str, mode: str, max_epochs: int, total: int,
                 searched: set[str], slots: int = 1, display: str = "events", log_path: Path | None = None,
                 every_s: float = 30.0, stream: TextIO | None = None) -> None:
        self.echo, self.metric, self.mode, self.max_epochs, self.total = echo, metric, mode, max_epochs, total
        self.searched, self.slots, self.log_path = searched, slots, log_path
        self.display = ("summary" if total > SUMMARY_ABOVE else "events") if display == "auto" else display
        self._stream = stream  # None: sys.stdout when drawing (Ray pickles callbacks: no file objects kept)
        self.live = self.display == "summary" and (stream or sys.stdout).isatty()
        self.every_s = 1.0 if self.live else every_s
        self.start = time.perf_counter()
        self.number: dict[str, int] = {}
        self.best: tuple[float, int, str] | None = None  # value, trial number, its config
        self.counts = {"finished": 0, "stopped": 0, "errored": 0}
        self.epochs_run = 0
        self.ended_epochs = 0  # epochs of the trials that ended (their average estimates the rest)
        self.epochs_of: dict[str, int] = {}  # trial -> epochs it has run
        # When each free trial slot became free, oldest first. Ray calls on_trial_start only once a
        # trial's worker is up, so the start is timed from the slot's release: what an idle GPU waits.
        self.free_since: list[float] = []
        self.holding: dict[str, Any] = {}  # trials running in a slot, by id
        self.waiting: set[str] = set()  # trials paused by ASHA at a rung, waiting for promotion
        self.retrying: dict[str, Any] = {}  # trials that failed, waiting for their retry, by id
        self.attempt_epochs: dict[str, int] = {}  # the last epoch a trial reported since its (re)start
        self.started_at: dict[str, float] = {}
        self.start_seconds: list[float] = []  # a free slot -> the trial's first training step
        self.start_phases: list[dict[str, float]] = []  # each trial run's start: worker + loop.StartClock's phases
        self.failed_with: dict[str, int] = {}  # error line -> failures with it (the status display's count)
        self._log: TextIO | None = None
        self._last_render = 0.0
        self._drawn = 0  # lines of the live block on screen

    def __getstate__(self) -> dict[str, Any]:
        """Ray pickles the Tuner's callbacks: without the open log and any stream (reopened in setup)."""
        return {**self.__dict__, "_log": None, "_stream": None}

    # --- Ray's hooks -----------------------------------------------------------------------------

    def setup(self, **info) -> None:
        answer_first_interrupt(INTERRUPTED, INTERRUPTED_AGAIN, self._said_now)
        self.free_since = [time.time()] * self.slots
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a", buffering=1)  # noqa: SIM115 - open for the search's life

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started_at[trial.trial_id] = self.free_since.pop(0) if self.free_since else time.time()
        self.holding[trial.trial_id] = trial
        self.retrying.pop(trial.trial_id, None)
        self.attempt_epochs.pop(trial.trial_id, None)
        if trial.trial_id in self.waiting:
            self.waiting.discard(trial.trial_id)
            self._say(trial, f"promoted after epoch {self.epochs_of.get(trial.trial_id, 0)}: continues from its "
                             f"checkpoint")
            return
        self._say(trial, f"start    {self._config(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        started = self.started_at.pop(trial.trial_id, None)
        if started is not None and isinstance(result.get("ready_time"), float):
            self.start_seconds.append(result["ready_time"] - started)
            phases = start_phases_of(result)
            if phases and isinstance(result.get("started_time"), float):
                self.start_phases.append({"worker": max(0.0, result["started_time"] - started), **phases})
        value = result.get(self.metric)
        if not isinstance(value, (int, float)):
            return
        self.epochs_run += 1
        self.epochs_of[trial.trial_id] = self.attempt_epochs[trial.trial_id] = int(result.get("epoch") or 0)
        n = self.number.setdefault(trial.trial_id, len(self.number) + 1)
        if self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0]):
            self.best = (value, n, self._config(trial))
        self._say(trial, f"epoch {result.get('epoch')}/{self.max_epochs} {self.metric} {value:.4f}   "
                         f"best {self.best[0]:.4f} (#{self.best[1]})")

    def on_step_end(self, iteration, trials, **info) -> None:
        # Ray calls no callback when a scheduler pauses a trial: look among the running ones
        for trial in [t for t in self.retrying.values() if t.status == "PAUSED"]:
            del self.retrying[trial.trial_id]  # it failed while waiting at a rung, and waits there still
            self.waiting.add(trial.trial_id)
        for trial in [t for t in self.holding.values() if t.status == "PAUSED"]:
            self._release_slot(trial)
            self.waiting.add(trial.trial_id)
            self._say(trial, f"waits at epoch {self.epochs_of.get(trial.trial_id, 0)} for a place in its "
                             f"rung's top (ASHA)")
        if self.display == "summary" and time.perf_counter() - self._last_render >= self.every_s:
            self._render()

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._release_slot(trial)  # the failed run's slot; its retry takes one like any trial
        if trial.status == "ERROR":
            return  # not retried after all (a configuration error): on_trial_error has said so
        self.retrying[trial.trial_id] = trial
        failures = trial.run_metadata.num_failures
        self._say(trial, f"{self._failure(trial)}; retried ({failures} of {trial.max_failures})", failure=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended(trial)
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
        self._done_line()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trial)
        self.retrying.pop(trial.trial_id, None)
        self.counts["errored"] += 1
        retries = trial.run_metadata.num_failures - 1
        why = ("not retried: a configuration error, the same in every attempt" if failure_of(trial).config
               else f"errored after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else "errored")
        self._say(trial, f"{self._failure(trial)}; {why} (traceback: {trial.path}/error.txt)", failure=True)
        self._done_line()

    def on_experiment_end(self, trials, **info) -> None:
        if self.display == "summary":
            self._render()
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- what is shown -----------------------------------------------------------------------------

    def status_lines(self) -> list[str]:
        """The live status: counts, best so far, epochs against the budget, time left."""
        elapsed = time.perf_counter() - self.start
        done = sum(self.counts.values())
        running, waiting, retrying = len(self.holding), len(self.waiting), len(self.retrying)
        not_started = max(0, self.total - done - running - waiting - retrying)
        budget = self.total * self.max_epochs
        lines = [f"[{_clock(elapsed)}] trials {done}/{self.total} done ({self.counts['finished']} finished, "
                 f"{self.counts['stopped']} stopped early, {self.counts['errored']} errored), {running} running, "
                 f"{waiting} waiting, " + (f"{retrying} failed and to be retried, " if retrying else "")
                 + f"{not_started} not started",
                 f"  epochs {self.epochs_run} run of {budget} if every trial ran to the end "
                 f"({self.epochs_run / budget:.0%}); {self._time_left(elapsed, done)}"]
        if self.best is not None:
            lines.append(f"  best {self.metric} {self.best[0]:.4f}: #{self.best[1]} {self.best[2]}")
        if self.failed_with:
            error, times = max(self.failed_with.items(), key=lambda item: item[1])
            others = len(self.failed_with) - 1
            kind, _, message = error.partition(": ")
            lines.append(f"  failed attempts: {times} x {kind.rsplit('.', 1)[-1]}: {message[:120]}"
                         + (f" (and {others} other error(s))" if others else ""))
        return lines

    def start_summary(self) -> str | None:
        if not self.start_seconds:
            return None
        s = sorted(self.start_seconds)
        return (f"trial start: median {s[len(s) // 2]:.1f}s (min {s[0]:.1f}s, max {s[-1]:.1f}s) from a free "
                f"trial slot to the trial's first training step, over {len(s)} trial(s)")

    def phase_summary(self) -> str | None:
        """The median of each start phase (where the start's time goes), over the trial runs that reported them."""
        if not self.start_phases:
            return None
        names = list(dict.fromkeys(k for phases in self.start_phases for k in phases))
        medians = {k: statistics.median(p.get(k, 0.0) for p in self.start_phases) for k in names}
        return (f"trial start phases, median s over {len(self.start_phases)}: "
                + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in medians.items()))

    def _time_left(self, elapsed: float, done: int) -> str:
        """Remaining epochs (trials not ended x the ended ones' average epochs, less what the unended
        have run) at the rate so far; none before a trial has ended."""
        if done == 0 or self.epochs_run == 0:
            return "time left: estimated once a trial has ended"
        per_trial = self.ended_epochs / done
        unended = self.epochs_run - self.ended_epochs
        left = max(0.0, (self.total - done) * per_trial - unended) * elapsed / self.epochs_run
        return f"about {_clock(left)} left (at {self.epochs_run / elapsed * 60:.1f} epochs/min)"

    def _render(self) -> None:
        self._last_render = time.perf_counter()
        lines = self.status_lines()
        if not self.live:
            self.echo(" | ".join(line.strip() for line in lines))
            return
        up = self._cleared()  # up over the last block, cleared to the end of the screen; then the new one
        stream = self._stream or sys.stdout
        stream.write(up + "\n".join(lines) + "\n")
        stream.flush()
        self._drawn = len(lines)

    def _say(self, trial, text: str, failure: bool = False) -> None:
        n = self.number.setdefault(trial.trial_id, len(self.number) + 1)
        line = f"[{_clock(time.perf_counter() - self.start)}] #{n:<3d} {text}"
        self._event(line)
        if failure and self.display == "summary":
            self._failure_shown(line, failure_of(trial).line)

    def _cleared(self) -> str:
        """What clears the live block from the screen (nothing outside a terminal): a line printed in its place
        stays, and the next render draws the block below it instead of over it."""
        if not (self.live and self._drawn):
            return ""
        up, self._drawn = f"\x1b[{self._drawn}F\x1b[J", 0
        return up

    def _said_now(self, text: str) -> None:
        """A line from a signal handler (Ctrl-C's answer): straight to the terminal, in the live block's place."""
        write_now(self._cleared() + text)

    def _failure_shown(self, line: str, error: str) -> None:
        """In the status display: a failure with an error not seen before is printed as it happens (above the
        live block); the same error again is counted in the status, not printed."""
        self.failed_with[error] = self.failed_with.get(error, 0) + 1
        if self.failed_with[error] > 1:
            return
        up = self._cleared()
        if up:
            stream = self._stream or sys.stdout
            stream.write(up)
            stream.flush()
        self.echo(line + "   (its repeats are counted in the status)")

    def _done_line(self) -> None:
        self._event(f"        {sum(self.counts.values())}/{self.total} done: {self.counts['finished']} finished, "
                    f"{self.counts['stopped']} stopped early, {self.counts['errored']} errored")

    def _event(self, line: str) -> None:
        if self._log is not None:
            self._log.write(line + "\n")
        if self.display == "events":
            self.echo(line)

    def _release_slot(self, trial) -> None:
        if self.holding.pop(trial.trial_id, None) is not None:
            self.free_since.append(time.time())

    def _ended(self, trial) -> None:
        self._release_slot(trial)
        self.waiting.discard(trial.trial_id)
        self.ended_epochs += self.epochs_of.get(trial.trial_id, 0)

    def _failure(self, trial) -> str:
        """'failed in setup: TunekitError: ...' (or 'in epoch k'): where this attempt failed, and with what."""
        last = self.attempt_epochs.get(trial.trial_id)
        where = "in setup" if last is None else f"in epoch {last + 1}"
        line = failure_of(trial).line
        kind, sep, message = line.partition(": ")
        return f"failed {where}: {kind.rsplit('.', 1)[-1]}{sep}{message}"

    def _config(self, trial) -> str:
        c = trial.config
        knobs = " ".join(f"{k}={_short(c[k])}" for k in SEARCH_KEYS if k != "model" and k in self.searched and k in c)
        return f"{c.get('model')} {knobs}".rstrip()


def _clock(seconds: float) -> str:
    s = int(seconds) if math.isfinite(seconds) else 0
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def start_phases_of(result: dict) -> dict[str, float]:
    """A result's ``start_phases`` (nested, or flattened as Ray's loggers write it: ``start_phases/data``)."""
    nested = result.get("start_phases")
    if isinstance(nested, dict):
        return {k: float(v) for k, v in nested.items()}
    prefix = "start_phases/"
    return {k[len(prefix):]: float(v) for k, v in result.items() if k.startswith(prefix)}
