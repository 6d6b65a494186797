"""A data spec's labelled file list (``resolve_items``): the data downloaded or generated first if needed, then
listed and split; the size its images are (``natural_size``). No torch here (nor in ``sources`` until a split
is drawn): a dry run lists a folder's files and counts its split (``sources.count_split``) without it.

    items = resolve_items("folder:~/data/birds")                       # Items: files, labels, is_valid
    n_valid = resolve_items(spec, splitter=count_split).is_valid.sum()  # the counts alone: no torch
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from .download import REMOTES, data_root, ensure
from .shapes import write_shapes
from .sources import Items, Splitter, count_split, csv_items, folder_items, random_split, regex_items
from .spec import OPTIONS, DataSpec


def resolve_items(spec: str | DataSpec,
                  splitter: Splitter = random_split) -> Items:
    """The labelled file list of a spec, downloading or generating the data first if needed; a layout without
    its own validation split is split by ``splitter`` (``sources.random_split``, or ``count_split``: the
    counts only)."""
    spec = DataSpec.parse(spec)
    split = {"valid_pct": spec.opt("valid_pct"), "seed": spec.opt("seed"), "splitter": splitter}
    csv_keys = ("labels", "fn_col", "label_col", "folder", "suffix", "delimiter", "valid_col")
    # The generated multi-label data is written in the default csv layout, so it takes the defaults.
    csv_opts = {k: spec.options.get(k, OPTIONS["csv"][k]) for k in csv_keys}
    if spec.kind == "folder":
        return folder_items(spec.path, **split)
    if spec.kind == "csv":
        return csv_items(spec.path, **csv_opts, **split)
    if spec.kind == "regex":
        return regex_items(spec.path, pattern=spec.opt("pattern"), **split)
    if spec.kind == "pets":
        root = spec.path or ensure(REMOTES["pets"], data_root())
        images = root / "images" if (root / "images").is_dir() else root
        return regex_items(images, pattern=spec.opt("pattern"), **split)
    if spec.kind == "imagenette":
        return folder_items(spec.path or ensure(REMOTES["imagenette"], data_root()), **split)
    if spec.kind == "fashion_mnist":
        from .fashion_mnist import materialize

        return folder_items(materialize(spec.path, spec.opt("n_train"), spec.opt("n_valid"), spec.opt("seed")),
                            **split)
    if spec.kind == "planet":
        return csv_items(spec.path or ensure(REMOTES["planet"], data_root()), **csv_opts, **split)
    # shapes / shapes-multilabel
    multilabel = spec.kind == "shapes-multilabel"
    root = spec.path or generated_shapes(spec.opt("n"), spec.opt("size"), spec.opt("shapes_seed"), multilabel)
    return csv_items(root, **csv_opts, **split) if multilabel else folder_items(root, **split)


def generated_shapes(n: int, size: int, seed: int, multilabel: bool) -> Path:
    """The built-in shapes data, generated into the data root on first use (once per machine)."""
    root = data_root() / "shapes"
    final = root / f"{'multilabel' if multilabel else 'single'}-n{n}-s{size}-seed{seed}"
    if (final / ".done").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if not (final / ".done").is_file():
            tmp = final.with_name(final.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            write_shapes(tmp, n=n, size=size, seed=seed, multilabel=multilabel)
            (tmp / ".done").touch()
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    return final


def natural_size(spec: str | DataSpec) -> int | None:
    """The size a dataset's images support: the generated ``shapes``' own size; for data at a local
    path, the median short side of (up to 64, evenly spread) images, from their headers, rounded
    down to a multiple of 8 (at least 32); None for a dataset not on disk at a given path (its
    download's size is not known before the download, and the answer must not depend on it)."""
    spec = DataSpec.parse(spec)
    if spec.kind.startswith("shapes"):
        return spec.opt("size")
    if spec.kind == "fashion_mnist":
        return 32  # 28px images; the rule's floor
    if spec.path is None or not spec.path.exists():
        return None
    return _median_short_side(str(spec))


@functools.lru_cache(maxsize=32)
def _median_short_side(spec: str) -> int | None:
    files = resolve_items(spec, splitter=count_split).files  # (the files alone: no split drawn)
    sample = [files[i] for i in np.linspace(0, len(files) - 1, min(64, len(files))).astype(int)]
    sides = []
    for f in sample:
        try:
            with Image.open(f) as img:
                sides.append(min(img.size))
        except (OSError, ValueError):
            continue  # unreadable: the cache skips it and says so
    if not sides:
        return None
    return max(32, int(np.median(sides)) // 8 * 8)
