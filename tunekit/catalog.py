"""What timm offers: its model names and their pretrained configs.

    check_model_name("resnet18")          # raises with close matches on a typo
    timm_pretrained_cfg("convnext_tiny")  # input size, mean/std, hub id, ...
"""

from __future__ import annotations

import functools

# isort: off
from . import _compat  # noqa: F401  - first: timm imports torchvision, which a CPU-only torch can break
import timm
# isort: on

from .errors import TunekitError, did_you_mean


@functools.lru_cache(maxsize=1)
def _all_models() -> tuple[str, ...]:
    return tuple(timm.list_models())


def check_model_name(name: str) -> None:
    """Raise with close matches if ``name`` (optionally ``arch.pretrained_tag``) is not a timm model."""
    arch, _, tag = name.partition(".")
    renamed = timm.models._registry._deprecated_models.get(name)
    if renamed:
        raise TunekitError(f"timm model {name!r} was renamed: use {renamed!r}")
    if not timm.is_model(arch):
        raise TunekitError(f"unknown timm model {name!r}{did_you_mean(arch, _all_models())}")
    if tag and name not in timm.list_pretrained(name):
        tags = timm.list_pretrained(f"{arch}.*")
        raise TunekitError(f"timm model {arch!r} has no pretrained tag {tag!r}{did_you_mean(name, tags)}; "
                           f"available: {', '.join(tags) or 'none'}")


def timm_pretrained_cfg(name: str):
    """timm's pretrained config of ``name`` (``arch`` or ``arch.tag``), or None."""
    return timm.get_pretrained_cfg(name) or timm.get_pretrained_cfg(name.partition(".")[0])


def fixed_input_size(name: str) -> bool:
    """ViT-style models are built for one input size (timm resamples their position embeddings)."""
    return bool(getattr(timm_pretrained_cfg(name), "fixed_input_size", False))
