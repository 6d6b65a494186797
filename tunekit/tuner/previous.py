"""The second stage of a search: what its run folder already holds, and what to do with it.

    decide(state)     # nothing there: a new search; unfinished: continue it; finished: report it and end;
                      # made from another space: refuse (or, with --restart, move it aside and start over)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .. import runfolder
from ..errors import TunekitError
from ..prescreen import load_screen
from ..runfolder import SPEC_FILE
from ..spec import SearchSpec
from .state import Previous, Search


def decide(state: Search) -> None:
    """Sets ``state.previous`` (and, for a finished search, ``state.outcome``: its results, no Ray)."""
    spec, run_dir, opts = state.spec, state.run_dir, state.options
    previous = previous_search(spec, run_dir, opts.resume)
    action = action_for(previous, opts.resume, opts.restart)
    continued = action in ("continue", "report")
    # the trackers' identity: a continued search keeps its own ("" for a folder written before instances, whose
    # trackers keep the names they had: tuner.trackers)
    state.instance = previous.instance if continued else new_instance()
    if spec.trackers and (opts.dry_run or action in ("new", "restart", "continue")):  # a finished one needs none
        check_trackers(state)  # a dead server or a refused URI fails here: before a folder moves or a GPU probes
    if action == "restart":
        if opts.dry_run:
            state.notes.append(f"  note     --restart would move {run_dir.name} aside to {run_dir.name}.old-DATE first")
        else:
            state.echo(f"moved the previous search aside: {move_aside(run_dir)}")
    elif action == "refuse":
        if not opts.dry_run:
            raise TunekitError(previous.refusal())
        state.notes.append(f"  note     a real run under this name is refused: {previous.refusal()}")
    elif action == "continue":
        for orphan in set_aside_orphans(run_dir, opts.dry_run):
            line = (f"{orphan.name} is not in Ray's saved state of the search (started after Ray last saved it, "
                    f"then killed): it runs again from the start (its first folder "
                    f"{'would move' if opts.dry_run else 'moved'} to {runfolder.ORPHANS_DIR}/)")
            if opts.dry_run:
                state.notes.append(f"  note     {line}")
            else:
                state.echo(line)
    elif action == "report":
        if opts.dry_run:
            state.notes += ["  note     " + line for line in previous.finished_lines()]
        else:
            state.outcome = report_finished(state, previous)
    state.previous = previous if continued else dataclasses.replace(previous, exists=False)


def set_aside_orphans(run_dir: Path, dry_run: bool = False) -> list[Path]:
    """The trial folders Ray's saved experiment state does not list: trials started after Ray last saved it
    (every 10 s or more), before the search was killed. Ray restores the search from that state, so it runs them
    again from the start, in new folders: the first ones move into ``orphaned/`` (their checkpoints, never resumed,
    removed), kept but not counted again. Nothing moves unless the state and each of its trials could be read."""
    known = runfolder.listed_trials(run_dir)
    if known is None:
        return []
    orphans = [trial for trial in runfolder.trial_dirs(run_dir) if trial.name not in known]
    if orphans and not dry_run:
        (run_dir / runfolder.ORPHANS_DIR).mkdir(exist_ok=True)
        for trial in orphans:
            target = run_dir / runfolder.ORPHANS_DIR / trial.name
            while target.exists():  # set aside before, by an earlier resume
                target = target.with_name(target.name + "+")
            trial.rename(target)
            runfolder.remove_checkpoints(target)
    return orphans


def check_trackers(state: Search) -> None:
    """The trackers the trials log to (``tracking.resolve``), checked where they are used: before a search starts
    or continues (a dead server, a URI MLflow refuses, a missing login fail here, nothing moved or started yet); a
    dry run's plan says whether they answer now, without failing."""
    from ..tracking import check_ready, resolve

    state.resolved, state.tracker_notes = resolve(state.spec.trackers, state.spec.name, str(state.run_dir),
                                                  state.instance)
    if not state.options.dry_run:
        check_ready(state.resolved)


def action_for(previous: Previous, resume: bool, restart: bool) -> str:
    """What a search does with what its run folder holds: ``new`` (nothing there), ``restart`` (move it
    aside, start over), ``refuse`` (a search of another space), ``report`` (finished: show its
    results), ``continue`` (unfinished, or --resume of a finished one with errored trials)."""
    if not previous.exists:
        return "new"
    if restart:
        return "restart"
    if not previous.same_space or (previous.stopped and resume):
        return "refuse"
    return "report" if previous.done(resume) else "continue"


def report_finished(state: Search, previous: Previous):
    """Re-running a finished search: say so, show its results, say how to search again."""
    from ..report import load_run
    from .results import SearchResult, summary

    result = SearchResult(state.run_dir, load_run(state.run_dir), state.spec.metric, state.spec.mode)
    state.echo(previous.finished_lines()[0])
    for line in summary(result):
        state.echo(line)
    state.echo(previous.finished_lines()[1])
    return result


def previous_search(spec: SearchSpec, run_dir: Path, resume: bool) -> Previous:
    """What ``run_dir`` holds: nothing, a search of another space, an unfinished or a finished one."""
    from ray import tune

    if not (run_dir.is_dir() and tune.Tuner.can_restore(str(run_dir))):
        if resume:
            raise TunekitError(f"--resume: there is no search named {spec.name!r} in {run_dir.parent}")
        return Previous(run_dir, exists=False)
    saved = runfolder.read_json(run_dir / SPEC_FILE) or {}
    same = "fingerprint" not in saved or saved["fingerprint"] == spec.fingerprint()
    states = runfolder.ray_states(run_dir)
    screen = load_screen(run_dir) if spec.prescreen else None  # a pre-screened search runs the kept models only
    expected = (spec.with_models(screen.kept) if screen else spec).trial_count()
    finished = len(states) >= expected and all(s in ("TERMINATED", "ERROR") for s in states.values())
    state_files = sorted(run_dir.glob(runfolder.EXPERIMENT_STATE_GLOB), key=lambda f: f.stat().st_mtime)
    when = (time.strftime("%Y-%m-%d %H:%M", time.localtime(state_files[-1].stat().st_mtime))
            if state_files else "?")
    errored = sum(s == "ERROR" for s in states.values())
    stopped = (runfolder.read_json(run_dir / runfolder.STOPPED_FILE) or {}).get("error", "")
    return Previous(run_dir, exists=True, same_space=same, finished=finished, trials=len(states), errored=errored,
                    when=when, stopped=stopped, instance=str(saved.get("instance", "")))


def new_instance() -> str:
    """A new search instance: when it started, and a few random letters (two started the same second differ)."""
    import secrets

    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def move_aside(run_dir: Path) -> Path:
    """Move an old run folder out of the way (``NAME.old-YYYYmmdd-HHMMSS``) so a search starts over."""
    target = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(target)
    return target


