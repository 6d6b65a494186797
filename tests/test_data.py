"""Dataset layouts, resize geometry, device batches, bad data, and the decode-once cache."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tunekit import data as tkdata
from tunekit.data.cache import canvas_width, load_or_build
from tunekit.data.shapes import CLASSES
from tunekit.data.spec import DataSpec
from tunekit.errors import TunekitError

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


# ---- layouts ---------------------------------------------------------------------------------

def test_folder_layout_random_split_is_seeded(small_shapes):
    a = tkdata.resolve_items(f"folder:{small_shapes}")
    b = tkdata.resolve_items(f"folder:{small_shapes}?seed=42")
    c = tkdata.resolve_items(f"folder:{small_shapes}?seed=7&valid_pct=0.25")
    assert a.classes == sorted(CLASSES) and not a.multilabel
    assert (a.is_valid == b.is_valid).all() and a.is_valid.sum() == int(0.2 * len(a))
    assert c.is_valid.sum() == int(0.25 * len(c)) and (c.is_valid != a.is_valid).any()
    # labels come from the class folder
    assert all(f.parent.name == lab[0] for f, lab in zip(a.files, a.labels))


def test_folder_layout_with_valid_dir(tmp_path):
    img = halves(40, 30, "x")
    make_folder(tmp_path / "train", {"cat": [img] * 3, "dog": [img] * 3})
    make_folder(tmp_path / "valid", {"cat": [img], "dog": [img] * 2})
    items = tkdata.resolve_items(f"folder:{tmp_path}")
    assert items.is_valid.sum() == 3 and (~items.is_valid).sum() == 6
    assert all(("valid" in f.parts) == v for f, v in zip(items.files, items.is_valid))


def test_csv_layout_is_multilabel(small_shapes_multilabel):
    items = tkdata.resolve_items(f"csv:{small_shapes_multilabel}")
    assert items.multilabel and items.classes == sorted(CLASSES)
    y = items.targets()
    assert y.shape == (240, len(CLASSES)) and y.sum(1).min() >= 1 and y.sum(1).max() <= 3
    with open(small_shapes_multilabel / "labels.csv") as f:
        first = next(csv.DictReader(f))
    assert items.labels[0] == tuple(first["tags"].split())


def test_csv_layout_options(tmp_path):
    (tmp_path / "imgs").mkdir()
    img = halves(20, 20, "x")
    rows = [("a", "x;y", "0"), ("b", "y", "1"), ("c", "x", "0"), ("d", "x;y", "1")]
    for name, *_ in rows:
        img.save(tmp_path / "imgs" / f"{name}.png")
    with open(tmp_path / "meta.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "labels", "is_valid"])
        w.writerows(rows)
    spec = f"csv:{tmp_path}?labels=meta.csv&fn_col=file&label_col=labels&folder=imgs&suffix=.png" \
           "&delimiter=%3B&valid_col=is_valid"
    items = tkdata.resolve_items(spec)
    assert items.classes == ["x", "y"] and items.labels[0] == ("x", "y")
    assert items.is_valid.tolist() == [False, True, False, True]


def test_regex_layout_takes_labels_from_names(small_shapes):
    items = tkdata.resolve_items(f"regex:{small_shapes}")
    assert items.classes == sorted(CLASSES)
    assert all(f.name.startswith(lab[0] + "_") for f, lab in zip(items.files, items.labels))


def test_shapes_spec_generates_once_into_data_root(data_root):
    spec = "shapes?n=120&size=24&shapes_seed=5"
    items = tkdata.resolve_items(spec)
    assert len(items) == 120 and str(items.files[0]).startswith(str(data_root / "shapes"))
    made = items.files[0].stat().st_mtime_ns
    assert tkdata.resolve_items(spec).files[0].stat().st_mtime_ns == made  # not regenerated
    assert tkdata.resolve_items("shapes-multilabel?n=120&size=24").multilabel


def test_shapes_are_deterministic(tmp_path):
    from tunekit.data.shapes import render

    a, la = render(7, seed=1, size=32, multilabel=True)
    b, lb = render(7, seed=1, size=32, multilabel=True)
    assert la == lb and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(render(8, seed=1, size=32, multilabel=True)[0]))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("folder", "needs a path"),
        ("floder:/x", "unknown data kind 'floder'"),
        ("shapes?nn=5", "unknown option 'nn' for data kind 'shapes' (did you mean 'n'?)"),
        ("shapes?n=many", "must be a int"),
        ("folder:/x?valid_pct=1.5", "valid_pct must be between 0 and 1"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(TunekitError, match=None) as err:
        DataSpec.parse(spec)
    assert message in str(err.value)


def test_directory_without_kind_gets_a_hint(tmp_path):
    with pytest.raises(TunekitError, match="write 'folder:"):
        DataSpec.parse(str(tmp_path))


# ---- bad data: clear errors before training --------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(TunekitError, match="does not exist"):
        tkdata.resolve_items(f"folder:{tmp_path / 'nope'}")


def test_empty_class_folder(tmp_path):
    make_folder(tmp_path, {"cat": [halves(20, 20, "x")] * 2})
    (tmp_path / "dog").mkdir()
    with pytest.raises(TunekitError, match=r"class folder\(s\) with no images: .*dog"):
        tkdata.resolve_items(f"folder:{tmp_path}")


def test_one_class_only(tmp_path):
    make_folder(tmp_path, {"cat": [halves(20, 20, "x")] * 5})
    with pytest.raises(TunekitError, match=r"found 1 class\(es\) \['cat'\]; need at least 2"):
        tkdata.resolve_items(f"folder:{tmp_path}")


def test_empty_folder(tmp_path):
    with pytest.raises(TunekitError, match="no images found"):
        tkdata.resolve_items(f"folder:{tmp_path}")


def test_csv_missing_column_and_missing_files(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "labels.csv").write_text("name,tags\na,x\n")
    with pytest.raises(TunekitError, match=r"has no column\(s\) \['image_name'\]"):
        tkdata.resolve_items(f"csv:{tmp_path}")
    (tmp_path / "labels.csv").write_text("image_name,tags\na,x\nb,y\n")
    halves(10, 10, "x").save(tmp_path / "train" / "a.jpg")
    with pytest.raises(TunekitError, match=r"1 row\(s\) of .* name missing files: .*b\.jpg"):
        tkdata.resolve_items(f"csv:{tmp_path}")


def test_regex_unmatched_names(tmp_path):
    make_folder(tmp_path, {"a": [halves(10, 10, "x")] * 3})
    with pytest.raises(TunekitError, match="do not match"):
        tkdata.resolve_items(f"regex:{tmp_path}?pattern=%5E%28cat%29_")


def _bad_files(root: Path) -> list[str]:
    good = root / "cat" / "cat_0.png"
    (root / "cat" / "zero.jpg").write_bytes(b"")
    (root / "cat" / "noise.jpg").write_bytes(os.urandom(500))
    (root / "dog" / "notes.png").write_text("not an image at all")
    jpeg = root / "dog" / "full.jpg"
    Image.open(good).convert("RGB").resize((200, 200)).save(jpeg, quality=95)
    data = jpeg.read_bytes()
    jpeg.unlink()
    (root / "dog" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return ["zero.jpg", "noise.jpg", "notes.png", "truncated.jpg"]


def test_unreadable_images_are_skipped_with_one_warning(tmp_path):
    make_folder(tmp_path, {"cat": [halves(30, 20, "x")] * 4, "dog": [halves(30, 20, "y")] * 4})
    names = _bad_files(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = tkdata.load(f"folder:{tmp_path}", "squish", 16)
    messages = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(messages) == 1 and "skipped 4 unreadable image(s)" in messages[0]
    assert all(n in messages[0] for n in names)
    assert len(ds.train_index) + len(ds.valid_index) == 8
    with pytest.raises(TunekitError, match=r"4 unreadable image\(s\) \(strict mode\)"):
        tkdata.load(f"folder:{tmp_path}?strict=1", "squish", 16)


def test_unusual_modes_are_converted(tmp_path):
    gray = Image.fromarray(np.full((20, 30), 128, np.uint8), "L")
    rgba = Image.fromarray(np.dstack([np.full((20, 30, 3), 200, np.uint8), np.full((20, 30), 255, np.uint8)]), "RGBA")
    deep = Image.fromarray(np.full((20, 30), 65535 // 2, np.uint16))  # 16-bit grayscale
    palette = halves(30, 20, "x").convert("P")
    tiny, huge = halves(3, 2, "x"), halves(1500, 1000, "y")
    make_folder(tmp_path, {"a": [gray, rgba, deep], "b": [palette, tiny, huge]})
    ds = tkdata.load(f"folder:{tmp_path}?valid_pct=0.34", "squish", 16)
    assert ds.cache.ok.all() and ds.cache.images.shape == (6, 16, 16, 3)
    by_name = {f.name: i for i, f in enumerate(ds.items.files)}
    assert ds.cache.images[by_name["a_0.png"]].mean() == pytest.approx(128, abs=2)  # L -> RGB
    assert ds.cache.images[by_name["a_2.png"]].mean() == pytest.approx(127, abs=2)  # 16-bit scaled to 8


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


# ---- the decode-once cache -------------------------------------------------------------------

def test_cache_is_built_once_and_reused(small_shapes, caplog):
    caplog.set_level("INFO", logger="tunekit")
    a = tkdata.load(f"folder:{small_shapes}", "pad", 24)
    b = tkdata.load(f"folder:{small_shapes}", "pad", 24)
    assert a.cache.path == b.cache.path
    assert sum("decoding" in r.message for r in caplog.records) <= 1
    caplog.clear()
    tkdata.load(f"folder:{small_shapes}", "pad", 24)
    assert not any("decoding" in r.message for r in caplog.records)
    assert tkdata.load(f"folder:{small_shapes}", "squish", 24).cache.path != a.cache.path


def test_concurrent_processes_decode_once(small_shapes, tmp_path):
    """Two processes (as two trials on a node) asking for the same cache: one builds it."""
    script = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        import tunekit.data as d
        d.load("folder:{small_shapes}", "crop", 40)
    """)
    env = {**os.environ, "TUNEKIT_DATA": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o.count("decoding") for o in outs) == 1
    assert len(list((tmp_path / "cache").glob("*-crop-40-*[!k]"))) == 1  # one cache dir, no leftovers


def test_cache_invalidated_when_files_change(tmp_path):
    make_folder(tmp_path, {"a": [halves(20, 20, "x")] * 5, "b": [halves(20, 20, "y")] * 5})
    first = tkdata.load(f"folder:{tmp_path}", "squish", 16).cache.path
    halves(20, 20, "x").save(tmp_path / "b" / "b_extra.png")
    assert tkdata.load(f"folder:{tmp_path}", "squish", 16).cache.path != first
