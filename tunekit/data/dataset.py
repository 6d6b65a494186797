"""A dataset: a spec string -> labelled items -> decode-once cache -> device batches.

    ds = load("folder:~/data/birds", resize="crop", img_size=224)
    train = ds.batches("train", batch_size=64, device=torch.device("cuda"), mean=..., std=...)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import TunekitError
from .batches import Batches
from .cache import ImageCache, load_or_build, report_skipped
from .download import data_root
from .items import generated_shapes, natural_size, resolve_items  # noqa: F401 - also tunekit.data.dataset's
from .sources import Items
from .spec import DataSpec


@dataclass
class Dataset:
    spec: DataSpec
    items: Items  # all listed items, including any that failed to decode
    cache: ImageCache
    train_index: np.ndarray
    valid_index: np.ndarray
    targets: torch.Tensor

    @property
    def classes(self) -> list[str]:
        return self.items.classes

    @property
    def multilabel(self) -> bool:
        return self.items.multilabel

    def batches(self, split: str, **kwargs) -> Batches:
        """``Batches`` over the ``"train"`` or ``"valid"`` split (kwargs as ``Batches``)."""
        index = self.train_index if split == "train" else self.valid_index
        return Batches(self.cache, index, self.targets[index], train=split == "train", **kwargs)


def load(spec: str | DataSpec, resize: str, img_size: int, threads: int | None = None) -> Dataset:
    """Items of ``spec`` decoded once at ``img_size`` with ``resize``; unreadable files dropped."""
    spec = DataSpec.parse(spec)
    items = resolve_items(spec)
    name = spec.kind if spec.path is None else f"{spec.kind}-{spec.path.name}"
    cache = load_or_build(items.files, resize, img_size, data_root() / "cache", name=name, threads=threads)
    report_skipped(cache, strict=spec.opt("strict"))
    if not cache.ok.any():
        raise TunekitError(f"no readable images in data {str(spec)!r}")
    if not cache.ok.all():
        items.subset(cache.ok).check(f"data {str(spec)!r} after skipping unreadable images")
    return Dataset(
        spec, items, cache,
        train_index=np.flatnonzero(~items.is_valid & cache.ok),
        valid_index=np.flatnonzero(items.is_valid & cache.ok),
        targets=items.targets(),
    )
