"""Put an exported model to work: load it, predict on new images, evaluate it on labelled data.

    model = load_model("best/")                    # a folder from `tunekit export`
    model.predict(["cat.jpg", pil_image, uint8_array], top=3)
    evaluate(model, "folder:~/data/test", split="all")

Images go through the same preprocessing as validation during training: each is decoded and resized
by the resize method as the decode-once cache does (``data.cache.decode_image``), then centre-cropped
and normalized by ``data.batches.Batches`` in validation mode. So ``evaluate(..., split="valid")`` on
the data a trial trained on computes what that trial's last validation computed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrialConfig
from .data.batches import Batches
from .data.cache import ImageCache, canvas_width, decode, decode_image
from .device import Amp, resolve_device, resolve_precision
from .errors import TunekitError
from .export import WEIGHTS_FILE, read_manifest
from .model import FineTuneModel, build_model

SPLITS = ("all", "valid", "train")


@dataclass
class Prediction:
    """One image's prediction: its label(s), the probability of the first, and the ``top`` classes."""

    source: str
    labels: list[str]
    probability: float
    top: list[tuple[str, float]] = field(default_factory=list)


class LoadedModel:
    """An exported model, ready to predict: ``.module`` is the torch ``nn.Module`` (timm body, pool, head)."""

    def __init__(self, module: FineTuneModel, manifest: dict[str, Any], device: torch.device) -> None:
        self.module, self.manifest, self.device = module, manifest, device
        self.classes: list[str] = list(manifest["classes"])
        self.multilabel: bool = bool(manifest["multilabel"])
        self.threshold: float = float(manifest["threshold"])
        self.img_size: int = int(manifest["img_size"])
        self.resize: str = manifest["resize"]
        self.amp = Amp.create(resolve_precision("auto", device), device)

    def __repr__(self) -> str:
        return (f"LoadedModel({self.manifest['model']}, {len(self.classes)} classes, {self.img_size}px "
                f"{self.resize}, on {self.device})")

    def logits(self, cache: ImageCache, index: np.ndarray, batch_size: int = 64,
               progress: bool = False) -> torch.Tensor:
        """Raw outputs for the cached images at ``index``, in order (validation's preprocessing)."""
        batches = Batches(cache, index, torch.zeros(len(index), dtype=torch.long), train=False, batch_size=batch_size,
                          device=self.device, mean=tuple(self.manifest["mean"]), std=tuple(self.manifest["std"]))
        outs = []
        self.module.eval()
        with torch.inference_mode(), self.amp.autocast():
            for x, _ in _progress(batches.epoch(0), len(batches), progress and len(batches) > 4):
                outs.append(self.module(x).float().cpu())
        return torch.cat(outs) if outs else torch.zeros(0, len(self.classes))

    def predict(self, images: Iterable[str | Path | Any], top: int = 1, batch_size: int = 64,
                progress: bool = False) -> list[Prediction]:
        """Predictions for image files, PIL images or HWC uint8 arrays (unreadable files raise)."""
        images = list(images)
        cache, _ = decode_all(images, self.resize, self.img_size, skip_unreadable=False)
        return self.interpret(self.logits(cache, np.arange(len(images)), batch_size, progress),
                              [str(i) if isinstance(i, (str, Path)) else f"<image {n}>" for n, i in enumerate(images)],
                              top)

    def interpret(self, logits: torch.Tensor, sources: Sequence[str], top: int = 1) -> list[Prediction]:
        out = []
        probs = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)
        k = max(1, min(top, len(self.classes)))
        for source, p in zip(sources, probs):
            best = torch.topk(p, k)
            ranked = [(self.classes[int(i)], float(v)) for v, i in zip(best.values, best.indices)]
            if self.multilabel:
                labels = [c for c, v in zip(self.classes, p.tolist()) if v > self.threshold]
                chance = max((float(v) for v in p[[self.classes.index(c) for c in labels]]), default=0.0)
            else:
                labels, chance = [ranked[0][0]], ranked[0][1]
            out.append(Prediction(source, labels, chance, ranked))
        return out


def load_model(model_dir: str | Path, device: str = "auto") -> LoadedModel:
    """Load a folder written by ``tunekit export`` (no Ray, no run folder, no network)."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir).expanduser()
    manifest = read_manifest(model_dir)
    cfg = TrialConfig(model=manifest["model"], pool=manifest["pool"], head=manifest["head"], pretrained=False,
                      img_size=int(manifest["img_size"]))
    module, _ = build_model(cfg, len(manifest["classes"]), int(manifest["img_size"]))
    state = load_file(str(model_dir / WEIGHTS_FILE))
    out_key = next((k for k in reversed(list(state)) if k.startswith("head.") and k.endswith("weight")), None)
    if out_key is not None and state[out_key].shape[0] != len(manifest["classes"]):
        raise TunekitError(f"{model_dir}: {len(manifest['classes'])} class names in its manifest, but the weights' "
                           f"head has {state[out_key].shape[0]} outputs")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise TunekitError(f"{model_dir}: the weights do not fit {manifest['model']} with pool "
                           f"{manifest['pool']!r} and head {manifest['head']!r} ({first})") from None
    dev = resolve_device(device)
    return LoadedModel(module.to(dev).eval(), manifest, dev)


def decode_all(images: Sequence[Any], resize: str, size: int, skip_unreadable: bool = True,
               threads: int | None = None) -> tuple[ImageCache, list[str]]:
    """Decode images (paths, PIL images, arrays) in parallel into an in-memory cache, as training's
    decode-once cache stores them; returns it and "path: reason" for each unreadable file (skipped, or
    raised with ``skip_unreadable=False``)."""
    from .data.cache import _why_unreadable

    n, width = len(images), canvas_width(resize, size)
    pixels = np.zeros((n, size, width, 3), dtype=np.uint8)
    extent, transposed, ok = np.zeros(n, dtype=np.int32), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    problems: dict[int, str] = {}

    def work(i: int) -> None:
        item = images[i]
        try:
            arr, t = decode(Path(item), resize, size) if isinstance(item, (str, Path)) else \
                decode_image(_as_pil(item), resize, size)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
            if not isinstance(item, (str, Path)):
                raise TunekitError(f"image {i} cannot be read: {e}") from None
            problems[i] = f"{item}: {_why_unreadable(Path(item), e)}"
            return
        pixels[i, :, : arr.shape[1]] = arr
        extent[i], transposed[i], ok[i] = arr.shape[1], t, True

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:  # PIL releases the GIL
        list(pool.map(work, range(n)))
    skipped = [problems[i] for i in sorted(problems)]
    if skipped and not skip_unreadable:
        raise TunekitError(f"{len(skipped)} unreadable image(s):\n  " + "\n  ".join(skipped))
    cache = ImageCache(pixels, extent, transposed, ok, skipped, resize, size, Path("<memory>"))
    return cache, skipped


def image_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The images to predict: files as given, folders searched recursively for image files. A missing
    path, or no image at all, is an error (named)."""
    from .data.sources import IMAGE_SUFFIXES, image_files

    files: list[Path] = []
    for path in map(lambda p: Path(p).expanduser(), paths):
        if not path.exists():
            raise TunekitError(f"{path} does not exist")
        found = image_files(path) if path.is_dir() else [path]
        if path.is_dir() and not found:
            raise TunekitError(f"no images in folder {str(path)!r} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                               f"in subfolders too)")
        files += found
    return files


def _as_pil(item: Any):
    from PIL import Image

    if isinstance(item, Image.Image):
        return item
    arr = np.asarray(item)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise TunekitError(f"an image array must be uint8 HxW or HxWxC, got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    import sys

    from tqdm import tqdm

    return tqdm(iterable, total=total, unit="batch", desc="predicting", file=sys.stderr)
