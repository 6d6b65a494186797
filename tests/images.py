"""Helpers for the data tests: small images of known content, written as real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

CPU = torch.device("cpu")
IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}  # batches come out as raw 0..255


def halves(w: int, h: int, split: str) -> Image.Image:
    """Red first half, blue second half, split along 'x' (left/right) or 'y' (top/bottom)."""
    arr = np.zeros((h, w, 3), np.uint8)
    if split == "x":
        arr[:, : w // 2, 0], arr[:, w // 2:, 2] = 255, 255
    else:
        arr[: h // 2, :, 0], arr[h // 2:, :, 2] = 255, 255
    return Image.fromarray(arr)


def make_folder(root: Path, images: dict[str, list[Image.Image]], fmt: str = "png") -> Path:
    for cls, imgs in images.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            img.save(root / cls / f"{cls}_{i}.{fmt}")
    return root
