"""Classification metrics, as fastai computes them; pure functions on tensors.

``logits`` are raw model outputs (N, C). Single-label targets are class indices (N,);
multi-label targets are multi-hot (N, C) and predictions are ``sigmoid(logits) > thresh``.
"""

from __future__ import annotations

import torch


def error_rate(logits: torch.Tensor, target: torch.Tensor) -> float:
    """1 - top-1 accuracy (single-label)."""
    return 1.0 - accuracy(logits, target)


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy (single-label)."""
    return (logits.argmax(dim=1) == target).float().mean().item()


def accuracy_multi(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.5) -> float:
    """Fraction of (item, class) decisions that are right at ``thresh`` (fastai's accuracy_multi)."""
    pred = torch.sigmoid(logits.float()) > thresh
    return (pred == target.bool()).float().mean().item()


def fbeta_multi(logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0, thresh: float = 0.5) -> float:
    """Samples-averaged F-beta (fastai's FBetaMulti(average='samples')); an item with no label
    and no prediction scores 0, as scikit-learn's zero_division default does."""
    pred = torch.sigmoid(logits.float()) > thresh
    true = target.bool()
    tp = (pred & true).sum(1).float()
    fp = (pred & ~true).sum(1).float()
    fn = (~pred & true).sum(1).float()
    b2 = beta * beta
    denom = (1 + b2) * tp + b2 * fn + fp
    score = torch.where(denom > 0, (1 + b2) * tp / denom.clamp(min=1e-12), torch.zeros_like(tp))
    return score.mean().item()


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, multilabel: bool) -> dict[str, float]:
    """The per-epoch quality metrics of the contract: error_rate, accuracy, and f2 for multi-label."""
    if multilabel:
        acc = accuracy_multi(logits, target)
        return {"error_rate": 1.0 - acc, "accuracy": acc, "f2": fbeta_multi(logits, target, beta=2.0)}
    acc = accuracy(logits, target)
    return {"error_rate": 1.0 - acc, "accuracy": acc}
