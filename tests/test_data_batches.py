"""Batches from the cache (data/batches.py): resize geometry, crops, flips, coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from images import CPU, IDENTITY, halves, make_folder  # noqa: F401
from PIL import Image

from tunekit import data as tkdata
from tunekit.data.cache import canvas_width, load_or_build

# ---- resize methods: geometry of the cache and of the batches --------------------------------

def cache_of(tmp_path: Path, images: list[Image.Image], resize: str, size: int):
    """The decode-once cache of ``images`` written as PNG files (no dataset checks)."""
    files = []
    for i, img in enumerate(images):
        files.append(tmp_path / f"img_{i}.png")
        img.save(files[-1])
    return load_or_build(files, resize, size, tmp_path / "cache")


@pytest.mark.parametrize("resize", ["squish", "pad", "crop"])
def test_resize_geometry(tmp_path, resize):
    cache = cache_of(tmp_path, [halves(120, 60, "x"), halves(60, 120, "y")], resize, 32)  # landscape, portrait
    S = 32
    assert cache.images.shape == (2, S, canvas_width(resize, S), 3)
    batches = tkdata.Batches(cache, np.arange(2), torch.zeros(2), train=False, batch_size=2, device=CPU, **IDENTITY)
    x, _ = next(iter(batches.epoch(0)))
    assert x.shape == (2, 3, S, S)
    land, port = x[0], x[1]
    if resize == "squish":  # whole image, aspect ignored: red left half, blue right half
        assert land[0, :, : S // 2 - 1].mean() > 240 and land[2, :, S // 2 + 1:].mean() > 240
    if resize == "pad":  # 120x60 -> 32x16 centred: 8 black rows above and below
        assert land[:, :7].max() < 10 and land[:, -7:].max() < 10 and land[0, 9:23, :14].mean() > 240
        assert port[:, :, :7].max() < 10  # portrait: black bars left and right
    if resize == "crop":
        assert cache.extent.tolist() == [canvas_width("crop", S)] * 2
        assert cache.transposed.tolist() == [False, True]
        # centre crop of the landscape image straddles the red/blue boundary in the middle
        assert land[0, :, :8].mean() > 240 and land[2, :, -8:].mean() > 240
        # the portrait image comes back upright: red on top, blue below
        assert port[0, :8].mean() > 240 and port[2, -8:].mean() > 240


def test_training_batches_randomize_crop_and_flip(tmp_path):
    """A horizontal ramp image: a window's left edge value tells its offset, its direction the flip."""
    ramp = np.tile(np.linspace(0, 255, 80).astype(np.uint8)[None, :, None], (40, 1, 3))
    cache = cache_of(tmp_path, [Image.fromarray(ramp)] * 2, "crop", 32)
    index = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = tkdata.Batches(cache, index, torch.zeros(8, dtype=torch.long), train=True, batch_size=8,
                       device=CPU, **IDENTITY, seed=0)
    offsets, flips = set(), []
    for epoch in range(4):
        x, _ = next(iter(b.epoch(epoch)))
        left, right = x[:, 0, :, 0].mean(1), x[:, 0, :, -1].mean(1)
        offsets |= {round(v) for v in torch.minimum(left, right).tolist()}
        flips += (left > right).tolist()
    assert len(offsets) > 3  # the window's position varies
    assert 0 < sum(flips) < len(flips)  # some items flipped, some not
    x0, _ = next(iter(b.epoch(0)))
    assert torch.equal(x0, next(iter(b.epoch(0)))[0])  # seeded by (seed, epoch): reproducible


def test_batches_cover_split_once_per_epoch(small_shapes):
    ds = tkdata.load(f"folder:{small_shapes}", "squish", 32)
    train = ds.batches("train", batch_size=50, device=CPU, mean=(0.5,) * 3, std=(0.25,) * 3)
    valid = ds.batches("valid", batch_size=50, device=CPU, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert len(train) == len(ds.train_index) // 50  # drop_last for training
    assert sum(len(y) for _, y in valid.epoch(0)) == len(ds.valid_index)
    ys = torch.cat([y for _, y in valid.epoch(0)])
    assert torch.equal(ys, ds.targets[ds.valid_index])


def test_the_gpus_batch_wide_crops_equal_the_per_item_ones():
    """On a GPU the crops, transposes and flips of a batch run as a few batch-wide kernels
    (``batches.crops``); they give the per-item path's pixels exactly (checked here on the CPU)."""
    from tunekit.data.batches import crops, crops_per_item

    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (16, 6, 11, 3), dtype=torch.uint8, generator=gen)  # stored 6 x 11, crop 6
    offsets = torch.randint(0, 6, (16,), generator=gen)
    transposed = torch.rand(16, generator=gen) < 0.3
    flips = torch.rand(16, generator=gen) < 0.5
    assert transposed.any() and flips.any() and (~flips).any()
    expected = crops_per_item(raw, offsets, transposed, flips, 6)
    assert torch.equal(crops(raw, offsets, transposed, flips, 6), expected)
    assert expected.shape == (16, 3, 6, 6) and expected.is_contiguous()
