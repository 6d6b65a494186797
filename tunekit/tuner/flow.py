"""A search as its stages, each a function of one ``Search`` object that it reads and fills in.

    result = search("search_spaces/demo.py", storage_path="~/ray_results")

    validate       options and the space -> Search (spec, run folder); bad input fails here, nothing started
    previous       what the run folder holds: continue it, report it (finished), refuse it, move it aside
    screen         the pre-screen (prescreen = {"keep": N}): the space's models cut to the best by LogME
    plan           capacity (a cluster joined here), trial slots: the Plan, once; a dry run ends here
    prepare        data and weights on every node before any trial (local: before Ray starts)
    measure        what the plan decides by that the machine must measure (auto's GPU shares, steps alone for
                   fit_time_unshared, compiled steps for compile=auto), in one process of its own
    run            the Tuner built and fitted (a local Ray started here)
    finish         keep-best, cleanup, the report, the summary

A stage that ends the search early (a dry run's plan, a finished search's results) sets
``Search.outcome`` (``tuner.state``); Ray is stopped in one place (``RaySession.close``) however the
stages end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..spec import SearchSpec
from .measure import measure
from .nodes import prepare
from .plan import plan
from .previous import decide
from .results import finish
from .run import run
from .screen import prescreen
from .validate import validate

if TYPE_CHECKING:
    from .results import SearchResult
    from .state import Plan


def search(space: str | Path | SearchSpec | dict[str, Any], **options: Any) -> SearchResult | Plan:
    """Run (or, with ``dry_run``, plan) a search of a space file, a dict of its settings, or a SearchSpec.

    Options: those of :class:`SearchOptions`, and the space's settings ``gpus_per_trial``,
    ``cpus_per_trial``, ``num_samples``, ``name`` and ``overrides`` (``--set``). A search of the same
    name in ``storage_path`` is continued if it is unfinished, reported if it finished (``restart``
    moves its folder aside and starts over), and refused if it was made from another space.
    """
    state = validate(space, options)
    try:
        for stage in (decide, prescreen, plan, prepare, measure, run, finish):
            stage(state)
            if state.outcome is not None:
                return state.outcome
        raise AssertionError("the finish stage sets the outcome")
    finally:
        state.session.close()
