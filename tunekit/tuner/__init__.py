"""Searches on Ray Tune (``tunekit.search``): a SearchSpec -> a planned, prepared, running Tuner -> results.

    result = search("search_spaces/demo.py", storage_path="~/ray_results")
    result.trials.sort_values("error_rate").head()

Ray is started locally (dashboard off) and stopped afterwards, unless ``address`` joins a
cluster started with ``ray start``. Before any trial, every node prepares the data once
(download, decode-once cache) and the pretrained weights. Trials report every epoch; ASHA
promotes or stops them on the epoch count; each trial checkpoints every epoch (the latest kept,
removed when the trial ends) and is retried from it on failure. Re-running with the same name
(or ``resume=True``) continues an interrupted search: finished trials are kept.

The modules: ``plan`` (capacity, resume, the plan), ``nodes`` (data and weights per node),
``assemble`` (the Tuner), ``trainable`` (a trial), ``asha`` (promoting ASHA), ``callbacks``
(TensorBoard, cleanup), ``progress`` (events.log; the event stream or a live status), ``results``
(reading back, summary), ``trial_start``, ``ray_api`` (every use of Ray beyond its public API).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from .._lazy import lazy_exports
from ..config import PROGRESS_DISPLAYS
from ..data.spec import DataSpec
from ..errors import TunekitError
from ..gpu_share import MAX_PER_GPU, memory_keys
from ..spec import SearchSpec, build_spec, load_spec
from .nodes import check_local_data, prepare_local, prepare_nodes
from .plan import (
    DEFAULT_STORAGE,
    Plan,
    Previous,
    auto_shares_here,
    capacity,
    check_runtime_env,
    cli_overrides,
    make_plan,
    move_aside,
    previous_search,
    runtime_env,
    save_spec,
    share_lines,
    smallest_share,
)
from .ray_api import quiet_environment

if TYPE_CHECKING:
    from .results import SearchResult

# Ray Tune, torch, timm and pandas load when a search runs, not for a dry run's plan (benchmarks/RESULTS.md)
_LAZY = {"SearchResult": "results", "finish": "results", "summary": "results"}
__all__ = ["DEFAULT_STORAGE", "Plan", "SearchResult", "finish", "search", "summary"]
__getattr__ = lazy_exports(__name__, _LAZY)


def search(
    space: str | Path | SearchSpec, *, num_gpus: float | None = None, gpus_per_trial: float | None = None,
    cpus_per_trial: float | None = None, num_samples: int | None = None, address: str | None = None,
    storage_path: str | Path = DEFAULT_STORAGE, name: str | None = None, resume: bool = False,
    restart: bool = False, dry_run: bool = False, overrides: dict[str, Any] | None = None, verbose: bool = False,
    strict: bool = False, progress: str = "auto", echo: Callable[[str], None] = print,
) -> SearchResult | Plan:
    """Run (or, with ``dry_run``, plan) a search: a space file, a dict of its settings, or a SearchSpec.

    A search of the same name in ``storage_path`` is continued if it is unfinished, reported if it
    finished (``restart`` moves its folder aside and starts over), and refused if it was made from
    another space. ``strict`` makes unreadable images an error instead of a warning. ``progress``:
    ``events`` (a line per trial event), ``summary`` (a live status), ``auto`` (summary beyond 50
    trials); every event also goes to the run folder's events.log.
    """
    if progress not in PROGRESS_DISPLAYS:
        raise TunekitError(f"progress must be one of {', '.join(PROGRESS_DISPLAYS)}, got {progress!r}")
    if resume and restart:
        raise TunekitError("--resume and --restart contradict each other: continue the search, or start it over")
    options = cli_overrides(overrides, gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
                             num_samples=num_samples, name=name)
    if isinstance(space, SearchSpec):
        spec = space
    elif isinstance(space, dict):
        spec = build_spec({"name": "search", **space, **options})
    else:
        spec = load_spec(space, options)
    if strict:
        spec = dataclasses.replace(spec, data=str(DataSpec.parse(spec.data).with_options(strict=True)))
    storage = Path(storage_path).expanduser().resolve()
    run_dir = storage / spec.name
    previous = previous_search(spec, run_dir, resume)
    notes = []
    if previous.exists and restart:
        if dry_run:
            notes.append(f"  note     --restart would move {run_dir.name} aside to {run_dir.name}.old-DATE first")
        else:
            echo(f"moved the previous search aside: {move_aside(run_dir)}")
        previous = dataclasses.replace(previous, exists=False)
    elif previous.exists and not previous.same_space:
        if not dry_run:
            raise TunekitError(previous.refusal())
        notes.append(f"  note     a real run under this name is refused: {previous.refusal()}")
        previous = dataclasses.replace(previous, exists=False)
    elif previous.exists and previous.finished and not (resume and previous.errored):
        if dry_run:
            notes += ["  note     " + line for line in previous.finished_lines()]
        else:
            return _already_finished(spec, run_dir, previous, echo)
    restoring = previous.exists
    screen = None
    if spec.prescreen:  # the space's models cut to the best by LogME; the spec file's fingerprint stays
        from ..prescreen import prescreen

        original, (spec, screen) = spec, prescreen(spec, run_dir, restoring, echo)
        notes += screen.lines()
    started = address is not None and not ray.is_initialized()  # joining a cluster: connect to count it
    if not started:
        check_runtime_env(spec)
    total_cpus, total_gpus = capacity(address, num_gpus, dry_run, verbose, runtime_env(spec))
    auto = spec.gpus_per_trial == "auto"
    if auto:
        memory_keys(spec)  # the space gives finite choices to probe, or an error now
        if total_gpus <= 0 and not dry_run:
            raise TunekitError("gpus_per_trial='auto' sizes each trial's share of a GPU by probing its memory, and "
                               "no GPU is available: set gpus_per_trial=0 to run on CPUs")
    if dry_run and (auto or spec.gpus_per_trial > 0) and total_gpus <= 0:
        total_gpus = 1.0
        notes.append("  note     no GPU here: planned for 1 GPU (pass --num-gpus N to plan for N)")
    # before Ray starts, with auto's smallest share as a stand-in: a plan that cannot run fails now
    capped = num_gpus is not None
    plan = make_plan(spec, run_dir, total_cpus, total_gpus, restoring, 1 / MAX_PER_GPU if auto else None, capped)
    plan.finished = previous.exists and previous.finished and not (resume and previous.errored)
    if dry_run:
        try:
            check_local_data(spec)
            shares = auto_shares_here(spec, echo) if auto else None
        finally:
            if started:
                ray.shutdown()
        if auto:
            plan = dataclasses.replace(make_plan(spec, run_dir, total_cpus, total_gpus, restoring,
                                                 smallest_share(shares), capped), finished=plan.finished)
            notes += share_lines(shares) if shares else [
                "  note     gpus_per_trial='auto': each model's share is probed on the GPU when the search starts"]
        for line in plan.lines(spec) + notes:
            echo(line)
        return plan
    if not auto:
        for line in plan.lines(spec):
            echo(line)
    from .assemble import build_tuner
    from .results import finish

    local = address is None and not ray.is_initialized()
    if local:  # this machine is the only node: data and weights are ready before Ray starts
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            echo("warning: RAY_AUTH_MODE=disabled: the local Ray's ports listen on every interface, so anyone "
                 "who can reach this machine can run code in it; unset it, or firewall the machine")
        prepare_local(spec, echo)
        # address="local": a new Ray of its own, even where `ray start` left a cluster running or
        # RAY_ADDRESS is set (without it ray.init joins those, and refuses num_cpus): --address joins
        ray.init(address="local", num_cpus=int(total_cpus), num_gpus=int(math.ceil(total_gpus)),
                 include_dashboard=False, log_to_driver=verbose, logging_level="INFO" if verbose else "WARNING",
                 configure_logging=True, runtime_env=runtime_env(spec))
        started = True
    try:
        shares = None
        if auto:
            from .nodes import probe_cluster_shares

            shares = probe_cluster_shares(memory_keys(spec), echo)
            plan = make_plan(spec, run_dir, total_cpus, total_gpus, restoring, smallest_share(shares), capped)
            for line in plan.lines(spec) + share_lines(shares):
                echo(line)
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoints = True if local else prepare_nodes(spec, run_dir, echo)
        if screen is not None:
            from ..prescreen import save_screen

            save_screen(screen, run_dir)
            for line in screen.lines():
                echo(line)
        save_spec(original if screen is not None else spec, run_dir)
        t0 = time.perf_counter()
        with quiet_environment(verbose):  # Ray's switches for this search only, not the caller's later Tuners
            tuner, progress_cb = build_tuner(spec, storage, restoring, verbose, echo, plan, checkpoints, shares,
                                             display=progress)
            try:
                tuner.fit()  # Ray stops gracefully on Ctrl-C and returns
            except KeyboardInterrupt:  # a second Ctrl-C
                finish(run_dir, spec, echo, storage)
                raise
        echo(f"search ended after {time.perf_counter() - t0:.0f}s")
        if progress_cb.start_summary():
            echo(progress_cb.start_summary())
        result = finish(run_dir, spec, echo, storage)
        result.trial_start_s = progress_cb.start_seconds
        return result
    finally:
        if started:
            ray.shutdown()


def _already_finished(spec: SearchSpec, run_dir: Path, previous: Previous, echo: Callable[[str], None]) -> SearchResult:
    """Re-running a finished search: say so, show its results, say how to search again. No Ray."""
    from ..report import load_run
    from .results import SearchResult, summary

    result = SearchResult(run_dir, load_run(run_dir), spec.metric, spec.mode)
    echo(previous.finished_lines()[0])
    for line in summary(result):
        echo(line)
    echo(previous.finished_lines()[1])
    return result
