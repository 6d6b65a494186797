"""Fashion-MNIST (Zalando, MIT): 70,000 28x28 grayscale clothing images, 10 classes, as a dataset kind.

    load("fashion_mnist?n_train=300&n_valid=100", "squish", 64)      # 300 / 100 images per class

The four IDX files are read from ``PATH`` (``fashion_mnist:PATH``), else from Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist/``), else downloaded from the
official source into the data root. The official split is kept: training images from the train
files, validation images from the test files (``valid_pct`` does not apply). ``n_train`` and
``n_valid`` take that many images per class (0: all), chosen with the spec's ``seed``. The images are
written once as PNG files, ``train/<class>/`` and ``valid/<class>/``, and read as a folder dataset,
so everything downstream (the decode-once cache, resize methods, batches) is the usual path.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np
from filelock import FileLock

from ..errors import TunekitError
from .download import Remote, data_root, fetch

CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "valid": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # the official README's links


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as an array: uint8 images (N, H, W) or labels (N,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    except (OSError, EOFError, struct.error) as e:
        raise TunekitError(f"{path} is not a readable IDX file ({e})") from None
    if zero != 0 or dtype != 0x08 or len(data) != 4 + 4 * ndim + int(np.prod(dims)):
        raise TunekitError(f"{path} is not an IDX file of unsigned bytes (header {zero}, {dtype:#x}, {dims})")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def source(path: Path | None) -> dict[str, tuple[Path, Path]]:
    """The (images, labels) files of each split: in ``path``, Debian's folder, or downloaded."""
    folders = [path] if path is not None else [DEBIAN, data_root() / "fashion-mnist"]
    for folder in folders:
        found = {split: tuple(_find(folder, n) for n in names) for split, names in FILES.items()}
        if all(p is not None for pair in found.values() for p in pair):
            return found
    if path is not None:
        missing = [n for names in FILES.values() for n in names if _find(path, n) is None]
        raise TunekitError(f"fashion_mnist:{path}: missing {', '.join(missing)} (the four IDX files, .gz or not)")
    target = data_root() / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target / ".lock")):
        for names in FILES.values():
            for name in names:
                if not (target / name).is_file():
                    by_hand = (f"Install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist), "
                               f"download the four files from {URL} into {target} yourself, or point the spec "
                               f"at a folder that holds them: 'fashion_mnist:PATH'.")
                    fetch(Remote(f"fashion-mnist {name}", URL + name, None, None, "", name), target / name, True,
                          by_hand)
    return {split: (target / images, target / labels) for split, (images, labels) in FILES.items()}


def materialize(path: Path | None, n_train: int, n_valid: int, seed: int) -> Path:
    """The chosen images as PNG files (once per choice): ``train/<class>/*.png``, ``valid/<class>/*.png``."""
    from PIL import Image

    final = data_root() / "fashion_mnist" / f"train{n_train or 'all'}-valid{n_valid or 'all'}-seed{seed}"
    if path is not None:
        final = final.with_name(final.name + "-" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10])
    if (final / ".done").is_file():
        return final
    files = source(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / ".done").is_file():
            return final
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        rng = np.random.default_rng(seed)
        for split, per_class in (("train", n_train), ("valid", n_valid)):
            images, labels = (read_idx(p) for p in files[split])
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or labels.max() >= len(CLASSES):
                raise TunekitError(f"Fashion-MNIST {split} files do not agree: {images.shape} images, "
                                   f"{labels.shape} labels with values up to {labels.max()}")
            for k, name in enumerate(CLASSES):
                index = np.flatnonzero(labels == k)
                if per_class and per_class < len(index):
                    index = np.sort(rng.choice(index, per_class, replace=False))
                (tmp / split / name).mkdir(parents=True, exist_ok=True)
                for i in index:
                    Image.fromarray(images[i], "L").save(tmp / split / name / f"{i:05d}.png")
        (tmp / ".done").touch()
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    return final
