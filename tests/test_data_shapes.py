"""The built-in generated shapes data (data/shapes.py, data/__init__.py): made once, deterministic."""

from __future__ import annotations

import numpy as np
from images import CPU, IDENTITY, halves, make_folder  # noqa: F401

from tunekit import data as tkdata


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
