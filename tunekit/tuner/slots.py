"""The searchers of a search that keeps its slots (``--num-gpus`` below what Ray counts, ``max_concurrent``, on
one machine the plan's slots): they add a trial only when the scheduler has room for one (``has_room``:
``tuner.asha.PromotingASHA``, ``tuner.failures.Scheduler``).

Ray's own limits (``BasicVariantGenerator(max_concurrent=N)``, ``ConcurrencyLimiter``) count every trial
the searcher made and Ray has not ended, so a trial paused at an ASHA rung holds a slot: once every slot
holds a waiting trial nothing new can start, and ASHA must let a waiting trial go on whatever its rank
(in ``benchmarks/asha_sim.py``, 1.7-2.2x the epochs of the paper's rule: benchmarks/RESULTS.md). Here the
limit counts the trials that run or are about to (``has_room``), and a free slot goes first to a waiting
trial that has earned it; and since a searcher adds a trial only into a free slot, Ray holds no queue of new
trials that a retry (which Ray requeues last) would wait behind.

    scheduler = PromotingASHA(max_t=8, grace_period=1, reduction_factor=3, total_trials=16, max_running=2)
    search_alg = SlotGenerator(scheduler, random_state=0)                     # grid / random
    search_alg = SlotLimiter(OptunaSearch(...), scheduler, max_concurrent=2)  # optuna
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator


class Keeper(Protocol):
    """A scheduler that keeps the search's slots."""

    def has_room(self) -> bool: ...


_LINK = "scheduler"  # the attribute that links a searcher to its scheduler: not part of its saved state


class SlotGenerator(BasicVariantGenerator):
    """Ray's variant generator (grid, random) that adds a trial only when the scheduler has room."""

    def __init__(self, scheduler: Keeper, **kwargs: Any) -> None:
        super().__init__(max_concurrent=0, **kwargs)
        self.scheduler = scheduler

    def next_trial(self):
        if not self.scheduler.has_room():
            return None
        return super().next_trial()

    def get_state(self):
        state = super().get_state()
        if state:
            state.pop(_LINK, None)
        return state

    def set_state(self, state) -> None:
        link = self.scheduler
        super().set_state({k: v for k, v in state.items() if k != _LINK})
        self.scheduler = link


class SlotLimiter(ConcurrencyLimiter):
    """Ray's ConcurrencyLimiter (around Optuna) that asks the scheduler instead of counting every trial
    it suggested: ``max_concurrent`` remains Ray's bound on trials queued at once."""

    def __init__(self, searcher: Searcher, scheduler: Keeper, max_concurrent: int) -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.scheduler = scheduler

    def suggest(self, trial_id: str) -> dict | None:
        if not self._limit_concurrency:
            return self.searcher.suggest(trial_id)
        if not self.scheduler.has_room():
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion

    def get_state(self) -> dict:
        # Ray's deep-copies its __dict__ but the searcher: without the link too (the scheduler holds every trial)
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in ("searcher", _LINK)})

    def set_state(self, state: dict) -> None:
        link = self.scheduler
        super().set_state({k: v for k, v in state.items() if k != _LINK})
        self.scheduler = link
