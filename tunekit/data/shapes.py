"""The built-in ``shapes`` datasets: generated, deterministic, written as real JPEG files.

Each image is a noisy, muted two-colour gradient with muted clutter lines and dots, of
random aspect ratio (so crop and squish differ), holding one shape (single-label) or one
to three different shapes (multi-label) of random size, rotation and position, sometimes
near an edge (so a centre crop can cut it). A shape's saturated colour leans towards its
class's hue but overlaps its neighbours', so colour alone gets a model to roughly 40-60%
error quickly and only the geometry gets it further: from scratch, test_resnet reaches
about 0.25 error in 3 epochs and 0.10 in 10, and the pool, head, resize method and
learning rate visibly change where it lands.

    write_shapes(Path("data/shapes"), n=4500)                      # folder layout
    write_shapes(Path("data/shapes-ml"), n=4500, multilabel=True)  # csv (Planet) layout
"""

from __future__ import annotations

import colorsys
import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "cross", "hexagon", "square", "star", "triangle")
_OVERSAMPLE = 2  # draw at 2x and downsample: smooth edges like a photographed object


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(1, 1), (1, -1), (-1, -1), (-1, 1)]
        pts = [(x * 0.8, y * 0.8) for x, y in pts]
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif kind == "hexagon":
        pts = [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]
    elif kind == "star":
        pts = [
            ((1.0 if k % 2 == 0 else 0.42) * math.cos(math.pi / 2 + k * math.pi / 5),
             (1.0 if k % 2 == 0 else 0.42) * math.sin(math.pi / 2 + k * math.pi / 5))
            for k in range(10)
        ]
    elif kind == "cross":
        w = 0.33
        pts = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1),
               (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
    else:
        raise ValueError(kind)
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _class_colour(rng: np.random.Generator, k: int) -> tuple[int, int, int]:
    """A colour whose hue leans towards class ``k``'s (6 hues 60 degrees apart, +-50 jitter):
    colour alone tells the class only part of the time, so a model learns fast at first and
    must then learn the shapes."""
    hue = (k * 60 + rng.uniform(-50, 50)) % 360
    sat, val = rng.uniform(0.45, 1.0), rng.uniform(0.5, 1.0)
    rgb = colorsys.hsv_to_rgb(hue / 360, sat, val)
    return tuple(int(c * 255) for c in rgb)


def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    """A low-saturation colour of any hue, for backgrounds and clutter."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.15, 0.95))
    return tuple(int(c * 255) for c in rgb)


def render(index: int, seed: int, size: int, multilabel: bool) -> tuple[Image.Image, tuple[str, ...]]:
    """Image ``index`` of the dataset with ``seed``: (RGB image, its sorted class names)."""
    rng = np.random.default_rng([seed, index, int(multilabel)])
    short = size
    long = int(size * rng.uniform(1.0, 1.5))
    w, h = (long, short) if rng.random() < 0.5 else (short, long)
    W, H = w * _OVERSAMPLE, h * _OVERSAMPLE
    # Background: a linear gradient between two colours plus clutter.
    c0, c1 = np.array(_muted(rng)), np.array(_muted(rng))
    t = np.linspace(0, 1, W if rng.random() < 0.5 else H)
    ramp = c0[None] * (1 - t[:, None]) + c1[None] * t[:, None]
    bg = np.broadcast_to(ramp[None], (H, W, 3)) if len(t) == W else np.broadcast_to(ramp[:, None], (H, W, 3))
    img = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 4)):
        x0, x1 = rng.uniform(0, W, 2)
        y0, y1 = rng.uniform(0, H, 2)
        draw.line([(x0, y0), (x1, y1)], fill=_muted(rng), width=int(rng.integers(1, 3) * _OVERSAMPLE))
    for _ in range(rng.integers(0, 4)):
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(1, 2.5) * _OVERSAMPLE
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_muted(rng))

    n_shapes = int(rng.integers(1, 4)) if multilabel else 1
    kinds = tuple(sorted(rng.choice(len(CLASSES), n_shapes, replace=False)))
    for k in kinds:
        kind = CLASSES[k]
        r = rng.uniform(0.16, 0.3 if multilabel else 0.36) * min(W, H)
        # Anywhere the shape fits, so some sit near the long edges a centre crop removes.
        cx, cy = rng.uniform(r, W - r), rng.uniform(r, H - r)
        fill = _class_colour(rng, k)
        if kind == "circle":
            draw.ellipse([cx - r * 0.9, cy - r * 0.9, cx + r * 0.9, cy + r * 0.9], fill=fill)
        else:
            draw.polygon(_polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6 * _OVERSAMPLE)).resize((w, h), Image.BILINEAR)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 8, (h, w, 3))
    img = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    return img, tuple(CLASSES[k] for k in kinds)


def write_shapes(out: Path, n: int = 4500, size: int = 64, seed: int = 0, multilabel: bool = False) -> Path:
    """Write ``n`` images to ``out`` and return it.

    Single-label: folder layout ``out/<class>/<class>_<i>.jpg`` (the names also fit the
    regex layout). Multi-label: csv layout ``out/labels.csv`` + ``out/train/<name>.jpg``.
    """
    if n < 2 * len(CLASSES):
        raise ValueError(f"n must be at least {2 * len(CLASSES)}, got {n}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img, labels = render(i, seed, size, multilabel)
        if multilabel:
            name = f"shapes_{i:05d}"
            (out / "train").mkdir(exist_ok=True)
            img.save(out / "train" / f"{name}.jpg", quality=90)
            rows.append((name, " ".join(labels)))
        else:
            (out / labels[0]).mkdir(exist_ok=True)
            img.save(out / labels[0] / f"{labels[0]}_{i:05d}.jpg", quality=90)
    if multilabel:
        with open(out / "labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_name", "tags"])
            writer.writerows(rows)
    return out
