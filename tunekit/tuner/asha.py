"""ASHA as its paper defines it (Li et al., MLSys 2020, Algorithm 2): trials are *promoted* up the rungs,
not merely let through.

Ray's ``ASHAScheduler`` stops a trial at a rung only if it is worse than a percentile of the
results recorded there *before* it, so the first trials to reach each rung always go on,
however bad. Here a trial that reaches a rung waits (paused, its epoch checkpointed) until
it ranks in the top ``1/reduction_factor`` of the trials recorded at that rung; meanwhile its
slot runs another trial: a free slot goes first to a waiting trial that has earned a promotion
(the highest rung first, the best first), else to a new trial, as the paper's ``get_job``. A waiting
trial that can no longer make the cut, whatever the trials still to come report, is stopped (so at
most a few wait, each holding one checkpoint); when no trial can still reach a rung, the best of it
(at least one) goes on. On the demo space at 64px, Ray's rule spent 48% of the epochs of running every
trial to the end, this one 34%, both for the same best error rate (benchmarks/RESULTS.md).

    scheduler = PromotingASHA(max_t=8, grace_period=1, reduction_factor=3, total_trials=16, max_running=2)
    tune.TuneConfig(scheduler=scheduler, search_alg=SlotGenerator(scheduler), metric="error_rate", mode="min")

Limits and faults (each checked by ``benchmarks/asha_sim.py`` against an independent reference of the rule):

- A limit on the trials at once (``--num-gpus`` below what Ray counts, ``max_concurrent``, and on one
  machine the plan's own slots) is kept here, counting the trials that run or are about to: a trial
  waiting at a rung holds no slot (``has_room``; the searchers of ``tuner.slots`` ask it). Ray's own
  limiters count waiting trials, and a search whose slots all held waiting trials ran 1.7-2.2x the
  epochs of the paper's rule in the simulator (benchmarks/RESULTS.md).
- A trial that fails and is retried keeps its place (trials let past a rung first, then by age) and, if
  it failed while waiting at a rung, waits there still; a repeated rung epoch keeps its first value.
- Ray keeps no scheduler state across a resume: the ladder is rebuilt from each trial's progress.csv and
  the run folder's record of promotions (``asha_promotions.jsonl``), so a trial promoted before the
  driver died stays promoted.
- Rungs: ``ceil(grace * rf**k)`` (Ray's rounding), without a top rung so near max_t that max_t is the
  paper's top rung itself (``rungs_for``).

The rule lives in :class:`Ladder` (no Ray); :class:`PromotingASHA` applies it to Ray's trials.
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
from .failures import Failures, Verdict
from .ray_api import file_as_paused, has_reported, is_saving, mark_for_snapshot, stop_trial

CONTINUE, WAIT, STOP = "continue", "wait", "stop"


@dataclass
class _Entry:
    epoch: int = 0  # the last epoch it reported
    state: str = "pending"  # pending | running | waiting | done
    order: int = 0  # when it was added: its age, and ties go to the earlier trial
    scores: dict[int, float] = field(default_factory=dict)  # rung -> value there (lower is better)
    passed: int = 0  # the highest rung it was let past (promoted, or in the top at once)

    def stands_at_rung(self) -> bool:
        """Its last epoch is a rung it recorded and was not let past: it waits there."""
        return self.epoch in self.scores and self.epoch > self.passed


STATES = ("pending", "running", "waiting", "done")


def rungs_for(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The epochs at which ASHA ranks trials: ``ceil(grace * rf**k)`` below ``max_t`` (Ray's own
    rounding, also for a fractional rf), without the top one where ``max_t < rung * sqrt(rf)``.

    Such a rung is, in the paper's terms, the top rung R itself, which tunekit trains to ``max_t``: max_t
    is nearer to it than to the next rung up (geometrically), and a cut there would stop (rf-1)/rf of
    the trials that reached it to save under (sqrt(rf)-1) * rung epochs each (max_t 10, rf 3: a rung at
    9 would stop two thirds of the trials one epoch short)."""
    rungs: list[int] = []
    k = 0
    while (rung := math.ceil(grace_period * reduction_factor ** k - 1e-9)) < max_t:
        if not rungs or rung > rungs[-1]:
            rungs.append(int(rung))
        k += 1
    if rungs and max_t < rungs[-1] * math.sqrt(reduction_factor):
        rungs.pop()
    return rungs


class Ladder:
    """The rungs of one search and who stands where. Values are losses (lower is better).

    Faults keep its decisions: a trial that fails and comes back (a retry) keeps its place (trials let
    past a rung first, then by age) and, if it failed while waiting at a rung, still waits there;
    :meth:`restore` takes the rungs each trial was let past, so a resumed search does not re-judge a
    promotion.

    Indexed for searches of thousands of trials: each rung keeps its recorded (value, order) keys
    sorted (a trial's rank is a bisection), each state its set of trials, and what depends on the whole
    ladder (arrivals, the waiting order, the pending order) is computed once per change of the ladder."""

    def __init__(self, max_t: int, grace_period: int, reduction_factor: float, total_trials: int) -> None:
        self.max_t, self.rf, self.total = max_t, reduction_factor, total_trials
        self.rungs = rungs_for(max_t, grace_period, reduction_factor)
        self.trials: dict[str, _Entry] = {}
        self.recorded: dict[int, list[tuple[float, int]]] = {r: [] for r in self.rungs}  # sorted keys per rung
        self.in_state: dict[str, dict[str, None]] = {s: {} for s in STATES}  # insertion-ordered sets
        self.passes: list[tuple[str, int]] = []  # (trial, rung) let past, in order: for the run folder's record
        self._version = 0  # bumped by every change; what depends on the whole ladder is cached per version
        self._cache: dict[str, Any] = {}
        self._cache_version = -1

    def __setstate__(self, state: dict) -> None:
        """A ladder pickled by an earlier tunekit (a search it started, resumed by this one)."""
        self.__dict__.update({"passes": [], "_cache": {}, "_cache_version": -1, **state})

    # ---- what happens to trials -------------------------------------------------------------

    def add(self, trial_id: str) -> None:
        """A new trial, or one that comes back (a retry after a failure): pending, or waiting again
        if it stands at a rung it was not let past (it failed while waiting there)."""
        entry = self.trials.get(trial_id)
        if entry is None:
            entry = self.trials[trial_id] = _Entry(order=len(self.trials))
            self.in_state["pending"][trial_id] = None
            self._version += 1
        self._set(trial_id, "waiting" if entry.stands_at_rung() else "pending")

    def start(self, trial_id: str) -> None:
        self._set(trial_id, "running")

    def report(self, trial_id: str, epoch: int, value: float, short: bool = True) -> str:
        """A trial's result after ``epoch``: CONTINUE, WAIT (pause at this rung) or STOP. A rung it
        recorded before (a retry that repeats the epoch) keeps the first value and is judged again,
        unless the trial was let past it. ``short``: no slot is free but the one this trial holds, so a
        waiting trial that earned a promotion before it takes that slot (the paper's get_job)."""
        entry = self.trials[trial_id]
        entry.epoch = epoch
        self._version += 1
        self._set(trial_id, "running")
        if epoch >= self.max_t:
            self._set(trial_id, "done")
            return STOP
        if epoch not in self.rungs or entry.passed >= epoch:
            return CONTINUE
        if epoch not in entry.scores:
            self._record(trial_id, epoch, value)
        if self.promotable(trial_id, epoch) and not (short and self._behind(trial_id, epoch)):
            self._pass(trial_id, epoch)
            return CONTINUE
        if self.hopeless(trial_id, epoch):
            self._set(trial_id, "done")
            return STOP
        self._set(trial_id, "waiting")
        return WAIT

    def promote(self, trial_id: str) -> None:
        self._pass(trial_id, self.trials[trial_id].epoch)
        self._set(trial_id, "pending")

    def finish(self, trial_id: str) -> None:
        """Ended: completed, stopped or errored (a retry comes back through :meth:`add`)."""
        self._set(trial_id, "done")

    def restore(self, trial_id: str, history: dict[int, float], finished: bool, passed: int = 0) -> None:
        """Replay a trial's reported values (epoch -> value) into the ladder (a resumed search);
        ``passed``: the highest rung it had been let past (the run folder's record of promotions)."""
        entry = self.trials.get(trial_id) or _Entry(order=len(self.trials))
        if trial_id not in self.trials:
            self.trials[trial_id] = entry
            self.in_state["pending"][trial_id] = None
        for epoch, value in sorted(history.items()):
            if epoch in self.rungs and epoch not in entry.scores:
                self._record(trial_id, epoch, value)
        entry.epoch = max(history, default=0)
        # every rung below its last epoch was passed (it trained beyond it)
        entry.passed = max([passed, entry.passed] + [r for r in entry.scores if r < entry.epoch])
        self._version += 1
        self._set(trial_id, "done" if finished else "waiting" if entry.stands_at_rung() else "pending")

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
        arrivals = self._cached("arrivals", dict)  # rung -> count, filled as asked
        if rung not in arrivals:
            alive = sum(1 for e in self.trials.values()
                        if rung not in e.scores and e.state != "done" and e.epoch < rung)
            arrivals[rung] = max(0, self.total - len(self.trials)) + alive
        return arrivals[rung]

    def no_more_trials(self) -> None:
        """The searcher is finished: the trials there are are all there will be (the end rule's arrivals)."""
        if self.total != len(self.trials):
            self.total = len(self.trials)
            self._version += 1

    def idle(self) -> bool:
        """No trial is running or about to start (one chosen to run counts as running from then on,
        while Ray still starts its worker)."""
        return not self.in_state["running"] and not self.in_state["pending"]

    def occupied(self) -> int:
        """The trials that hold a slot or are about to: running, or pending (a trial waiting at a rung
        holds none)."""
        return len(self.in_state["running"]) + len(self.in_state["pending"])

    def waiting(self) -> list[tuple[str, int]]:
        """(trial, rung) of the trials waiting at a rung, highest rung first, best first."""
        return self._cached("waiting", lambda: sorted(
            ((tid, self.trials[tid].epoch) for tid in self.in_state["waiting"]), key=lambda t: (-t[1], self.rank(*t))))

    def next_promotion(self) -> tuple[str, int] | None:
        """The waiting trial a free slot goes to (highest rung first, best first), if any has earned one."""
        best_at: dict[int, str] = {}
        for trial_id, rung in self.waiting():
            best_at.setdefault(rung, trial_id)  # the best of a rung: if it is not promotable, none is
        return next(((t, r) for r, t in best_at.items() if self.promotable(t, r)), None)

    def _behind(self, trial_id: str, rung: int) -> bool:
        """A waiting trial has earned the slot ``trial_id`` frees at ``rung`` before it (a higher rung, or a
        better one at this rung): the paper's free slot goes to that one, and this one waits its turn."""
        first = self.next_promotion()
        return first is not None and (first[1] > rung or (first[1] == rung and self.rank(first[0], rung)
                                                          < self.rank(trial_id, rung)))

    def pending(self) -> list[str]:
        """The trials about to start or go on: those let past a rung first (a promotion, or a retry
        of a trial that was), then by age (a retry before the trials created after it)."""
        return self._cached("pending", lambda: sorted(
            self.in_state["pending"], key=lambda t: (self.trials[t].passed == 0, self.trials[t].order)))

    # ---- bookkeeping --------------------------------------------------------------------------

    def _cached(self, name: str, make: Any) -> Any:
        if self._cache_version != self._version:
            self._cache, self._cache_version = {}, self._version
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    def _pass(self, trial_id: str, rung: int) -> None:
        self.trials[trial_id].passed = rung
        self.passes.append((trial_id, rung))

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


class PromotingASHA(Failures, FIFOScheduler):
    """Ray Tune scheduler applying :class:`Ladder` on ``time_attr`` (tunekit's ``epoch``).

    ``max_running``: the search's trial slots (``--num-gpus`` below what Ray counts, ``max_concurrent``);
    a trial waiting at a rung holds none of them. The searcher asks :meth:`has_room` before it adds a
    trial (``tuner.slots``), so a free slot goes to a trial that has earned a promotion, else to a new
    one, as the paper's rule; Ray's own limits count a waiting trial as running and undo the pruning.
    ``record``: the run folder's file of the rungs each trial was let past, appended as it happens and
    read back by a resumed search (Ray keeps no scheduler state). ``verdict``: failures are handled as
    ``tuner.failures`` says (a configuration error not retried; a doomed search found).

    Metric and mode come from the TuneConfig. It holds no references out but the searcher's (Ray pickles
    both with the experiment, in one pickle, and unpickles them together on resume).
    """

    _supports_buffered_results = False  # decisions are made on every epoch's result (see ray_api)

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float, total_trials: int,
                 time_attr: str = "epoch", max_running: int | None = None, record: Path | None = None,
                 verdict: Verdict | None = None) -> None:
        super().__init__()
        self.verdict = verdict
        self.ladder = Ladder(max_t, grace_period, reduction_factor, total_trials)
        self.time_attr, self.max_running, self.record = time_attr, max_running, record
        self._mode: str | None = None
        self._trials: dict[str, Trial] = {}  # every trial Ray added, by id: no scan of Ray's list per decision
        self._passed: dict[str, int] | None = None  # the record as a resume read it
        self._checked = -1  # the ladder's version when hopeless waiting trials were last looked for

    def __setstate__(self, state: dict) -> None:
        """A scheduler pickled by an earlier tunekit (a search it started, resumed by this one)."""
        defaults = {"max_running": None, "record": None, "verdict": None, "_passed": None, "_checked": -1}
        self.__dict__.update({**defaults, **state})

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

    def has_room(self) -> bool:
        """Whether the searcher may add a trial now: a slot is free and no waiting trial has earned it."""
        if self.max_running is None:
            return True  # Ray's resources are the only limit (and the scheduler's choice goes first)
        held = self.verdict is not None and self.verdict.holds_back()
        return not held and self.ladder.occupied() < self.max_running and self.ladder.next_promotion() is None

    # ---- Ray's hooks --------------------------------------------------------------------------

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._trials[trial.trial_id] = trial
        self._made(tune_controller, trial)
        known = trial.trial_id in self.ladder.trials
        if known and trial.run_metadata.num_failures and not self._retried(tune_controller, trial):
            return  # a configuration error: ended, not retried
        ended = trial.status in (Trial.TERMINATED, Trial.ERROR)
        history = {} if known else self._history(trial)
        if history or ended:  # a resumed search: Ray kept no scheduler state, the run folder did
            self.ladder.restore(trial.trial_id, {e: self._loss(v) for e, v in history.items()}, finished=ended,
                                passed=self._passes_recorded().get(trial.trial_id, 0))
        else:  # new, or a retry (which keeps its place, and its wait at a rung)
            self.ladder.add(trial.trial_id)
        if self.ladder.trials[trial.trial_id].state == "waiting" and trial.status == Trial.PENDING:
            # Ray requeues a paused or failed trial as PENDING and starts every PENDING trial by itself;
            # a trial waiting at a rung goes on only when promoted
            file_as_paused(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if self.time_attr not in result:
            return TrialScheduler.CONTINUE
        if self.verdict is not None:
            self.verdict.result()
        epoch = int(result[self.time_attr])
        short = self.max_running is not None and self.ladder.occupied() >= self.max_running  # no other slot free
        decision = self.ladder.report(trial.trial_id, epoch, self._loss(result.get(self._metric)), short)
        self._save_passes()
        if self.ladder.in_state["waiting"]:
            self._stop_hopeless(tune_controller, skip=trial)
        return {CONTINUE: TrialScheduler.CONTINUE, WAIT: TrialScheduler.PAUSE}.get(decision, TrialScheduler.STOP)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._completed(trial)
        self.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._failed(tune_controller, trial)
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        if trial.trial_id in self.ladder.trials:
            self.ladder.finish(trial.trial_id)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        search = getattr(tune_controller, "search_alg", None)  # (the controller's public accessor for schedulers)
        if search is not None and search.is_finished():
            self.ladder.no_more_trials()  # a searcher that made fewer than planned: no rival will come
        self._stop_hopeless(tune_controller)
        promotion = self.ladder.next_promotion()  # a free slot promotes first, highest rung first
        if promotion is not None and (self.max_running is None or self.ladder.occupied() < self.max_running):
            trial = self._trials.get(promotion[0])
            if trial is not None and trial.status in (Trial.PAUSED, Trial.PENDING):
                self.ladder.promote(trial.trial_id)
                self._save_passes()
                return self._started(trial)
        for trial_id in self.ladder.pending():  # then a retry or a new trial: promoted ones first, then by age
            trial = self._trials.get(trial_id)
            if trial is not None and trial.status in (Trial.PENDING, Trial.PAUSED):
                return self._started(trial)
        for trial_id in list(self.ladder.in_state["running"]):
            trial = self._trials.get(trial_id)
            if trial is not None and trial.status == Trial.PAUSED:
                # paused without this scheduler's say (Ray replays decisions it had queued before a
                # resume): it goes on, or nothing would ever restart it (a hang seen once in CI)
                return self._started(trial)
        return None

    def debug_string(self) -> str:
        return f"Promoting ASHA on {self.time_attr}: rungs {self.ladder.rungs}, max {self.ladder.max_t}"

    # ---- helpers --------------------------------------------------------------------------------

    def _started(self, trial: Trial) -> Trial:
        self.ladder.start(trial.trial_id)
        return trial

    def _stop_hopeless(self, tune_controller, skip: Trial | None = None) -> None:
        """Stop the waiting trials that can no longer make the cut (their checkpoints go with them).
        Only the ladder's changes can make one hopeless: looked for once per change."""
        if self._checked == self.ladder._version and skip is None:
            return
        pausing = False  # a hopeless one still pausing: look again at the next step
        for trial_id in list(self.ladder.in_state["waiting"]):
            trial = self._trials.get(trial_id)
            if trial is None or trial is skip:
                continue
            if not self.ladder.hopeless(trial_id, self.ladder.trials[trial_id].epoch):
                continue
            if trial.status in (Trial.PAUSED, Trial.PENDING) or is_saving(trial):
                self.ladder.finish(trial_id)
                stop_trial(tune_controller, trial)
                # Ray marks a stopped trial for its next state snapshot only when it had a worker; a
                # paused one would stay PAUSED in the saved state (and look unfinished to a resume).
                mark_for_snapshot(tune_controller, trial)
            else:
                pausing = True
        if skip is None and not pausing:
            self._checked = self.ladder._version

    def _history(self, trial: Trial) -> dict[int, float]:
        """epoch -> metric from the trial's progress.csv (empty for a new trial)."""
        if not self._metric or not has_reported(trial):  # a new trial has no folder yet
            return {}
        return runfolder.history(Path(str(trial.path)), self._metric)  # the run folder (a cloud URI is no file)

    def _save_passes(self) -> None:
        """Append the ladder's new passes to the run folder's record."""
        if self.ladder.passes and self.record is not None:
            runfolder.append_promotions(self.record, self.ladder.passes)
        self.ladder.passes.clear()

    def _passes_recorded(self) -> dict[str, int]:
        if self._passed is None:
            self._passed = runfolder.read_promotions(self.record) if self.record is not None else {}
        return self._passed
