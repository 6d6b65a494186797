"""Decode-once image cache: every image decoded and resized ONCE per (files, resize, size).

The result is a memory-mapped ``uint8`` array on local disk, built under a file lock so
that all trials on a node share one copy (the OS page cache serves them all). Training
then never touches JPEG again: crops, flips and normalization run on tensors (see
``batches.py``).

Geometry per resize method, for target size S:

* ``squish``: resized to S x S, aspect ignored.
* ``pad``: letterboxed to S x S (long side S, black bars).
* ``crop``: short side resized to S; the long side kept up to ``CROP_MAX_ASPECT`` * S
  (centre-trimmed beyond) so training can take a random S x S window along it. Portrait
  images are stored transposed (long side always along the width, ``transposed`` flag
  set); a window of a transposed image transposed back equals the window of the original.
  ``extent`` holds each image's stored long side.

Unreadable files (corrupt, truncated, empty, not an image) are marked in ``ok`` and named
in ``skipped``; grayscale, palette, RGBA, CMYK and 16-bit images are converted to RGB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageFile, UnidentifiedImageError

log = logging.getLogger("tunekit")

FORMAT_VERSION = 1
CROP_MAX_ASPECT = 4 / 3  # covers the common 4:3 photo (Oxford-IIIT Pets is mostly 500x375)


@dataclass
class ImageCache:
    images: np.ndarray  # (N, S, W, 3) uint8, memory-mapped
    extent: np.ndarray  # (N,) stored long side (== S except for crop)
    transposed: np.ndarray  # (N,) bool
    ok: np.ndarray  # (N,) bool: decoded successfully
    skipped: list[str]  # "file: reason" for each item not ok
    resize: str
    size: int
    path: Path


def cache_key(files: list[Path], resize: str, size: int) -> str:
    """Identity of a cache: the files (path, size, mtime), the resize method and size."""
    h = hashlib.sha1(f"{FORMAT_VERSION}|{resize}|{size}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def canvas_width(resize: str, size: int) -> int:
    return math.ceil(size * CROP_MAX_ASPECT) if resize == "crop" else size


def load_or_build(files: list[Path], resize: str, size: int, root: Path, name: str = "data",
                  threads: int | None = None) -> ImageCache:
    """The cache for ``files`` under ``root``, building it first if no process has yet."""
    key = cache_key(files, resize, size)
    final = root / f"{name}-{resize}-{size}-{key}"
    if not (final / "meta.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if not (final / "meta.json").is_file():  # another process may have built it meanwhile
                _build(files, resize, size, final, threads)
    return _open(final, resize, size)


def _open(path: Path, resize: str, size: int) -> ImageCache:
    meta = json.loads((path / "meta.json").read_text())
    arrays = np.load(path / "index.npz")
    return ImageCache(
        images=np.load(path / "images.npy", mmap_mode="r"),
        extent=arrays["extent"], transposed=arrays["transposed"], ok=arrays["ok"],
        skipped=meta["skipped"], resize=resize, size=size, path=path,
    )


def _build(files: list[Path], resize: str, size: int, final: Path, threads: int | None) -> None:
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, width = len(files), canvas_width(resize, size)
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, width, 3))
    extent = np.zeros(n, dtype=np.int32)
    transposed = np.zeros(n, dtype=bool)
    ok = np.zeros(n, dtype=bool)
    log.info("decoding %d images once into %s (%s %dpx)", n, final, resize, size)
    errors = decode_into(images, extent, transposed, ok, lambda i: decode(files[i], resize, size), threads)
    images.flush()
    np.savez(tmp / "index.npz", extent=extent, transposed=transposed, ok=ok)
    skipped = [f"{files[i]}: {why_unreadable(files[i], e)}" for i, e in sorted(errors.items())]
    (tmp / "meta.json").write_text(json.dumps({"n": n, "resize": resize, "size": size, "skipped": skipped}))
    os.replace(tmp, final)


def decode_into(images: np.ndarray, extent: np.ndarray, transposed: np.ndarray, ok: np.ndarray,
                decode_one: Callable[[int], tuple[np.ndarray, bool]], threads: int | None) -> dict[int, Exception]:
    """Decode items ``0..len(images)-1`` with ``decode_one(i)`` into the arrays, as the cache stores them
    (image, stored width, transposed, ok), in parallel threads (PIL releases the GIL while decoding and
    resizing, so threads scale); returns each failed item's exception, by index."""
    errors: dict[int, Exception] = {}

    def work(i: int) -> None:
        try:
            arr, t = decode_one(i)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
            errors[i] = e
            return
        images[i, :, : arr.shape[1]] = arr
        extent[i], transposed[i], ok[i] = arr.shape[1], t, True

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        list(pool.map(work, range(len(images))))
    return errors


def why_unreadable(path: Path, error: Exception) -> str:
    """A short reason for the skipped-files warning (PIL's messages repeat the path)."""
    if isinstance(error, OSError) and not isinstance(error, UnidentifiedImageError) and error.filename:
        return f"{type(error).__name__}: {error.strerror or error}"  # permission, vanished file
    if path.is_file() and path.stat().st_size == 0:
        return "empty file (0 bytes)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image (or a format PIL cannot read)"
    text = str(error)
    if "truncated" in text:
        return "truncated image"
    return f"corrupt image ({type(error).__name__}: {text[:100]})"


def decode(path: Path, resize: str, size: int) -> tuple[np.ndarray, bool]:
    """One file -> (H=size, W, 3) uint8 per the resize method, and whether it was transposed."""
    with open(path, "rb") as f:
        img = Image.open(f)
        # JPEG's DCT scaling decodes straight to a smaller size: much faster for big photos.
        img.draft("RGB", (size * 2, size * 2))
        img = _to_rgb(img)
    return decode_image(img, resize, size)


def decode_image(img: Image.Image, resize: str, size: int) -> tuple[np.ndarray, bool]:
    """A PIL image (any mode) -> (H=size, W, 3) uint8 per the resize method, and whether it was transposed."""
    if img.mode != "RGB":
        img = _to_rgb(img)
    w, h = img.size
    if resize == "squish":
        return np.asarray(img.resize((size, size), Image.BILINEAR)), False
    if resize == "pad":
        scale = size / max(w, h)
        inner = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        canvas = Image.new("RGB", (size, size))
        canvas.paste(inner, ((size - inner.width) // 2, (size - inner.height) // 2))
        return np.asarray(canvas), False
    # crop: short side -> size, long side kept up to the canvas width.
    transposed = h > w
    if transposed:
        img = img.transpose(Image.Transpose.TRANSPOSE)
        w, h = h, w
    long = max(size, round(w * size / h))
    img = img.resize((long, size), Image.BILINEAR)
    keep = min(long, canvas_width("crop", size))
    left = (long - keep) // 2
    return np.asarray(img.crop((left, 0, left + keep, size))), transposed


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: 16-bit scaled to 8, alpha composited on black, palette expanded."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray((arr / top * 255).clip(0, 255).astype(np.uint8))
    elif img.mode == "F":
        img = Image.fromarray(np.asarray(img).clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    img.load()
    return img


def report_skipped(cache: ImageCache, strict: bool) -> None:
    """One warning naming every unreadable file, or an error under ``strict``."""
    if not cache.skipped:
        return
    from ..errors import TunekitError

    listing = "\n  ".join(cache.skipped)
    if strict:
        raise TunekitError(f"{len(cache.skipped)} unreadable image(s) (strict mode):\n  {listing}")
    warnings.warn(f"skipped {len(cache.skipped)} unreadable image(s):\n  {listing}", stacklevel=2)


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is unreadable, not silently grey
