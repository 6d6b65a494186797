"""predict.py's batching without a search: a model folder's network built here, images in memory."""

from __future__ import annotations

import numpy as np
import torch

from tunekit import predict
from tunekit.config import TrialConfig
from tunekit.model import build_model


def loaded(classes: int = 3) -> predict.LoadedModel:
    torch.manual_seed(0)
    module, info = build_model(TrialConfig(model="test_resnet", pretrained=False, img_size=32), classes, 32)
    manifest = {"model": "test_resnet", "classes": [f"c{i}" for i in range(classes)], "multilabel": False,
                "threshold": 0.5, "img_size": 32, "resize": "squish", "mean": list(info.mean), "std": list(info.std),
                "precision": "fp32"}
    return predict.LoadedModel(module.eval(), manifest, torch.device("cpu"))


def test_chunks_cover_every_image_once_in_order_and_agree_with_one_pass(monkeypatch):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(8)]
    model = loaded()
    whole = model.predict(images, top=2)
    monkeypatch.setattr(predict, "CHUNK", 3)
    chunks = list(model.predict_chunks(images, top=2, batch_size=2))
    assert [len(p) for p, _ in chunks] == [3, 3, 2] and all(skipped == [] for _, skipped in chunks)
    parts = [p for ps, _ in chunks for p in ps]
    assert [p.source for p in parts] == [f"<image {i}>" for i in range(8)]
    for a, b in zip(parts, whole):
        assert a.labels == b.labels and abs(a.probability - b.probability) < 1e-5
        assert [c for c, _ in a.top] == [c for c, _ in b.top] and len(a.top) == 2


def test_an_unreadable_file_is_skipped_and_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    good = np.zeros((32, 32, 3), dtype=np.uint8)
    [(predictions, skipped)] = list(loaded().predict_chunks([good, bad]))
    assert [p.source for p in predictions] == ["<image 0>"]
    assert len(skipped) == 1 and skipped[0].startswith(f"{bad}: ")
