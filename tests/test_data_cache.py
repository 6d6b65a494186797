"""The decode-once cache (data/cache.py): built once, shared, invalidated; unreadable and odd images."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from images import CPU, IDENTITY, halves, make_folder  # noqa: F401
from PIL import Image

from tunekit import data as tkdata
from tunekit.errors import TunekitError


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


# ---- the decode-once cache -------------------------------------------------------------------

def test_cache_is_built_once_and_reused(small_shapes, caplog, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEKIT_DATA", str(tmp_path))  # a cache no other test has built
    caplog.set_level("INFO", logger="tunekit")
    a = tkdata.load(f"folder:{small_shapes}", "pad", 24)
    b = tkdata.load(f"folder:{small_shapes}", "pad", 24)
    assert a.cache.path == b.cache.path
    assert sum("decoding" in r.message for r in caplog.records) == 1
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
