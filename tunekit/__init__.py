"""tunekit: hyperparameter search for fine-tuning timm image backbones, on Ray Tune.

Python API (the CLI is a thin layer over it)::

    import tunekit
    result = tunekit.train(data="shapes", model="test_resnet", pretrained=False, epochs=3)
    result.history[-1]["error_rate"]

    found = tunekit.search("search_spaces/demo.py", storage_path="~/ray_results")
    found.trials.sort_values("error_rate").head()

Importing the package is cheap: torch, timm and Ray load when a function that needs them runs
(``tunekit --help`` answers without them). ``docs/ARCHITECTURE.md`` maps the modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _compat  # noqa: F401  - first: guards torchvision's import (a hook; imports nothing heavy)
from ._version import __version__
from .config import TrialConfig
from .errors import TunekitError

if TYPE_CHECKING:
    from .loop import FitResult, Reporter

__all__ = ["FitResult", "TrialConfig", "TunekitError", "__version__", "fit", "load_model", "search", "train"]


def train(report: Reporter | None = None, **config: Any) -> FitResult:
    """Fine-tune one configuration (keys as ``TrialConfig``); ``report(metrics, state)`` per epoch."""
    from .loop import fit

    return fit(TrialConfig.from_dict(config), report)


def search(space, **options):
    """Run a search (a space file, a dict of its settings, or a SearchSpec); options as
    ``tunekit search`` (``tuner.SearchOptions``: num_gpus, address, storage_path, resume, restart,
    dry_run, verbose, strict, progress, echo) and the settings gpus_per_trial, cpus_per_trial,
    num_samples, name, overrides. Returns a SearchResult (or, for a dry run, the Plan)."""
    from .tuner import search as run_search  # Ray is imported only when a search runs

    return run_search(space, **options)


def load_model(model_dir, device: str = "auto"):
    """A model folder written by ``tunekit export``: ``.predict(images)``, ``.module`` (the torch module)."""
    from .predict import load_model as load

    return load(model_dir, device)


def __getattr__(name: str) -> Any:
    """``tunekit.fit`` and ``tunekit.FitResult``, imported (with torch) on first use."""
    if name in ("fit", "FitResult"):
        from . import loop as _loop

        return getattr(_loop, name)
    raise AttributeError(f"module 'tunekit' has no attribute {name!r}")
