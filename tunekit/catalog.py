"""What timm offers: its model names and their pretrained configs.

    check_model_name("resnet18")          # raises with close matches on a typo
    timm_pretrained_cfg("convnext_tiny")  # input size, mean/std, hub id, ...

Checking a space's model names must not cost an import of timm and torch (4 s of a 5 s dry run of
the study's 1,020-trial sweep on a 2-core machine): the names timm registers are kept in an index
per timm version (``~/.cache/tunekit/timm-VERSION.json``, written the first time timm is imported
for a check). A name the index knows passes without timm; any other is checked against timm
itself, which also knows the models a user registered in this process.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import metadata
from pathlib import Path

from .errors import TunekitError, did_you_mean
from .paths import cache_root


def _timm():
    import timm  # after tunekit/__init__'s _compat guard, which any import of this module ran first

    return timm


@functools.lru_cache(maxsize=1)
def _all_models() -> tuple[str, ...]:
    return tuple(_timm().list_models())


@functools.lru_cache(maxsize=1)
def _deprecated() -> dict[str, str | None]:
    """timm's renamed models, old name -> new (its public accessor copies the table: once per process)."""
    return _timm().models.get_deprecated_models()


def index_file(version: str | None = None) -> Path:
    return cache_root() / f"timm-{version or metadata.version('timm')}.json"


@functools.lru_cache(maxsize=1)
def _index() -> frozenset[str]:
    """Every timm architecture and every ``arch.tag`` with pretrained weights, from the index of
    this timm version (an empty set when there is none yet, or it cannot be read)."""
    try:
        names = json.loads(index_file().read_text())["names"]
        return frozenset(names) if isinstance(names, list) else frozenset()
    except (OSError, ValueError, KeyError, TypeError, metadata.PackageNotFoundError):
        return frozenset()


def write_index() -> Path | None:
    """The index of the timm installed here (atomically; None where the cache folder is not writable):
    timm's own models only, not those a user registered in this process."""
    timm = _timm()
    path = index_file(timm.__version__)
    names = sorted(n for n in set(_all_models()) | set(timm.list_pretrained())
                   if registered_by(n.partition(".")[0], look=True) is None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"timm": timm.__version__, "names": names}))
        os.replace(tmp, path)
    except OSError:
        return None
    _index.cache_clear()
    return path


def check_model_name(name: str) -> None:
    """Raise with close matches if ``name`` (optionally ``arch.pretrained_tag``) is not a timm model."""
    if name in _index():  # known to this timm version: no import
        return
    timm = _timm()
    arch, _, tag = name.partition(".")
    renamed = _deprecated().get(name)
    if renamed:
        raise TunekitError(f"timm model {name!r} was renamed: use {renamed!r}")
    if not timm.is_model(arch):
        raise TunekitError(f"unknown timm model {name!r}{did_you_mean(arch, _all_models())}")
    if tag and name not in timm.list_pretrained(name):
        tags = timm.list_pretrained(f"{arch}.*")
        raise TunekitError(f"timm model {arch!r} has no pretrained tag {tag!r}{did_you_mean(name, tags)}; "
                           f"available: {', '.join(tags) or 'none'}")
    if not _index():
        write_index()


def registered_by(name: str, look: bool = False) -> str | None:
    """The module that registered ``name`` when it is not one of timm's own (a user's ``@register_model``),
    else None. A name in the index is timm's own (no import); ``look``: ask timm even so."""
    arch = name.partition(".")[0]
    if not look and (name in _index() or arch in _index()):
        return None
    timm = _timm()
    if not timm.is_model(arch):
        return None
    module = timm.models.model_entrypoint(arch).__module__
    return None if module.startswith("timm.") else module


def timm_pretrained_cfg(name: str):
    """timm's pretrained config of ``name`` (``arch`` or ``arch.tag``), or None."""
    timm = _timm()
    return timm.get_pretrained_cfg(name) or timm.get_pretrained_cfg(name.partition(".")[0])


def fixed_input_size(name: str) -> bool:
    """ViT-style models are built for one input size (timm resamples their position embeddings)."""
    return bool(getattr(timm_pretrained_cfg(name), "fixed_input_size", False))
