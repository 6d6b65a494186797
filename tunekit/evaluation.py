"""Evaluate an exported model on labelled data: error rate, accuracy (f2 for multi-label), confusion matrix.

    result = evaluate(load_model("best/"), "folder:~/data/test")              # every labelled image
    result = evaluate(model, "shapes", split="valid")                         # the split training made
    result.write(Path("eval/"))          # metrics.json, confusion.csv, confusion.png

``split="all"`` (the default) takes every labelled image, e.g. a held-out test folder; ``valid`` and
``train`` take the split as training made it from the same spec (its seed and valid_pct), so ``valid``
on the data a trial trained on reproduces that trial's last validation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import data as tkdata
from .errors import TunekitError, one_of
from .metrics import classification_metrics
from .predict import SPLITS, LoadedModel


@dataclass
class Evaluation:
    data: str
    split: str
    n_images: int
    metrics: dict[str, float]
    confusion: pd.DataFrame  # single-label: true class (rows) x predicted class; multi-label: tp, fp, fn, tn
    skipped: list[str] = field(default_factory=list)

    def write(self, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"data": self.data, "split": self.split, "n_images": self.n_images,
                                                      **self.metrics}, indent=2))
        self.confusion.to_csv(out / "confusion.csv")
        return [out / "metrics.json", out / "confusion.csv", _confusion_png(self, out / "confusion.png")]


def evaluate(model: LoadedModel, spec: str, split: str = "all", batch_size: int = 64,
             progress: bool = False) -> Evaluation:
    if split not in SPLITS:
        raise one_of("split", split, SPLITS)
    ds = tkdata.load(spec, model.resize, model.img_size)
    unknown = [c for c in ds.classes if c not in model.classes]
    if unknown:
        raise TunekitError(f"data {spec!r} has class(es) {unknown[:5]} that the model does not know (its "
                           f"{len(model.classes)} classes: {', '.join(model.classes[:10])}"
                           f"{' ...' if len(model.classes) > 10 else ''})")
    if ds.multilabel != model.multilabel:
        kinds = {True: "multi-label", False: "single-label"}
        raise TunekitError(f"data {spec!r} is {kinds[ds.multilabel]} but the model is {kinds[model.multilabel]}")
    index = {"all": np.flatnonzero(ds.cache.ok), "valid": ds.valid_index, "train": ds.train_index}[split]
    if len(index) == 0:
        raise TunekitError(f"data {spec!r} has no {split} images")
    targets = _targets(ds, index, model.classes)
    logits = model.logits(ds.cache, index, batch_size, progress)
    metrics = classification_metrics(logits, targets, model.multilabel)
    return Evaluation(str(spec), split, len(index), metrics, _confusion(logits, targets, model), list(ds.cache.skipped))


def _targets(ds, index: np.ndarray, classes: list[str]) -> torch.Tensor:
    """The dataset's targets at ``index``, renumbered in the model's class order."""
    to_model = torch.tensor([classes.index(c) for c in ds.classes])
    targets = ds.targets[index]
    if not ds.multilabel:
        return to_model[targets]
    out = torch.zeros(len(index), len(classes))
    out[:, to_model] = targets
    return out


def _confusion(logits: torch.Tensor, targets: torch.Tensor, model: LoadedModel) -> pd.DataFrame:
    if not model.multilabel:
        pred = logits.argmax(1).numpy()
        counts = np.zeros((len(model.classes),) * 2, dtype=int)
        np.add.at(counts, (targets.numpy(), pred), 1)
        frame = pd.DataFrame(counts, index=model.classes, columns=model.classes)
        frame.index.name, frame.columns.name = "true", "predicted"
        return frame
    pred, true = (torch.sigmoid(logits) > model.threshold).numpy(), targets.bool().numpy()
    return pd.DataFrame({"tp": (pred & true).sum(0), "fp": (pred & ~true).sum(0), "fn": (~pred & true).sum(0),
                         "tn": (~pred & ~true).sum(0)}, index=pd.Index(model.classes, name="class"))


def _confusion_png(result: Evaluation, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame: Any = result.confusion
    n = len(frame)
    fig, ax = plt.subplots(figsize=(min(3 + 0.45 * n, 16), min(2.5 + 0.4 * n, 14)))
    ax.imshow(frame.to_numpy(), cmap="Blues")
    ax.set_xticks(range(frame.shape[1]), frame.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), frame.index, fontsize=8)
    if n <= 30:
        for (i, j), v in np.ndenumerate(frame.to_numpy()):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set(xlabel=frame.columns.name or "", ylabel=frame.index.name or "",
           title=f"{result.data} ({result.split}, {result.n_images} images): error rate "
                 f"{result.metrics['error_rate']:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
