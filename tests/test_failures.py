"""tuner.failures' verdict on its own: when a search is doomed, and when new trials wait for that to be known."""

from __future__ import annotations

from tunekit.tuner.failures import Failure, Verdict

A = Failure("RuntimeError: the model cannot be built", config=False, ray=False)
B = Failure("ValueError: another error", config=False, ray=False)
LOST = Failure("ray.exceptions.RayActorError: the actor died", config=False, ray=True)


def test_the_first_slot_full_failing_alike_is_doomed_and_holds_new_trials_until_then():
    verdict = Verdict(slots=2)
    assert not verdict.holds_back(made=1, slots=2)  # the first slot-full is still being made
    verdict.ended(A)
    # the first failure freed a slot: a third trial waits, since the second may show that none should start
    assert verdict.holds_back(made=2, slots=2) and verdict.doomed is None
    verdict.ended(A)
    assert verdict.doomed == A.line


def test_new_trials_go_on_once_a_trial_trains_or_two_fail_differently():
    trained = Verdict(slots=2)
    trained.ended(A)
    trained.result()  # the other trial reported an epoch: the search can succeed
    assert not trained.holds_back(made=2, slots=2)
    trained.ended(A)
    assert trained.doomed is None
    differ = Verdict(slots=2)
    differ.ended(A)
    differ.ended(B)
    assert differ.doomed is None and not differ.holds_back(made=2, slots=2)


def test_nothing_waits_when_every_trial_made_has_ended():
    """A trial lost to Ray's own failure does not count toward the verdict, nor keeps the rest from starting."""
    verdict = Verdict(slots=2)
    verdict.ended(A)
    verdict.ended(LOST)
    assert verdict.doomed is None and not verdict.holds_back(made=2, slots=2)


def test_a_wide_search_fills_its_first_slot_full_and_needs_five_alike():
    verdict = Verdict(slots=8)
    assert verdict.needed == 5 and not verdict.holds_back(made=7, slots=8)
    for _ in range(4):
        verdict.ended(A)
    assert verdict.holds_back(made=8, slots=8) and verdict.doomed is None
    verdict.ended(A)
    assert verdict.doomed == A.line
