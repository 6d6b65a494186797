"""Data and weights on one node, before any trial: the work ``tuner.nodes`` runs on each node.

Kept out of ``tunekit.tuner`` on purpose: a Ray task runs this in a fresh worker on every node,
which imports this module and what it uses (the data, timm only for pretrained weights), not Ray
Tune, pandas and the training loop: on 16 simulated nodes sharing one 2-core machine that import
was most of the minute node preparation took (benchmarks/RESULTS.md).

    jobs = prepare_jobs(spec)                    # {"caches": [(resize, size), ...], "weights": [model, ...]}
    seen, warnings, facts = prepare_here(spec.data, jobs, marker=None)
    check_settings(spec, facts)                  # what every trial would fail with, refused before any
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DataFacts:
    """What the prepared data says that a trial's settings must fit: its readable training and validation
    images, whether it is multi-label, and its classes (the head the measurement stage builds)."""

    data: str
    n_train: int
    n_valid: int
    multilabel: bool
    n_classes: int = 0


def prepare_here(data: str, jobs: dict[str, list], marker: str | None) -> tuple[bool, list[str], DataFacts | None]:
    """Data caches and weights on this node. Returns whether ``marker`` is visible here, the warnings
    raised (skipped images), which a Ray task's stderr would hide from the user, and the data's facts
    (the fewest readable images over its caches)."""
    import warnings

    from . import data as tkdata

    facts = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for model in jobs["weights"]:  # first: offline fails in a second, data can take minutes
            fetch_weights(model)
        for resize, size in jobs["caches"]:
            ds = tkdata.load(data, resize, size)
            found = DataFacts(data, len(ds.train_index), len(ds.valid_index), ds.multilabel, len(ds.classes))
            facts = found if facts is None else min(facts, found, key=lambda f: (f.n_train, f.n_valid))
    ours = Path(__file__).parent
    notes = list(dict.fromkeys(str(w.message) for w in caught if Path(w.filename).is_relative_to(ours)))
    return marker is None or os.path.exists(marker), notes, facts


def listed_facts(data: str) -> DataFacts:
    """The facts of data on disk from its file list alone (a dry run decodes nothing: unreadable images,
    which a search then skips, are still counted); of generated data, from its options (nothing made)."""
    from .data.spec import GENERATED, DataSpec

    spec = DataSpec.parse(data)
    if spec.kind in GENERATED:  # split as data.sources.random_split splits them
        valid = int(spec.opt("valid_pct") * spec.opt("n"))
        return DataFacts(data, spec.opt("n") - valid, valid, spec.kind == "shapes-multilabel")
    from .data.items import resolve_items
    from .data.sources import count_split

    items = resolve_items(data, splitter=count_split)  # the split's counts: no torch
    valid = int(items.is_valid.sum())
    return DataFacts(data, len(items.files) - valid, valid, items.multilabel, len(items.classes))


def check_settings(spec: SearchSpec, facts: DataFacts) -> None:
    """Refuse, before any trial, the settings that every trial drawing them would fail with: a batch larger
    than the training images (an epoch of no batch), data with no validation image, a metric the data does
    not have (f2 is multi-label only). Every value the space can draw is checked; the message names the
    setting, the values that fail and the limit."""
    from .errors import TunekitError

    where = f"data {facts.data!r}"
    if facts.n_valid == 0:
        raise TunekitError(f"{where} has no validation images: every trial needs some to be scored (set valid_pct, "
                           f"or add a valid/ folder)")
    sizes = spec.values_of("batch_size")
    if sizes is None:  # drawn from a range
        high = spec.largest("batch_size")
        if high is not None and high > facts.n_train:
            raise TunekitError(f"batch_size is drawn up to {high:g}, and {where} has {facts.n_train} training images: "
                               f"a trial drawing more than {facts.n_train} would have no batch to train on; draw "
                               f"batch_size up to {facts.n_train}")
    else:
        bad = sorted({int(b) for b in sizes if int(b) > facts.n_train})
        if bad:
            what = (f"batch_size {bad[0]} is" if len(sizes) == 1 else
                    f"batch_size choice(s) {', '.join(map(str, bad))} of {sorted(set(map(int, sizes)))} are")
            raise TunekitError(f"{what} larger than the {facts.n_train} training images of {where}: every trial "
                               f"with it would fail (no full batch to train on); use a batch_size of at most "
                               f"{facts.n_train}, or more data")
    if spec.metric == "f2" and not facts.multilabel:
        raise TunekitError(f"metric 'f2' is for multi-label data, and {where} is single-label: use error_rate or "
                           f"accuracy")


def fetch_weights(model: str) -> None:
    import timm

    from .weights import local_weights, require_reachable

    if local_weights(model):
        return
    require_reachable(model)
    timm.create_model(model, pretrained=True, num_classes=0)
