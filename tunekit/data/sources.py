"""Dataset layouts on disk -> :class:`Items` (files, labels, train/valid split).

Each reader checks what it can without decoding images: the path exists, images are
there, every CSV row names an existing file, at least two classes, no class left without
training images. Decoding (and skipping unreadable files) is the cache's job.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import TunekitError

if TYPE_CHECKING:
    import torch

Splitter = Callable[[int, float, int], np.ndarray]  # (n, valid_pct, seed) -> is_valid

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Items:
    """A labelled image list: ``labels[i]`` is a tuple of class names (one for single-label)."""

    files: list[Path]
    labels: list[tuple[str, ...]]
    is_valid: np.ndarray  # bool per item
    classes: list[str]
    multilabel: bool

    def __len__(self) -> int:
        return len(self.files)

    def targets(self) -> torch.Tensor:
        """Class indices (N,) for single-label, multi-hot float (N, C) for multi-label."""
        import torch

        index = {c: i for i, c in enumerate(self.classes)}
        if not self.multilabel:
            return torch.tensor([index[lab[0]] for lab in self.labels], dtype=torch.long)
        y = torch.zeros(len(self.labels), len(self.classes))
        for row, labs in enumerate(self.labels):
            y[row, [index[c] for c in labs]] = 1.0
        return y

    def subset(self, keep: np.ndarray) -> Items:
        """The items where ``keep`` is true (classes unchanged)."""
        return Items(
            [f for f, k in zip(self.files, keep) if k],
            [lab for lab, k in zip(self.labels, keep) if k],
            self.is_valid[keep], self.classes, self.multilabel,
        )

    def check(self, where: str) -> None:
        """Errors a run cannot recover from: fewer than 2 classes, no train or valid items,
        a class with no training image (single-label)."""
        if len(self.classes) < 2:
            raise TunekitError(f"{where}: found {len(self.classes)} class(es) {self.classes}; need at least 2")
        if not (~self.is_valid).any() or not self.is_valid.any():
            raise TunekitError(
                f"{where}: {int((~self.is_valid).sum())} training and {int(self.is_valid.sum())} "
                "validation images; need at least one of each"
            )
        if not self.multilabel:
            train_classes = {lab[0] for lab, v in zip(self.labels, self.is_valid) if not v}
            missing = [c for c in self.classes if c not in train_classes]
            if missing:
                raise TunekitError(f"{where}: no training images for class(es) {missing}")


def random_split(n: int, valid_pct: float, seed: int) -> np.ndarray:
    """fastai's RandomSplitter: a seeded permutation, the first ``valid_pct`` are validation."""
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    is_valid = np.zeros(n, dtype=bool)
    is_valid[perm[: int(valid_pct * n)]] = True
    return is_valid


def count_split(n: int, valid_pct: float, seed: int) -> np.ndarray:
    """As many validation items as :func:`random_split` draws, spread evenly instead of drawn (each class,
    listed together, keeps its share of training items, as a random split keeps it on average): what a dry run
    counts, without torch."""
    k = int(valid_pct * n)
    is_valid = np.zeros(n, dtype=bool)
    is_valid[(np.arange(k) * n) // max(k, 1)] = True
    return is_valid


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files skipped)."""
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise TunekitError(f"{what} {str(path)!r} does not exist")
    if not path.is_dir():
        raise TunekitError(f"{what} {str(path)!r} is not a directory")


def folder_items(root: Path, valid_pct: float, seed: int, splitter: Splitter = random_split) -> Items:
    """``root/<class>/*`` with a random split, or ``root/train/<class>`` + ``root/valid/<class>``."""
    _require_dir(root, "data folder")
    valid_dir = next((root / n for n in ("valid", "val") if (root / n).is_dir()), None)
    if valid_dir is not None:
        train_dir = root / "train"
        _require_dir(train_dir, f"data folder has {valid_dir.name}/ but its training folder")
        groups = [(train_dir, False), (valid_dir, True)]
    else:
        groups = [(root, None)]
    files: list[Path] = []
    labels: list[tuple[str, ...]] = []
    flags: list[bool] = []
    empty: list[str] = []
    classes: set[str] = set()
    for folder, valid in groups:
        class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        for d in class_dirs:
            found = image_files(d)
            if not found and valid is not True:
                empty.append(str(d))
            classes.add(d.name)
            files += found
            labels += [(d.name,)] * len(found)
            flags += [bool(valid)] * len(found)
    if empty:
        raise TunekitError(f"class folder(s) with no images: {', '.join(empty)}")
    if not files:
        raise TunekitError(f"no images found in {str(root)!r}: expected {root}/<class>/*.jpg")
    is_valid = np.array(flags) if valid_dir is not None else splitter(len(files), valid_pct, seed)
    items = Items(files, labels, is_valid, sorted(classes), multilabel=False)
    items.check(f"data folder {str(root)!r}")
    return items


def csv_items(
    root: Path, *, labels: str, fn_col: str, label_col: str, folder: str, suffix: str,
    delimiter: str, valid_col: str, valid_pct: float, seed: int, splitter: Splitter = random_split,
) -> Items:
    """Planet layout: a CSV of ``fn_col,label_col`` (labels split on ``delimiter``)."""
    _require_dir(root, "data folder")
    csv_path = root / labels
    if not csv_path.is_file():
        raise TunekitError(f"labels file {str(csv_path)!r} does not exist")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        needed = [c for c in (fn_col, label_col, valid_col) if c]
        missing_cols = [c for c in needed if c not in columns]
        if missing_cols:
            raise TunekitError(f"{str(csv_path)!r} has no column(s) {missing_cols}; its columns: {columns}")
        rows = list(reader)
    if not rows:
        raise TunekitError(f"{str(csv_path)!r} has no rows")
    image_dir = root / folder
    files = [image_dir / f"{r[fn_col]}{suffix}" for r in rows]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise TunekitError(f"{len(missing)} row(s) of {str(csv_path)!r} name missing files: {shown}")
    sep = delimiter or None  # '' splits on any whitespace
    labs = [tuple(t for t in (r[label_col] or "").split(sep) if t) for r in rows]
    classes = sorted({c for lab in labs for c in lab})
    if valid_col:
        is_valid = np.array([str(r[valid_col]).strip().lower() in ("1", "true", "yes") for r in rows])
    else:
        is_valid = splitter(len(files), valid_pct, seed)
    items = Items(files, labs, is_valid, classes, multilabel=True)
    items.check(f"labels file {str(csv_path)!r}")
    return items


def regex_items(root: Path, *, pattern: str, valid_pct: float, seed: int, splitter: Splitter = random_split) -> Items:
    """Labels from file names: the first group of ``pattern`` matched against each name."""
    _require_dir(root, "data folder")
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise TunekitError(f"bad regex pattern {pattern!r}: {e}") from None
    if rx.groups < 1:
        raise TunekitError(f"regex pattern {pattern!r} needs a group, as in r'^(.*)_\\d+\\.\\w+$'")
    files = image_files(root)
    if not files:
        raise TunekitError(f"no images found in {str(root)!r}")
    labels, unmatched = [], []
    for p in files:
        m = rx.search(p.name)
        if m is None:
            unmatched.append(p.name)
        labels.append((m.group(1),) if m else None)
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        raise TunekitError(f"{len(unmatched)} file name(s) in {str(root)!r} do not match {pattern!r}: {shown}")
    items = Items(files, labels, splitter(len(files), valid_pct, seed), sorted({lab[0] for lab in labels}), False)
    items.check(f"data folder {str(root)!r}")
    return items
