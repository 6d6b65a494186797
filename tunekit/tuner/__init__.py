"""Searches on Ray Tune: ``search(space, ...)`` runs a search as its stages (``flow``), each in its own
module, passing one ``Search`` along:

    validate -> previous.decide -> screen.prescreen -> plan.plan -> nodes.prepare -> run.run -> results.finish

    result = search("search_spaces/demo.py", storage_path="~/ray_results")
    result.trials.sort_values("error_rate").head()

Ray is started locally (dashboard off) and stopped afterwards, unless ``address`` joins a cluster
started with ``ray start`` (``session``: the one place Ray is started and stopped). Before any
trial, every node prepares the data once (download, decode-once cache) and the pretrained weights.
Trials report every epoch; ASHA promotes or stops them on the epoch count; each trial checkpoints
every epoch (the last two kept while it runs, removed when it ends) and is retried from the latest
on failure. Re-running with the same name (or ``resume=True``) continues an interrupted search:
finished trials are kept.

The other modules: ``assemble`` (the Tuner), ``trainable`` (a trial), ``asha`` (promoting ASHA),
``callbacks`` (TensorBoard, cleanup), ``progress`` (events.log; the event stream or a live status),
``trial_start``, ``ray_api`` (every use of Ray beyond its public API). This package only re-exports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ..config import DEFAULT_STORAGE
from .state import Plan, Search, SearchOptions

if TYPE_CHECKING:
    from .flow import search
    from .results import SearchResult

# Ray Tune, torch, timm and pandas load when a search runs, not for a dry run's plan (benchmarks/RESULTS.md);
# the search's stages not at all in a trial's worker, which imports only tuner.trainable (its start is a trial's)
_LAZY = {"search": "flow", "SearchResult": "results", "finish": "results", "summary": "results"}
__all__ = ["DEFAULT_STORAGE", "Plan", "Search", "SearchOptions", "SearchResult", "finish", "search", "summary"]
__getattr__ = lazy_exports(__name__, _LAZY)
