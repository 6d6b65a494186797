"""Trial failures as the search meets them: a configuration error is not retried, and a search whose first
trials all fail the same way is stopped instead of starting every other trial to fail alike.

    verdict = Verdict(slots=2)
    scheduler = Scheduler(verdict)          # or PromotingASHA(..., verdict=verdict): records each failure
    tune.RunConfig(stop=Doomed(verdict))    # ends the search once the verdict is in

**Not retried**: an error raised by tunekit's own checks inside a trial (``TunekitError``: a batch larger
than the data, weights that do not fit the model) fails every attempt alike; Ray retries any failure
(``max_failures``), so the scheduler ends such a trial at its first failure. Other errors (a lost node, a
CUDA fault in one trial, a user's model that raises) keep their retries.

**A doomed search**: once the first ``k`` trials to end have all failed with the same error (the same last
line of the traceback: type and message, whatever raised it) before any trial reported an epoch, the
search stops: trials not started stay so, and the usual summary groups the failure. ``k`` is the
search's slots (the trials it runs at once), at least 2 and at most 5: every trial of the first slot-full
failed alike, or five did. Ray's own failures (``ray.*``: a lost node, a dead worker) never count: they
pass on a retry elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler
from ray.tune.stopper import Stopper

from .ray_api import give_up

CONFIG_ERROR = "tunekit.errors.TunekitError"  # how a traceback's last line names tunekit's own checks
DOOMED_AFTER = (2, 5)  # the first k trials to end, k = the search's slots within these bounds


def error_line(trial: Any) -> str:
    """The last line of a failed trial's traceback (Ray's error.txt): the error's type and message."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except (OSError, TypeError):
        return "unknown error"
    return (lines[-1].strip() if lines else "unknown error")[:300]


def is_config_error(line: str) -> bool:
    return line.startswith(CONFIG_ERROR)


class Verdict:
    """What the failures so far say of the search: ``doomed`` (the error line) once its first trials to end
    all failed alike before any trial reported an epoch. The scheduler records; the stopper reads."""

    def __init__(self, slots: int = 1) -> None:
        self.needed = min(max(DOOMED_AFTER[0], slots), DOOMED_AFTER[1])
        self.first: list[str] = []  # the error lines of the first trials to end, all failed so far
        self.reported = False  # a trial reported an epoch: the search can succeed
        self.doomed: str | None = None

    def result(self) -> None:
        self.reported = True

    def ended(self, line: str | None) -> None:
        """A trial ended for good: failed with ``line`` (after its retries, or not retried), or not (None)."""
        if self.reported or self.doomed is not None:
            return
        if line is None:
            self.reported = True  # ended without failing: not a search that cannot succeed
            return
        if line.startswith("ray."):
            return  # Ray's own failure (a node, a worker): it passes on a retry elsewhere
        self.first.append(line)
        if len(self.first) >= self.needed and len(set(self.first)) == 1:
            self.doomed = line


class Doomed(Stopper):
    """Ray's experiment stopper: the whole search ends once its verdict says it cannot succeed."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.verdict.doomed is not None


class Failures:
    """The scheduler side: each failure recorded with the verdict; a retried configuration error given up.
    A mixin for Ray schedulers (``Scheduler``, ``tuner.asha.PromotingASHA``), whose hooks call these."""

    verdict: Verdict | None

    def _failed(self, tune_controller, trial: Any) -> None:
        """Ray's on_trial_error: before a retry (Ray then re-adds the trial) or for good."""
        if self.verdict is not None and not trial.should_recover():
            self.verdict.ended(error_line(trial))

    def _retried(self, tune_controller, trial: Any) -> bool:
        """Ray's on_trial_add for a trial that failed: False where it is not to be retried, and was ended."""
        line = error_line(trial)
        if not is_config_error(line):
            return True
        give_up(tune_controller, trial)
        if self.verdict is not None:
            self.verdict.ended(line)
        return False


class Scheduler(Failures, FIFOScheduler):
    """Ray's first-in-first-out scheduler with the failure handling above (a search without ASHA)."""

    def __init__(self, verdict: Verdict | None = None) -> None:
        super().__init__()
        self.verdict = verdict
        self._known: set[str] = set()

    def on_trial_add(self, tune_controller, trial) -> None:
        if trial.trial_id in self._known and trial.run_metadata.num_failures:
            self._retried(tune_controller, trial)
        self._known.add(trial.trial_id)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._failed(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.verdict is not None:
            self.verdict.result()
        return FIFOScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if self.verdict is not None:
            self.verdict.ended(None)
