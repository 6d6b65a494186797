"""The run stage of a search: the run folder written, Ray started (one machine), the Tuner built and fitted.

    run(state)     # returns when every trial ended, or Ray stopped on Ctrl-C; a second Ctrl-C raises
"""

from __future__ import annotations

import time

from .plan import save_spec
from .ray_api import own_sigint, quiet_environment
from .session import runtime_env
from .state import Search


def run(state: Search) -> None:
    from .assemble import build_tuner
    from .results import finish

    spec, plan, opts = state.spec, state.plan, state.options
    if opts.address is None:  # this machine only: its data was prepared before Ray starts
        state.session.start_local(plan.total_cpus, plan.total_gpus, runtime_env(spec))
    state.run_dir.mkdir(parents=True, exist_ok=True)
    if state.screen is not None:
        from ..prescreen import save_screen

        save_screen(state.screen, state.run_dir)
    save_spec(state.original or spec, state.run_dir, state.instance)
    if state.step_times:
        from ..runfolder import STEP_TIMES_FILE
        from ..unshared import save

        save(state.step_times, state.run_dir / STEP_TIMES_FILE)
    if state.resolved:
        from .trackers import make_trackers

        state.trackers = make_trackers(state.resolved, spec.name, state.run_dir, state.instance, state.echo)
    start = time.perf_counter()
    interrupts = None
    with quiet_environment(opts.verbose):  # Ray's switches for this search only, not the caller's later Tuners
        try:
            tuner, progress = build_tuner(spec, state.storage, state.restoring, opts.verbose, state.echo, plan,
                                          state.checkpoints, state.shares, display=opts.progress,
                                          trackers=state.trackers, local=opts.address is None)
            with own_sigint() as interrupts:
                tuner.fit()  # Ray stops gracefully on Ctrl-C and returns
            if interrupts.again:  # a second Ctrl-C while Ray stopped: at once, now that Ray has saved the trials
                raise KeyboardInterrupt
            state.echo(f"search ended after {time.perf_counter() - start:.0f}s")
            for line in (progress.start_summary(), progress.phase_summary()):
                if line:
                    state.echo(line)
            state.trial_start_s = progress.start_seconds
            state.start_phases = progress.start_phases
        except KeyboardInterrupt:  # a second Ctrl-C: stop now (results.csv, no report), then the interrupt goes on
            finish(state, hurry=True)
            raise
        except Exception as e:
            if interrupts is not None and interrupts.again:  # Ray failed while stopping, after a second Ctrl-C
                finish(state, hurry=True)
                raise KeyboardInterrupt from e
            # the search cannot go on: its trackers' runs are not left running
            if state.trackers:
                from .trackers import stop_trackers

                stop_trackers(state.trackers)
            raise
