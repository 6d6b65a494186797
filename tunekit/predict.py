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

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrialConfig
from .data.batches import Batches
from .data.cache import ImageCache, canvas_width, decode, decode_image, decode_into, why_unreadable
from .device import Amp, inference_precision, resolve_device, resolve_precision
from .errors import TunekitError
from .export import WEIGHTS_FILE, read_manifest
from .model import FineTuneModel, build_model

SPLITS = ("all", "valid", "train")
# Images decoded and predicted at a time: memory stays flat (~100 MB of pixels at 224px) on any folder.
CHUNK = 512


@dataclass
class Prediction:
    """One image's prediction: its label(s), the probability of the first, and the ``top`` classes."""

    source: str
    labels: list[str]
    probability: float
    top: list[tuple[str, float]] = field(default_factory=list)


class LoadedModel:
    """An exported model, ready to predict: ``.module`` is the torch ``nn.Module`` (timm body, pool, head)."""

    def __init__(self, module: FineTuneModel, manifest: dict[str, Any], device: torch.device,
                 precision: str = "trained") -> None:
        self.module, self.manifest, self.device = module, manifest, device
        self.classes: list[str] = list(manifest["classes"])
        self.multilabel: bool = bool(manifest["multilabel"])
        self.threshold: float = float(manifest["threshold"])
        self.img_size: int = int(manifest["img_size"])
        self.resize: str = manifest["resize"]
        if precision == "trained":  # the trial's own precision where the device has it (device.inference_precision)
            capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
            precision = inference_precision(manifest.get("precision"), device.type, capability)
        self.amp = Amp.create(resolve_precision(precision, device), device)

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
        with torch.inference_mode(), self.amp.autocast(), _bar(len(batches), progress, "batch") as bar:
            for x, _ in batches.epoch(0):
                outs.append(self.module(x).float().cpu())
                bar.update(1)
        return torch.cat(outs) if outs else torch.zeros(0, len(self.classes))

    def predict_chunks(self, images: Sequence[str | Path | Any], top: int = 1, batch_size: int = 64,
                       skip_unreadable: bool = True,
                       progress: bool = False) -> Iterator[tuple[list[Prediction], list[str]]]:
        """Predictions, ``CHUNK`` images at a time (memory stays flat however many there are), each
        chunk's with the unreadable files it skipped."""
        with _bar(len(images), progress, "image") as bar:
            for start in range(0, len(images), CHUNK):
                part = images[start:start + CHUNK]
                cache, skipped = decode_all(part, self.resize, self.img_size, skip_unreadable)
                ok = np.flatnonzero(cache.ok)
                sources = [str(part[i]) if isinstance(part[i], (str, Path)) else f"<image {start + i}>" for i in ok]
                yield self.interpret(self.logits(cache, ok, batch_size), sources, top), skipped
                bar.update(len(part))

    def predict(self, images: Iterable[str | Path | Any], top: int = 1, batch_size: int = 64,
                progress: bool = False) -> list[Prediction]:
        """Predictions for image files, PIL images or HWC uint8 arrays (unreadable files raise)."""
        chunks = self.predict_chunks(list(images), top, batch_size, skip_unreadable=False, progress=progress)
        return [p for predictions, _ in chunks for p in predictions]

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


def load_model(model_dir: str | Path, device: str = "auto", precision: str = "trained") -> LoadedModel:
    """Load a folder written by ``tunekit export`` (no Ray, no run folder, no network). ``precision``:
    ``trained`` (the trial's own where this device has it), or one of config.PRECISIONS."""
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
    return LoadedModel(module.to(dev).eval(), manifest, dev, precision)


def decode_all(images: Sequence[Any], resize: str, size: int, skip_unreadable: bool = True,
               threads: int | None = None) -> tuple[ImageCache, list[str]]:
    """Decode images (paths, PIL images, arrays) in parallel into an in-memory cache, as training's
    decode-once cache stores them (``data.cache.decode_into``); returns it and "path: reason" for each
    unreadable file (skipped, or raised with ``skip_unreadable=False``)."""
    n, width = len(images), canvas_width(resize, size)
    pixels = np.zeros((n, size, width, 3), dtype=np.uint8)
    extent, transposed, ok = np.zeros(n, dtype=np.int32), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)

    def decode_one(i: int) -> tuple[np.ndarray, bool]:
        item = images[i]
        if isinstance(item, (str, Path)):
            return decode(Path(item), resize, size)
        return decode_image(_as_pil(item), resize, size)

    errors = decode_into(pixels, extent, transposed, ok, decode_one, threads)
    for i, e in errors.items():
        if not isinstance(images[i], (str, Path)):  # an object handed over in Python: its caller's bug
            raise TunekitError(f"image {i} cannot be read: {e}")
    skipped = [f"{images[i]}: {why_unreadable(Path(images[i]), e)}" for i, e in sorted(errors.items())]
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


def _bar(total: int, enabled: bool, unit: str):
    """A progress bar on stderr, shown only when asked for and when there is enough to wait for."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc="predicting", file=sys.stderr,
                disable=not enabled or total < (4 if unit == "batch" else 4 * CHUNK))
