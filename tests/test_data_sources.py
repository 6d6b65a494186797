"""Dataset layouts on disk (data/sources.py): folder, csv, regex; clear errors for bad data."""

from __future__ import annotations

import csv

import pytest
from images import CPU, IDENTITY, halves, make_folder  # noqa: F401

from tunekit import data as tkdata
from tunekit.data.shapes import CLASSES
from tunekit.errors import TunekitError

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
