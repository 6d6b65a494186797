"""Datasets: a spec string -> labelled items -> decode-once cache -> device batches.

    ds = load("folder:~/data/birds", resize="crop", img_size=224)
    train = ds.batches("train", batch_size=64, device=torch.device("cuda"), mean=..., std=...)

``spec`` (the spec strings; no heavy imports, so the CLI can check a spec at once), ``sources``
(layouts on disk), ``shapes`` (the built-in data), ``download``, ``cache`` (decode once),
``batches`` (what happens per epoch), ``dataset`` (all of it together: ``load``). The names
below are imported on first use, so ``from tunekit.data.spec import DataSpec`` loads no torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_WHERE = {"Dataset": "dataset", "load": "dataset", "natural_size": "items", "resolve_items": "items",
          "generated_shapes": "items", "Batches": "batches", "Items": "sources", "DataSpec": "spec",
          "data_root": "download"}
__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)
