"""Tuner assembly: a SearchSpec and its plan -> a ``ray.tune.Tuner`` (searcher, ASHA, resources,
callbacks, storage), new or restored for a resume.

    tuner, progress = build_tuner(spec, storage, restoring=False, verbose=False, echo=print, plan=plan)
    tuner.fit()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ray import tune
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search.basic_variant import BasicVariantGenerator

from ..gpu_share import AutoShares
from ..runfolder import EVENTS_FILE, PROMOTIONS_FILE, STOPPED_FILE
from ..spec import SearchSpec
from .asha import PromotingASHA, rungs_for
from .callbacks import CheckpointCleanup, TensorBoardCallback, searched_keys
from .failures import Doomed, Scheduler, Verdict
from .progress import ProgressCallback
from .ray_api import replace_callbacks
from .slots import SlotGenerator, SlotLimiter
from .state import Plan
from .trainable import ALONE_KEY, CHECKPOINTS_KEY, REDUCTION_KEY, RUNGS_KEY, run_trial


def build_tuner(spec: SearchSpec, storage: Path, restoring: bool, verbose: bool, echo: Callable[[str], None],
                plan: Plan, checkpoints: bool = True, shares: AutoShares | None = None,
                display: str = "auto", trackers: list[Callback] = (),
                local: bool = True) -> tuple[tune.Tuner, ProgressCallback]:
    """The Tuner of ``spec`` (new, or restored from ``storage/name``) and its progress callback
    (``display``: progress.DISPLAYS; ``trackers``: tuner.trackers' callbacks; ``local``: this machine
    only, whose slots the plan counted exactly). Build it and fit it inside ``ray_api.quiet_environment``."""
    if not verbose:
        # After a Ctrl-C, Ray lists every never-started trial as a missing-results warning.
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
        # A failed trial: Ray logs its traceback, and "Trials did not complete" at the end; the progress
        # names each failure as it happens and the summary groups them (the tracebacks are in error.txt)
        for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    threads = max(1, int(spec.cpus_per_trial))
    resources = (Resources(shares, spec.cpus_per_trial, plan.gpus_per_trial) if shares is not None
                 else {"cpu": spec.cpus_per_trial, "gpu": plan.gpus_per_trial})
    trainable = tune.with_resources(run_trial, resources)
    asha = spec.asha or {}
    rungs = rungs_for(plan.max_epochs, asha["grace_period"], asha["reduction_factor"]) if asha else None
    param_space = {**spec.param_space(), "threads": threads, CHECKPOINTS_KEY: checkpoints, RUNGS_KEY: rungs,
                   REDUCTION_KEY: asha.get("reduction_factor"), ALONE_KEY: plan.concurrency == 1}
    progress = ProgressCallback(echo, spec.metric, spec.mode, plan.max_epochs, plan.trials, searched_keys(spec),
                                slots=plan.concurrency, display=display, log_path=storage / spec.name / EVENTS_FILE)
    callbacks = [CSVLoggerCallback(), JsonLoggerCallback(), TensorBoardCallback(), progress]
    callbacks.append(CheckpointCleanup(storage / spec.name, spec.metric, spec.mode, spec.keep_best,
                                       spec.keep_checkpoints))
    callbacks += list(trackers)
    # The search's slots, kept by its scheduler (a trial waiting at an ASHA rung holds none, and a retry runs before
    # a new trial): a limit Ray's resources would not keep to (--num-gpus, max_concurrent); on one machine with fixed
    # shares the plan's slots, which leaves Ray no queue of trials a promotion or a retry would wait behind. On a
    # cluster, nodes may join: Ray's resources decide.
    limit = plan.max_concurrent or spec.max_concurrent
    slots = limit or (plan.concurrency if local and not plan.gpu_auto else None)
    verdict = Verdict(plan.concurrency, searched_keys(spec), slotted=slots is not None)
    # a search whose first trials all fail alike stops; a configuration error is not retried (tuner.failures)
    run_config = tune.RunConfig(
        name=spec.name, storage_path=str(storage), callbacks=callbacks, verbose=2 if verbose else 0,
        stop=Doomed(verdict, storage / spec.name / STOPPED_FILE),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # Two, not one: Ray snapshots the whole experiment (every trial, O(trials)) whenever a trial has
        # checkpointed num_to_keep times since the last snapshot, so with one it did so after every
        # epoch of every trial: quadratic, 530 s of driver CPU over 1,000 trials (benchmarks/RESULTS.md)
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        # each trial's working directory (tunekit_run.json) reaches the run folder from any node,
        # with every checkpoint and when the trial ends
        sync_config=tune.SyncConfig(sync_artifacts=True),
    )
    if restoring:
        tuner = tune.Tuner.restore(str(storage / spec.name), trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space)
        replace_callbacks(tuner, callbacks)
        return tuner, progress
    if spec.asha:
        scheduler = PromotingASHA(max_t=plan.max_epochs, grace_period=spec.asha["grace_period"],
                                  reduction_factor=spec.asha["reduction_factor"], total_trials=plan.trials,
                                  max_running=slots, record=storage / spec.name / PROMOTIONS_FILE, verdict=verdict)
    else:
        scheduler = Scheduler(verdict, max_running=slots)
    if spec.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=spec.search_seed))
        if slots:  # Ray's ConcurrencyLimiter would count the trials waiting at a rung (tuner.slots)
            search_alg = SlotLimiter(search_alg, scheduler, slots)
    elif slots:
        search_alg = SlotGenerator(scheduler, random_state=spec.search_seed)
    else:
        search_alg = BasicVariantGenerator(random_state=spec.search_seed)
    # reuse_actors: the next trial runs in a finished trial's worker (same resources), which has torch
    # and timm imported already: a new worker spent ~5s of every trial start here on a 2-core machine.
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler, search_alg=search_alg,
                                  num_samples=spec.num_samples, reuse_actors=True)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config), progress


class Resources:
    """Ray's per-trial resources under gpus_per_trial='auto': CPUs as set, the trial's probed GPU share
    (``gpu_share.AutoShares.gpus_for``), at least ``floor`` (the plan's share, spread over the GPUs)."""

    def __init__(self, shares: AutoShares, cpus: float, floor: float = 0.0) -> None:
        self.shares, self.cpus, self.floor = shares, cpus, floor

    def __call__(self, config: dict) -> tune.PlacementGroupFactory:
        return tune.PlacementGroupFactory([{"CPU": self.cpus, "GPU": self.shares.gpus_for(config, self.floor)}])
