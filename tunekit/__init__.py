"""tunekit: hyperparameter search for fine-tuning timm image backbones, on Ray Tune.

Python API (the CLI is a thin layer over it)::

    import tunekit
    result = tunekit.train(data="shapes", model="test_resnet", pretrained=False, epochs=3)
    result.history[-1]["error_rate"]
"""

from __future__ import annotations

from . import _compat  # noqa: F401  - must run before anything imports torchvision (timm does)
from .config import TrialConfig
from .errors import TunekitError
from .train import FitResult, Reporter, fit

__version__ = "0.1.0"
__all__ = ["FitResult", "TrialConfig", "TunekitError", "fit", "train"]


def train(report: Reporter | None = None, **config) -> FitResult:
    """Fine-tune one configuration (keys as ``TrialConfig``); ``report(metrics, state)`` per epoch."""
    return fit(TrialConfig.from_dict(config), report)
