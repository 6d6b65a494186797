"""tuner.failures' verdict on its own: when a search is doomed, and when new trials wait for that to be known."""

from __future__ import annotations

import pickle

from tunekit.tuner.failures import Failure, Verdict

A = Failure("RuntimeError: the model cannot be built", config=False, ray=False)
B = Failure("ValueError: another error", config=False, ray=False)
LOST = Failure("ray.exceptions.RayActorError: the actor died", config=False, ray=True)


def made(verdict: Verdict, *ids: str) -> Verdict:
    for trial_id in ids:
        verdict.added(trial_id)
    return verdict


def test_the_first_slot_full_failing_alike_is_doomed_and_holds_new_trials_until_then():
    verdict = made(Verdict(slots=2), "t1")
    assert not verdict.holds_back()  # the first slot-full is still being made
    made(verdict, "t2")
    verdict.ended("t1", A)
    # the first failure freed a slot: a third trial waits, since the second may show that none should start
    assert verdict.holds_back() and verdict.doomed is None
    verdict.ended("t2", A)
    assert verdict.doomed == A.line


def test_one_slot_needs_two_failures_alike():
    verdict = made(Verdict(slots=1), "t1")
    verdict.ended("t1", A)
    assert verdict.doomed is None and not verdict.holds_back()  # the second trial may start
    made(verdict, "t2")
    assert verdict.holds_back()
    verdict.ended("t2", A)
    assert verdict.doomed == A.line


def test_new_trials_go_on_once_a_trial_trains_or_two_fail_differently():
    trained = made(Verdict(slots=2), "t1", "t2")
    trained.ended("t1", A)
    trained.result()  # the other trial reported an epoch: the search can succeed
    assert not trained.holds_back()
    trained.ended("t2", A)
    assert trained.doomed is None
    differ = made(Verdict(slots=2), "t1", "t2")
    differ.ended("t1", A)
    differ.ended("t2", B)
    assert differ.doomed is None and not differ.holds_back()


def test_nothing_waits_when_every_trial_made_has_ended():
    """A trial lost to Ray's own failure does not count toward the verdict, nor keeps the rest from starting."""
    verdict = made(Verdict(slots=2), "t1", "t2")
    verdict.ended("t1", A)
    verdict.ended("t2", LOST)
    assert verdict.doomed is None and not verdict.holds_back()


def test_a_wide_search_waits_for_its_whole_first_slot_full():
    """Eight slots: seven failed alike, the eighth still in its setup (it may train): not doomed until it ends."""
    ids = [f"t{i}" for i in range(8)]
    verdict = made(Verdict(slots=8), *ids)
    for trial_id in ids[:7]:
        verdict.ended(trial_id, A)
    assert verdict.doomed is None and verdict.holds_back()
    verdict.ended(ids[7], A)
    assert verdict.doomed == A.line
    healthy = made(Verdict(slots=8), *ids)
    for trial_id in ids[:7]:
        healthy.ended(trial_id, A)
    healthy.result()  # the eighth trained: a search that can succeed (its other models, say)
    assert healthy.doomed is None and not healthy.holds_back()


def test_failures_that_all_drew_one_value_of_a_searched_key_are_that_values_not_the_searchs():
    """A grid's first slot-full all drew its first model, which cannot be built: the next trials (another model)
    start, and the search is doomed only once failures alike span more than one model."""
    verdict = made(Verdict(slots=2, searched={"model", "lr"}), "t1", "t2")
    verdict.ended("t1", A, {"model": "broken", "lr": 0.01})
    verdict.ended("t2", A, {"model": "broken", "lr": 0.02})
    assert verdict.doomed is None and not verdict.holds_back()  # nothing waits: the next slot-full starts
    made(verdict, "t3")
    assert not verdict.holds_back()  # a whole slot-full, not one trial at a time
    made(verdict, "t4")
    assert verdict.holds_back()
    verdict.ended("t3", A, {"model": "broken", "lr": 0.03})
    verdict.ended("t4", A, {"model": "resnet18", "lr": 0.01})
    assert verdict.doomed == A.line  # every model fails alike


def test_on_a_cluster_the_first_slot_full_decides_whatever_else_runs():
    """Unslotted (Ray's resources decide, nothing holds back): trials beyond the first slot-full are running
    when its last one fails; the verdict is in then."""
    verdict = made(Verdict(slots=2, slotted=False), "t1", "t2", "t3", "t4")
    assert not verdict.holds_back()
    verdict.ended("t1", A)
    verdict.ended("t3", A)  # a later trial: the first slot-full's t2 may still train
    assert verdict.doomed is None
    verdict.ended("t2", A)
    assert verdict.doomed == A.line


def test_a_resumed_search_counts_the_trials_that_trained_before_it():
    """A resumed search's verdict starts blank (Ray pickled it at the start); a restored trial that trained, or
    ended, says the search can succeed, and nothing holds back the rest."""
    verdict = pickle.loads(pickle.dumps(Verdict(slots=2)))
    verdict.added("t1", trained=True)
    made(verdict, "t2", "t3")
    verdict.ended("t2", A)
    verdict.ended("t3", A)
    assert verdict.doomed is None and not verdict.holds_back()


def test_a_verdict_pickled_by_an_earlier_tunekit_resumes():
    old = Verdict.__new__(Verdict)
    old.__setstate__({"needed": 2, "first": [], "reported": False, "doomed": None, "settled": 0})
    made(old, "t1", "t2")
    old.ended("t1", A)
    old.ended("t2", A)
    assert old.doomed == A.line


def test_without_asha_a_retry_runs_before_the_trials_not_started():
    """Ray requeues a failed trial behind every pending one; the scheduler starts it first all the same."""
    from types import SimpleNamespace

    from tunekit.tuner.failures import Scheduler

    def trial(trial_id: str, failures: int = 0) -> SimpleNamespace:
        return SimpleNamespace(trial_id=trial_id, status="PENDING", config={}, error_file=None,
                               has_reported_at_least_once=False,
                               run_metadata=SimpleNamespace(num_failures=failures, last_result={}))

    scheduler = Scheduler(Verdict(slots=2))
    first, waiting = trial("t1"), trial("t2")
    controller = SimpleNamespace(get_trials=lambda: [waiting, first])  # Ray's order after the requeue
    for t in (first, waiting):
        scheduler.on_trial_add(controller, t)
    first.run_metadata.num_failures = 1  # it failed (a fault that passes on a retry); Ray re-adds it
    scheduler.on_trial_add(controller, first)
    assert scheduler.choose_trial_to_run(controller) is first
    first.status = "RUNNING"
    assert scheduler.choose_trial_to_run(controller) is waiting


def test_a_resumed_search_s_stopper_reads_the_scheduler_s_verdict():
    """Ray restores a resumed search's stopper from its experiment snapshot (the controller's state), apart from
    the scheduler it restores from the Tuner's pickle: the scheduler links them again as trials are added."""
    from types import SimpleNamespace

    from tunekit.tuner.failures import Doomed, Scheduler

    scheduler = Scheduler(Verdict(slots=2))
    stopper = Doomed(pickle.loads(pickle.dumps(scheduler.verdict)))  # as unpickled apart
    controller = SimpleNamespace(_stopper=stopper, get_trials=lambda: [])
    for trial_id in ("t1", "t2"):
        trial = SimpleNamespace(trial_id=trial_id, status="PENDING", config={}, has_reported_at_least_once=False,
                                run_metadata=SimpleNamespace(num_failures=0))
        scheduler.on_trial_add(controller, trial)
        scheduler.verdict.ended(trial_id, A)
    assert stopper.verdict is scheduler.verdict and stopper.stop_all()
