"""Rank backbones before fine-tuning them: LogME on each one's features of the training images.

    rows = rank_models("fashion_mnist?n_train=300", ["tf_efficientnet_lite0", "resnet18"])
    rows[0].model, rows[0].logme                    # best first; unscored models last

One forward pass per model over (a tenth, at least 500, or ``max_images``; class-stratified) training
images, read
from the decode-once cache with the validation transform (centre crop, no flip), pooled by the
backbone's average pool (its own pooled representation for token models), under AMP on a GPU;
then :func:`tunekit.logme.logme` on the features and labels. A model whose pretrained weights are
neither on this machine nor downloadable is listed, not scored. It is a filter, not an oracle:
a search then measures what it keeps, and the report shows how well the ranking predicted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import data as tkdata
from .config import TrialConfig
from .data.size import img_size_rule
from .device import Amp, peak_memory_gib, reset_peak_memory, resolve_device, resolve_precision, synchronize
from .errors import TunekitError
from .logme import logme
from .model import build_model
from .weights import check_weights_available

log = logging.getLogger("tunekit")

MIN_IMAGES = 500  # the default sample: a tenth of the training images, at least this many (all, if fewer)
RESIZE = "crop"  # the trials' default geometry; the validation transform of it


@dataclass
class Ranked:
    model: str
    logme: float | None  # None: not scored (see status)
    status: str  # "scored", or why not
    img_size: int = 0
    images: int = 0
    seconds: float = 0.0  # forward pass + LogME (model building and weight loading excluded)
    images_per_s: float = 0.0
    peak_mem_gib: float = 0.0
    rank: int | None = None  # 1 = best LogME

    def to_dict(self) -> dict:
        return asdict(self)


def rank_models(data: str, models: Iterable[str], *, img_size: int | None = None, max_images: int | None = None,
                pretrained: bool = True, device: str = "auto", precision: str = "auto", batch_size: int = 128,
                seed: int = 0, on_row: Callable[[Ranked], None] | None = None) -> list[Ranked]:
    """LogME of each model on ``data``'s training images (``max_images`` of them, default a tenth, at
    least ``MIN_IMAGES``), best first (unscored last)."""
    if max_images is not None and max_images < 2:
        raise TunekitError(f"max_images must be at least 2, got {max_images}")
    models = list(dict.fromkeys(models))
    if not models:
        raise TunekitError("no models to rank")
    tkdata.DataSpec.parse(data).check_path()
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    rows = []
    datasets: dict[int, tkdata.Dataset] = {}  # by image size: listed and opened once, not once per model
    for name in models:
        row = _rank_one(data, name, img_size, max_images, pretrained, dev, prec, batch_size, seed, datasets)
        if on_row is not None:
            on_row(row)
        rows.append(row)
    scored = sorted((r for r in rows if r.logme is not None), key=lambda r: -r.logme)
    for i, r in enumerate(scored, 1):
        r.rank = i
    return scored + [r for r in rows if r.logme is None]


def _rank_one(data: str, name: str, img_size: int | None, max_images: int | None, pretrained: bool,
              device: torch.device, precision: str, batch_size: int, seed: int,
              datasets: dict[int, tkdata.Dataset]) -> Ranked:
    cfg = TrialConfig(data=data, model=name, pool="avg", head="linear", resize=RESIZE, pretrained=pretrained,
                      img_size=img_size, seed=seed)
    if pretrained:
        try:
            check_weights_available(name)
        except TunekitError:
            return Ranked(name, None, "no pretrained weights here")
    size = img_size_rule(cfg)[0]
    if size not in datasets:
        datasets[size] = tkdata.load(data, RESIZE, size)
    ds = datasets[size]
    index = sample(ds, max_images, seed)
    torch.manual_seed(seed)
    model, info = build_model(cfg, max(len(ds.classes), 1), size)
    model.to(device).eval()
    batches = tkdata.Batches(ds.cache, index, ds.targets[index], train=False, batch_size=batch_size, device=device,
                             mean=info.mean, std=info.std)  # one pass: the images are read from the host
    amp = Amp.create(precision, device)
    reset_peak_memory(device)
    start = time.perf_counter()
    feats, labels = [], []
    with torch.inference_mode(), amp.autocast():
        for x, y in batches.epoch(0):
            feats.append(model.pooled(model.body.forward_features(x)).float().cpu())
            labels.append(y.cpu())
    synchronize(device)
    f, y = torch.cat(feats).numpy(), torch.cat(labels).numpy()
    score = logme(f, y, multilabel=ds.multilabel)
    seconds = time.perf_counter() - start
    log.debug("%s: LogME %.4f on %d images in %.2f s", name, score, len(f), seconds)
    return Ranked(name, score, "scored", img_size=size, images=len(f), seconds=seconds,
                  images_per_s=len(f) / seconds, peak_mem_gib=peak_memory_gib(device))


def sample(ds: tkdata.Dataset, max_images: int | None, seed: int) -> np.ndarray:
    """Up to ``max_images`` training items (default: a tenth, at least ``MIN_IMAGES``), the same share
    of every class (single-label), sorted."""
    index = ds.train_index
    if max_images is None:
        max_images = max(MIN_IMAGES, len(index) // 10)
    if len(index) <= max_images:
        return index
    rng = np.random.default_rng(seed)
    if ds.multilabel:
        return np.sort(rng.choice(index, max_images, replace=False))
    targets = ds.targets[index].numpy()
    picked = []
    for c in np.unique(targets):
        members = index[targets == c]
        take = max(1, round(len(members) * max_images / len(index)))
        picked.append(rng.choice(members, min(take, len(members)), replace=False))
    return np.sort(np.concatenate(picked))
