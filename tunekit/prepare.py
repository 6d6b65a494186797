"""Data and weights on one node, before any trial: the work ``tuner.nodes`` runs on each node.

Kept out of ``tunekit.tuner`` on purpose: a Ray task runs this in a fresh worker on every node,
which imports this module and what it uses (the data, timm only for pretrained weights), not Ray
Tune, pandas and the training loop: on 16 simulated nodes sharing one 2-core machine that import
was most of the minute node preparation took (benchmarks/RESULTS.md).

    jobs = prepare_jobs(spec)                    # {"caches": [(resize, size), ...], "weights": [model, ...]}
    seen, warnings = prepare_here(spec.data, jobs, marker=None)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .config import TrialConfig

if TYPE_CHECKING:
    from .spec import SearchSpec


def prepare_jobs(spec: SearchSpec) -> dict[str, list]:
    """What every node needs before a trial of ``spec``: a decode-once cache per (resize, image size)
    the space can ask for, and the pretrained weights of its models."""
    from .data.size import resolve_img_size

    models = spec.values_of("model") or []
    resizes = spec.values_of("resize") or []
    sizes = spec.values_of("img_size")
    pretrained = spec.values_of("pretrained") or [True]
    caches = set()
    for model in models:
        for resize in resizes:
            for size in sizes or [None]:
                cfg = TrialConfig(data=spec.data, model=model, img_size=size, pretrained=False)
                caches.add((resize, resolve_img_size(cfg)))
    weights = sorted({m for m in models for p in pretrained if p is True})
    return {"caches": sorted(caches), "weights": weights}


def prepare_here(data: str, jobs: dict[str, list], marker: str | None) -> tuple[bool, list[str]]:
    """Data caches and weights on this node. Returns whether ``marker`` is visible here, and the
    warnings raised (skipped images), which a Ray task's stderr would hide from the user."""
    import warnings

    from . import data as tkdata

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for model in jobs["weights"]:  # first: offline fails in a second, data can take minutes
            fetch_weights(model)
        for resize, size in jobs["caches"]:
            tkdata.load(data, resize, size)
    ours = Path(__file__).parent
    notes = list(dict.fromkeys(str(w.message) for w in caught if Path(w.filename).is_relative_to(ours)))
    return marker is None or os.path.exists(marker), notes


def fetch_weights(model: str) -> None:
    import timm

    from .weights import local_weights, require_reachable

    if local_weights(model):
        return
    require_reachable(model)
    timm.create_model(model, pretrained=True, num_classes=0)
