"""ASHA as its paper defines it (Li et al., 2020): trials are *promoted* up the rungs, not merely
let through.

Ray's ``ASHAScheduler`` stops a trial at a rung only if it is worse than a percentile of the
results recorded there *before* it, so the first trials to reach each rung always go on,
however bad. Here a trial that reaches a rung waits (paused, its epoch checkpointed) until
it ranks in the top ``1/reduction_factor`` of the trials recorded at that rung; meanwhile its
slot starts a new trial. A waiting trial that can no longer make the cut, whatever the trials
still to come report, is stopped (so at most a few wait, each holding one checkpoint); when no
trial can still reach a rung, the best of it (at least one) goes on. On the demo space at 64px,
Ray's rule spent 48% of the epochs of running every trial to the end, this one 34%, both for the
same best error rate (benchmarks/RESULTS.md).

    scheduler = PromotingASHA(max_t=8, grace_period=1, reduction_factor=3, total_trials=16)
    tune.TuneConfig(scheduler=scheduler, metric="error_rate", mode="min", ...)

The rule lives in :class:`Ladder` (no Ray); :class:`PromotingASHA` applies it to Ray's trials.
Ray keeps no scheduler state across a resume, so a resumed search rebuilds the ladder from each
trial's progress.csv.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from .. import runfolder
from .ray_api import file_as_paused, has_reported, is_saving, mark_for_snapshot, stop_trial

CONTINUE, WAIT, STOP = "continue", "wait", "stop"


@dataclass
class _Entry:
    epoch: int = 0  # the last epoch it reported
    state: str = "pending"  # pending | running | waiting | done
    order: int = 0  # when it was added: breaks ties in favour of the earlier trial
    scores: dict[int, float] = field(default_factory=dict)  # rung -> value there (lower is better)


STATES = ("pending", "running", "waiting", "done")


class Ladder:
    """The rungs of one search and who stands where. Values are losses (lower is better).

    Indexed for searches of thousands of trials: each rung keeps its recorded (value, order) keys
    sorted (a trial's rank is a bisection), each state its set of trials, and the arrivals at a rung
    are counted once per change of the ladder, not once per question."""

    def __init__(self, max_t: int, grace_period: int, reduction_factor: float, total_trials: int) -> None:
        self.max_t, self.rf, self.total = max_t, reduction_factor, total_trials
        self.rungs: list[int] = []
        milestone = grace_period
        while milestone < max_t:
            self.rungs.append(int(milestone))
            milestone = math.ceil(milestone * reduction_factor)
        self.trials: dict[str, _Entry] = {}
        self.recorded: dict[int, list[tuple[float, int]]] = {r: [] for r in self.rungs}  # sorted keys per rung
        self.in_state: dict[str, dict[str, None]] = {s: {} for s in STATES}  # insertion-ordered sets
        self._version = 0  # bumped by every change; arrivals are cached per version
        self._arrivals: dict[int, int] = {}
        self._arrivals_version = -1

    # ---- what happens to trials -------------------------------------------------------------

    def add(self, trial_id: str) -> None:
        """A new trial, or one that comes back (a retry after a failure, a resumed search)."""
        entry = self.trials.get(trial_id)
        if entry is None:
            entry = self.trials[trial_id] = _Entry(order=len(self.trials))
            self.in_state["pending"][trial_id] = None
            self._version += 1
        if entry.state != "waiting":
            self._set(trial_id, "pending")

    def start(self, trial_id: str) -> None:
        self._set(trial_id, "running")

    def report(self, trial_id: str, epoch: int, value: float) -> str:
        """A trial's result after ``epoch``: CONTINUE, WAIT (pause at this rung) or STOP."""
        entry = self.trials[trial_id]
        entry.epoch = epoch
        self._version += 1
        self._set(trial_id, "running")
        if epoch >= self.max_t:
            self._set(trial_id, "done")
            return STOP
        if epoch not in self.rungs or epoch in entry.scores:
            return CONTINUE
        self._record(trial_id, epoch, value)
        if self.promotable(trial_id, epoch):
            return CONTINUE
        if self.hopeless(trial_id, epoch):
            self._set(trial_id, "done")
            return STOP
        self._set(trial_id, "waiting")
        return WAIT

    def promote(self, trial_id: str) -> None:
        self._set(trial_id, "pending")

    def finish(self, trial_id: str) -> None:
        """Ended: completed, stopped or errored (a retry comes back through :meth:`add`)."""
        self._set(trial_id, "done")

    def restore(self, trial_id: str, history: dict[int, float], finished: bool) -> None:
        """Replay a trial's reported values (epoch -> value) into the ladder (a resumed search)."""
        self.add(trial_id)
        entry = self.trials[trial_id]
        for epoch, value in sorted(history.items()):
            if epoch in self.rungs and epoch not in entry.scores:
                self._record(trial_id, epoch, value)
        entry.epoch = max(history, default=0)
        self._version += 1
        if finished:
            self._set(trial_id, "done")
        elif entry.epoch in entry.scores:  # it stopped at a rung: waiting, or about to go on
            self._set(trial_id, "waiting")

    # ---- the rule ---------------------------------------------------------------------------

    def rank(self, trial_id: str, rung: int) -> int:
        """How many trials recorded at ``rung`` are better (ties: the earlier trial is better)."""
        me = self.trials[trial_id]
        return bisect.bisect_left(self.recorded[rung], (me.scores[rung], me.order))

    def promotable(self, trial_id: str, rung: int) -> bool:
        """In the top 1/rf of the trials recorded at ``rung``; once no trial can still reach it,
        the best one at least."""
        top = math.floor(len(self.recorded[rung]) / self.rf)
        if self.arrivals(rung) == 0:
            top = max(1, top)
        return self.rank(trial_id, rung) < top

    def hopeless(self, trial_id: str, rung: int) -> bool:
        """It can never make the cut at ``rung``, whatever the trials still to come report
        (a better trial only ever pushes it down)."""
        most = len(self.recorded[rung]) + self.arrivals(rung)
        return self.rank(trial_id, rung) >= max(1, math.floor(most / self.rf))

    def arrivals(self, rung: int) -> int:
        """How many more trials could still record at ``rung``: not yet created, or alive below it."""
        if self._arrivals_version != self._version:
            self._arrivals, self._arrivals_version = {}, self._version
        if rung not in self._arrivals:
            alive = sum(1 for e in self.trials.values()
                        if rung not in e.scores and e.state != "done" and e.epoch < rung)
            self._arrivals[rung] = max(0, self.total - len(self.trials)) + alive
        return self._arrivals[rung]

    def idle(self) -> bool:
        """No trial is running or about to start (one chosen to run counts as running from then on,
        while Ray still starts its worker)."""
        return not self.in_state["running"] and not self.in_state["pending"]

    def waiting(self) -> list[tuple[str, int]]:
        """(trial, rung) of the trials waiting at a rung, highest rung first, best first."""
        out = [(tid, self.trials[tid].epoch) for tid in self.in_state["waiting"]]
        return sorted(out, key=lambda t: (-t[1], self.rank(*t)))

    def pending(self) -> list[str]:
        """The trials about to start or go on, oldest first."""
        return list(self.in_state["pending"])

    # ---- bookkeeping --------------------------------------------------------------------------

    def _set(self, trial_id: str, state: str) -> None:
        entry = self.trials[trial_id]
        if entry.state != state:
            del self.in_state[entry.state][trial_id]
            self.in_state[state][trial_id] = None
            entry.state = state
            self._version += 1

    def _record(self, trial_id: str, rung: int, value: float) -> None:
        entry = self.trials[trial_id]
        entry.scores[rung] = value if math.isfinite(value) else math.inf
        bisect.insort(self.recorded[rung], (entry.scores[rung], entry.order))
        self._version += 1


class PromotingASHA(FIFOScheduler):
    """Ray Tune scheduler applying :class:`Ladder` on ``time_attr`` (tunekit's ``epoch``).

    Metric and mode come from the TuneConfig. It holds no references out (Ray pickles it with the
    experiment and unpickles a copy on resume); trials' pauses show in their Ray status.
    """

    _supports_buffered_results = False  # decisions are made on every epoch's result (see ray_api)

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float, total_trials: int,
                 time_attr: str = "epoch") -> None:
        super().__init__()
        self.ladder = Ladder(max_t, grace_period, reduction_factor, total_trials)
        self.time_attr = time_attr
        self._mode: str | None = None
        self._trials: dict[str, Trial] = {}  # every trial Ray added, by id: no scan of Ray's list per decision

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def _loss(self, value: Any) -> float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            return math.inf
        return value if self._mode != "max" else -value

    # ---- Ray's hooks --------------------------------------------------------------------------

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._trials[trial.trial_id] = trial
        known = trial.trial_id in self.ladder.trials
        history = {} if known else _history(trial, self._metric)
        if not history:
            self.ladder.add(trial.trial_id)
            return
        # a resumed search: Ray kept no scheduler state, the trial folder did
        self.ladder.restore(trial.trial_id, {e: self._loss(v) for e, v in history.items()},
                            finished=trial.status in (Trial.TERMINATED, Trial.ERROR))
        if self.ladder.trials[trial.trial_id].state == "waiting" and trial.status == Trial.PENDING:
            # Ray requeues a paused trial as PENDING and starts every PENDING trial by itself; a
            # trial waiting at a rung goes on only when promoted (Ray files it by this status next)
            file_as_paused(trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if self.time_attr not in result:
            return TrialScheduler.CONTINUE
        epoch = int(result[self.time_attr])
        decision = self.ladder.report(trial.trial_id, epoch, self._loss(result.get(self._metric)))
        if self.ladder.in_state["waiting"]:
            self._stop_hopeless(tune_controller, skip=trial)
        return {CONTINUE: TrialScheduler.CONTINUE, WAIT: TrialScheduler.PAUSE}.get(decision, TrialScheduler.STOP)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        if trial.trial_id in self.ladder.trials:
            self.ladder.finish(trial.trial_id)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        self._stop_hopeless(tune_controller)
        waiting = self.ladder.waiting()
        for trial_id, rung in waiting:  # promotions first, highest rung first
            trial = self._trials.get(trial_id)
            if trial is not None and trial.status in (Trial.PAUSED, Trial.PENDING) \
                    and self.ladder.promotable(trial_id, rung):
                self.ladder.promote(trial_id)
                return self._started(trial)
        for trial_id in self.ladder.pending():
            trial = self._trials.get(trial_id)
            if trial is not None and trial.status in (Trial.PENDING, Trial.PAUSED):
                return self._started(trial)
        for trial_id in list(self.ladder.in_state["running"]):
            trial = self._trials.get(trial_id)
            if trial is not None and trial.status == Trial.PAUSED:
                # paused without this scheduler's say (Ray replays decisions it had queued before a
                # resume): it goes on, or nothing would ever restart it (a hang seen once in CI)
                return self._started(trial)
        if waiting and self.ladder.idle():
            # Nothing runs and nothing can start: a searcher with a concurrency limit (max_concurrent)
            # counts waiting trials as running, so no rival will come. The best waiting one goes on.
            trial = self._trials.get(waiting[0][0])
            if trial is not None and trial.status in (Trial.PAUSED, Trial.PENDING):
                self.ladder.promote(trial.trial_id)
                return self._started(trial)
        return None

    def debug_string(self) -> str:
        return f"Promoting ASHA on {self.time_attr}: rungs {self.ladder.rungs}, max {self.ladder.max_t}"

    # ---- helpers --------------------------------------------------------------------------------

    def _started(self, trial: Trial) -> Trial:
        self.ladder.start(trial.trial_id)
        return trial

    def _stop_hopeless(self, tune_controller, skip: Trial | None = None) -> None:
        """Stop the waiting trials that can no longer make the cut (their checkpoints go with them)."""
        for trial_id in list(self.ladder.in_state["waiting"]):
            trial = self._trials.get(trial_id)
            if trial is None or trial is skip:
                continue
            if self.ladder.hopeless(trial_id, self.ladder.trials[trial_id].epoch) and (
                    trial.status in (Trial.PAUSED, Trial.PENDING) or is_saving(trial)):
                self.ladder.finish(trial_id)
                stop_trial(tune_controller, trial)
                # Ray marks a stopped trial for its next state snapshot only when it had a worker; a
                # paused one would stay PAUSED in the saved state (and look unfinished to a resume).
                mark_for_snapshot(tune_controller, trial)


def _history(trial: Trial, metric: str | None) -> dict[int, float]:
    """epoch -> metric from the trial's progress.csv (empty for a new trial)."""
    if not metric or not has_reported(trial):  # a new trial has no folder yet
        return {}
    return runfolder.history(Path(str(trial.path)), metric)  # the run folder (a cloud URI is not a file)
