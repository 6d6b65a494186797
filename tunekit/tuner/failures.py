"""Trial failures as the search meets them: a configuration error is not retried, and a search whose first
trials all fail the same way is stopped instead of starting every other trial to fail alike.

    verdict = Verdict(slots=2, searched={"model", "lr"})
    scheduler = Scheduler(verdict, max_running=2)   # or PromotingASHA(..., verdict=verdict): records each failure
    tune.RunConfig(stop=Doomed(verdict, run_dir))   # ends the search once the verdict is in, and records why

**Not retried**: an error raised by tunekit's own checks inside a trial (``TunekitError``: a batch larger than
the data, weights that do not fit the model) fails every attempt alike; Ray retries any failure
(``max_failures``), so the scheduler ends such a trial at its first failure. Other errors (a lost node, a CUDA
fault in one trial, a user's model that raises) keep their retries.

**A doomed search**: once the search's first slot-full (the trials it runs at once, at least 2) has ended, every
one of them failed with the same error (its type and message, whatever raised it), and no trial reported an
epoch, the search stops: trials not started stay so, the stopper records it in the run folder
(``tunekit_stopped.json``), and the usual summary groups the failure. Failures that all drew one value of a
key the space varies (the first model of a grid, which cannot be built) may be that value's fault: the next
slot-full runs, and the search is doomed once the failures alike differ in every searched key. A failure counts
once it is final (after its retries). With the search's slots kept (``has_room``: on one machine with fixed
shares, or under a limit) a retry runs before any new trial, and until the verdict is in no trial beyond the
slot-full being judged starts (``Verdict.holds_back``), so a slot freed by the first failure is not given to a
trial the others may show to be doomed. On a cluster (and with ``gpus_per_trial = "auto"``), whose slots Ray's
resources decide, nothing holds back: the verdict is in once the first slot-full has ended, whatever else runs,
and a retry waits behind the trials Ray has queued (up to 200), so a verdict that needs retries comes late there.
Ray's own failures (a lost node, a dead worker: ``RayActorError``) never count: they pass on a retry elsewhere. A
resumed search's verdict (Ray pickled it blank, at the start) counts the restored trials that trained or ended,
and its stopper (restored apart, from Ray's experiment snapshot) is given the scheduler's verdict again.

The error is read from Ray's pickle of it (``Trial.pickled_error_file``: the exception the trial raised, kept
by Ray for its result grid), else from the last line of error.txt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler
from ray.tune.stopper import Stopper

from ..errors import TunekitError
from .ray_api import give_up, has_reported, stopper_of

DOOMED_AFTER = 2  # failures alike, at least: the first slot-full of a search of one slot is 2 trials


@dataclass(frozen=True)
class Failure:
    """What a failed trial raised: its type and message, as one line, and what kind of failure it is."""

    line: str  # "tunekit.errors.TunekitError: batch_size 64 is larger ..."
    config: bool  # a TunekitError: tunekit's own checks, the same in every attempt
    ray: bool  # Ray's own failure (a worker or node lost): passes on a retry elsewhere


def failure_of(trial: Any) -> Failure:
    """The trial's last failure, from Ray's pickle of the exception (else the last line of error.txt)."""
    exc = _pickled(getattr(trial, "pickled_error_file", None))
    if exc is not None:
        from ray.exceptions import RayActorError, RayTaskError

        cause = exc.as_instanceof_cause() if isinstance(exc, RayTaskError) else exc
        inner = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else cause
        kind = type(inner if inner is not None else cause)
        message = str(inner if inner is not None else cause).strip().splitlines()
        line = f"{kind.__module__}.{kind.__qualname__}: {message[0] if message else ''}"[:300]
        return Failure(line, isinstance(inner, TunekitError) or isinstance(cause, TunekitError),
                       isinstance(cause, RayActorError) or isinstance(inner, RayActorError))
    line = error_line(trial)
    return Failure(line, line.startswith("tunekit.errors.TunekitError"), line.startswith("ray."))


def _pickled(path: Any) -> BaseException | None:
    if not path:
        return None
    try:
        import ray.cloudpickle as pickle

        with open(path, "rb") as f:
            exc = pickle.load(f)  # Ray's own pickle of this search's trial's exception (not a foreign file)
    except Exception:  # noqa: BLE001 - unreadable or of a class gone: the text is the fallback
        return None
    return exc if isinstance(exc, BaseException) else None


def error_line(trial: Any) -> str:
    """The last line of a failed trial's traceback (Ray's error.txt): the error's type and message."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except (OSError, TypeError):
        return "unknown error"
    return (lines[-1].strip() if lines else "unknown error")[:300]


class Verdict:
    """What the failures so far say of the search: ``doomed`` (the error) once its first slot-full has ended,
    every trial of it failed alike and none trained an epoch. The scheduler records; the stopper reads.

    ``slots``: the trials the search runs at once (the first slot-full: at least 2). ``searched``: the keys the
    space varies; failures that all drew one value of a key the space varies (the first model of a grid) may be
    that value's fault, not the search's, so the verdict waits until the failures differ in every such key.
    ``slotted``: the scheduler keeps the slots and asks :meth:`holds_back`, so nothing else runs beside the
    trials the verdict waits on; on a cluster (Ray's resources decide) trials go on starting, and the verdict
    is in once the first slot-full has ended, whatever else runs."""

    def __init__(self, slots: int = 1, searched: Iterable[str] = (), slotted: bool = True) -> None:
        self.slots = max(DOOMED_AFTER, int(slots))
        self.searched = tuple(sorted(searched))
        self.slotted = slotted
        self.first: list[str] = []  # the error lines of the trials failed so far, while all failed alike
        self.drawn: list[tuple[str, ...]] = []  # each failed trial's searched values, as text
        self.reported = False  # a trial reported an epoch: the search can succeed
        self.doomed: str | None = None
        self.made = 0  # trials added (a retry is the same trial)
        self.settled = 0  # trials ended for good, whatever the way
        self._open_first: set[str] = set()  # trials of the first slot-full not ended yet
        self._seen: set[str] = set()
        self._round = self.slots  # trials made by the end of this slot-full (the next one's when it ends undecided)

    def __setstate__(self, state: dict) -> None:
        """A verdict pickled by an earlier tunekit (a search it started, resumed by this one)."""
        fresh = Verdict(state.get("slots", 1))
        self.__dict__.update({**fresh.__dict__, **state})

    @property
    def undecided(self) -> bool:
        return not self.reported and self.doomed is None and len(set(self.first)) <= 1

    def result(self) -> None:
        self.reported = True

    def added(self, trial_id: str, trained: bool = False) -> None:
        """A trial the search made (once, whatever its retries); ``trained``: a resumed search's trial that had
        reported an epoch, or ended, before the interruption (the search can succeed)."""
        if trained:
            self.reported = True
        if trial_id in self._seen:
            return
        self._seen.add(trial_id)
        self.made += 1
        if self.made <= self.slots:
            self._open_first.add(trial_id)

    def holds_back(self) -> bool:
        """Whether a new trial should wait for the verdict: the first slot-full is made, none has trained an
        epoch, every failure so far was alike, and a trial made is still to end. Without it, a slot freed by
        the first failure could start a trial before the second failure decides that none should start."""
        return self.slotted and self.undecided and self.made >= self._round and self.settled < self.made

    def ended(self, trial_id: str, failure: Failure | None, config: dict | None = None) -> None:
        """A trial ended for good: with ``failure`` (after its retries, or not retried), or without one."""
        self.settled += 1
        self._open_first.discard(trial_id)
        if not self.undecided:
            return
        if failure is None:
            self.reported = True  # ended without failing: not a search that cannot succeed
            return
        if not failure.ray:  # Ray's own failure (a node, a worker) passes on a retry elsewhere: not counted
            self.first.append(failure.line)
            self.drawn.append(tuple(repr((config or {}).get(key)) for key in self.searched))
            settled = self.settled >= self.made if self.slotted else not self._open_first
            varied = all(len({values[i] for values in self.drawn}) > 1 for i in range(len(self.searched)))
            if len(self.first) >= DOOMED_AFTER and len(set(self.first)) == 1 and settled and varied:
                self.doomed = failure.line
                return
        if self.settled >= max(self.made, self._round):  # a slot-full ended undecided: the next one starts
            self._round = self.made + self.slots


class Doomed(Stopper):
    """Ray's experiment stopper: the whole search ends once its verdict says it cannot succeed, and the run
    folder records why (``record``: its ``tunekit_stopped.json``; a re-run reports it, --resume refuses it)."""

    def __init__(self, verdict: Verdict, record: Path | None = None) -> None:
        self.verdict, self.record = verdict, record
        self.written = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        if self.verdict.doomed is None:
            return False
        if self.record is not None and not self.written:
            self.written = True
            try:  # (a resumed search's stopper holds the path of its first run: gone if the folder moved)
                self.record.write_text(json.dumps({
                    "why": "its first trials all failed with the same error before any trained an epoch",
                    "error": self.verdict.doomed, "failed": len(self.verdict.first)}, indent=2))
            except OSError:
                pass  # the search still stops; its summary says why
        return True


class Failures:
    """The scheduler side: each trial made and each failure recorded with the verdict; a retried configuration
    error given up. A mixin for Ray schedulers (``Scheduler``, ``tuner.asha.PromotingASHA``), whose hooks call
    these."""

    verdict: Verdict | None

    def _made(self, tune_controller, trial: Any) -> None:
        """Ray's on_trial_add: a new trial, a retry, or a resumed search's trial (one that trained or ended
        says the search can succeed). A resumed search's stopper is Ray's snapshot of it, with a verdict of its
        own: it reads this one again."""
        if self.verdict is None:
            return
        stopper = stopper_of(tune_controller)
        if isinstance(stopper, Doomed) and stopper.verdict is not self.verdict:
            stopper.verdict = self.verdict
        self.verdict.added(trial.trial_id, has_reported(trial) or trial.status == "TERMINATED")

    def _failed(self, tune_controller, trial: Any) -> None:
        """Ray's on_trial_error: before a retry (Ray then re-adds the trial) or for good."""
        if self.verdict is not None and not trial.should_recover():
            self.verdict.ended(trial.trial_id, failure_of(trial), trial.config)

    def _completed(self, trial: Any) -> None:
        if self.verdict is not None:
            self.verdict.ended(trial.trial_id, None)

    def _retried(self, tune_controller, trial: Any) -> bool:
        """Ray's on_trial_add for a trial that failed: False where it is not to be retried, and was ended."""
        failure = failure_of(trial)
        if not failure.config:
            return True
        give_up(tune_controller, trial)
        if self.verdict is not None:
            self.verdict.ended(trial.trial_id, failure, trial.config)
        return False


class Scheduler(Failures, FIFOScheduler):
    """Ray's first-in-first-out scheduler with the failure handling above, for a search without ASHA: a retry
    runs before any trial not started (Ray requeues it behind every trial it has pending); with ``max_running``
    it keeps the search's slots (``has_room``, asked by ``tuner.slots``' searchers)."""

    def __init__(self, verdict: Verdict | None = None, max_running: int | None = None) -> None:
        super().__init__()
        self.verdict, self.max_running = verdict, max_running
        self._live: set[str] = set()  # trials added and not ended: running or about to
        self._known: set[str] = set()
        self._retrying: dict[str, Any] = {}  # failed trials Ray requeued, by id, oldest first

    def __setstate__(self, state: dict) -> None:
        """A scheduler pickled by an earlier tunekit (a search it started, resumed by this one)."""
        self.__dict__.update({"_retrying": {}, **state})

    def has_room(self) -> bool:
        if self.max_running is None:
            return True
        if self.verdict is not None and self.verdict.holds_back():
            return False
        return len(self._live) < self.max_running

    def on_trial_add(self, tune_controller, trial) -> None:
        retry = trial.trial_id in self._known and trial.run_metadata.num_failures
        self._known.add(trial.trial_id)
        self._made(tune_controller, trial)
        if retry:
            if not self._retried(tune_controller, trial):
                return
            self._retrying[trial.trial_id] = trial
        if trial.status not in ("TERMINATED", "ERROR"):
            self._live.add(trial.trial_id)

    def choose_trial_to_run(self, tune_controller) -> Any:
        for trial_id, trial in list(self._retrying.items()):
            if trial.status == "PENDING":
                return trial
            del self._retrying[trial_id]  # started, or ended
        return super().choose_trial_to_run(tune_controller)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._failed(tune_controller, trial)
        self._live.discard(trial.trial_id)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.verdict is not None:
            self.verdict.result()
        return FIFOScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._live.discard(trial.trial_id)
        self._completed(trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._live.discard(trial.trial_id)
