"""A search as its stages, each a function of one ``Search`` object that it reads and fills in.

    result = search("search_spaces/demo.py", storage_path="~/ray_results")

    validate       options and the space -> Search (spec, run folder); bad input fails here, nothing started
    previous       what the run folder holds: continue it, report it (finished), refuse it, move it aside
    screen         the pre-screen (prescreen = {"keep": N}): the space's models cut to the best by LogME
    plan           capacity (a cluster joined here), GPU shares, trial slots: the Plan, once
    prepare        data and weights on every node before any trial (local: before Ray starts)
    run            the Tuner built and fitted (a local Ray started here)
    finish         keep-best, cleanup, the report, the summary

A stage that ends the search early (a dry run's plan, a finished search's results) sets
``Search.outcome``; Ray is stopped in one place (``RaySession.close``) however the stages end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_STORAGE
from ..spec import SearchSpec

if TYPE_CHECKING:
    from ..gpu_share import AutoShares
    from ..prescreen import Screen
    from .plan import Plan
    from .previous import Previous
    from .results import SearchResult
    from .session import RaySession

@dataclass
class SearchOptions:
    """How to run a search (``tunekit search``'s options; the space's own settings are in the spec)."""

    num_gpus: float | None = None  # GPUs the search may use in total (a limit, also on a cluster)
    address: str | None = None  # join the Ray cluster there ('auto': the one on this machine)
    storage_path: str | Path = DEFAULT_STORAGE
    resume: bool = False  # continue the interrupted search of this name
    restart: bool = False  # move a previous search of this name aside and start over
    dry_run: bool = False  # plan and print; start and download nothing
    verbose: bool = False  # Ray's own output too
    strict: bool = False  # unreadable images are an error, not a warning
    progress: str = "auto"  # events | summary | auto (tuner.progress)
    echo: Callable[[str], None] = print


@dataclass
class Search:
    """One search as it goes through its stages."""

    spec: SearchSpec  # what runs (after a pre-screen: the kept models)
    options: SearchOptions
    storage: Path
    session: RaySession
    original: SearchSpec | None = None  # the space as its file gave it (a pre-screened search's fingerprint)
    previous: Previous | None = None
    screen: Screen | None = None
    plan: Plan | None = None
    shares: AutoShares | None = None  # gpus_per_trial='auto': the probed share of each model
    checkpoints: bool = True  # False: the storage is not shared by every node
    notes: list[str] = field(default_factory=list)  # what a dry run adds to the plan's lines
    trial_start_s: list[float] = field(default_factory=list)  # each trial: a free slot -> its first step
    outcome: SearchResult | Plan | None = None  # set by the stage that ends the search

    @property
    def run_dir(self) -> Path:
        return self.storage / self.spec.name

    @property
    def restoring(self) -> bool:
        return self.previous is not None and self.previous.exists

    def echo(self, line: str) -> None:
        self.options.echo(line)


def search(space: str | Path | SearchSpec | dict[str, Any], **options: Any) -> SearchResult | Plan:
    """Run (or, with ``dry_run``, plan) a search of a space file, a dict of its settings, or a SearchSpec.

    Options: those of :class:`SearchOptions`, and the space's settings ``gpus_per_trial``,
    ``cpus_per_trial``, ``num_samples``, ``name`` and ``overrides`` (``--set``). A search of the same
    name in ``storage_path`` is continued if it is unfinished, reported if it finished (``restart``
    moves its folder aside and starts over), and refused if it was made from another space.
    """
    from . import nodes, plan, previous, run, screen
    from .results import finish
    from .validate import validate

    state = validate(space, options)
    try:
        for stage in (previous.decide, screen.prescreen, plan.plan, nodes.prepare, run.run, finish):
            stage(state)
            if state.outcome is not None:
                return state.outcome
        raise AssertionError("the finish stage sets the outcome")
    finally:
        state.session.close()
