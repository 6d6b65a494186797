"""The fashion_mnist dataset kind (data/fashion_mnist.py): IDX files read, the official split kept,
subsampled per class, downloaded from a server (here one on 127.0.0.1) when not on the machine."""

from __future__ import annotations

import gzip
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

from tunekit import data as tkdata
from tunekit.data import fashion_mnist as fm
from tunekit.data.spec import DataSpec
from tunekit.errors import TunekitError


def write_idx(folder: Path, per_class: dict[str, int], gz: bool = True) -> Path:
    """Small IDX files in Fashion-MNIST's layout; each image's pixels hold its label (to check them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images_name, labels_name) in fm.FILES.items():
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class[split])
        images = np.repeat(labels[:, None, None] * 20, 28 * 28).reshape(-1, 28, 28).astype(np.uint8)
        for name, array in ((images_name, images), (labels_name, labels)):
            header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            payload = header + array.tobytes()
            if gz:
                (folder / name).write_bytes(gzip.compress(payload))
            else:
                (folder / name.removesuffix(".gz")).write_bytes(payload)
    return folder


def test_idx_files_load_with_the_official_split_and_per_class_subsets(tmp_path):
    src = write_idx(tmp_path / "idx", {"train": 5, "valid": 3})
    ds = tkdata.load(f"fashion_mnist:{src}?n_train=2&n_valid=1", "squish", 32)
    assert ds.classes == sorted(fm.CLASSES) and not ds.multilabel
    assert (len(ds.train_index), len(ds.valid_index)) == (20, 10)
    for index in (ds.train_index, ds.valid_index):  # every image carries its own label in its pixels
        for i in index:
            label = fm.CLASSES.index(ds.classes[int(ds.targets[i])])
            assert abs(int(ds.cache.images[i].mean()) - 20 * label) <= 1
    everything = tkdata.load(f"fashion_mnist:{src}", "squish", 32)  # n_train=0: all
    assert (len(everything.train_index), len(everything.valid_index)) == (50, 30)


def test_uncompressed_idx_files_and_bad_ones(tmp_path):
    src = write_idx(tmp_path / "raw", {"train": 2, "valid": 1}, gz=False)
    assert len(tkdata.resolve_items(f"fashion_mnist:{src}")) == 30
    (src / "t10k-labels-idx1-ubyte").write_bytes(b"not idx")
    with pytest.raises(TunekitError, match="is not an IDX file|is not a readable IDX file"):
        tkdata.resolve_items(f"fashion_mnist:{src}?n_valid=1&seed=7")
    with pytest.raises(TunekitError, match=r"fashion_mnist:.*nope: missing train-images-idx3-ubyte.gz"):
        tkdata.resolve_items(f"fashion_mnist:{tmp_path / 'nope'}")


def test_options_are_checked():
    assert DataSpec.parse("fashion_mnist?n_train=300&n_valid=100").opt("n_train") == 300
    with pytest.raises(TunekitError, match=r"unknown option 'n_trian' for data kind 'fashion_mnist' \(did you mean"):
        DataSpec.parse("fashion_mnist?n_trian=3")


def test_downloads_from_the_source_when_not_on_the_machine(tmp_path, monkeypatch, server):
    base, www, requests = server
    write_idx(www, {"train": 2, "valid": 1})
    monkeypatch.setattr(fm, "DEBIAN", tmp_path / "not-installed")
    monkeypatch.setattr(fm, "URL", f"{base}/")
    monkeypatch.setenv("TUNEKIT_DATA", str(tmp_path / "root"))
    assert len(tkdata.resolve_items("fashion_mnist?n_train=1")) == 20
    assert sorted(requests) == sorted(f"/{n}" for names in fm.FILES.values() for n in names)
    tkdata.resolve_items("fashion_mnist?n_train=1")  # downloaded once
    assert len(requests) == 4


def test_offline_says_how_to_get_it(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    monkeypatch.setattr(fm, "DEBIAN", tmp_path / "not-installed")
    monkeypatch.setattr(fm, "URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("TUNEKIT_DATA", str(tmp_path / "root"))
    with pytest.raises(TunekitError, match="could not download the fashion-mnist train-images-idx3-ubyte.gz dataset"):
        tkdata.resolve_items("fashion_mnist")
