from __future__ import annotations

import pytest
import torch

from tunekit.metrics import accuracy_multi, classification_metrics, error_rate, fbeta_multi


def test_error_rate_single_label():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    assert error_rate(logits, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.25)


def test_multilabel_metrics_by_hand():
    big = 10.0
    # predictions (sigmoid > 0.5): item0 {0,1}, item1 {2}, item2 {}
    logits = torch.tensor([[big, big, -big], [-big, -big, big], [-big, -big, -big]])
    target = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])
    # decisions right: item0 2/3, item1 3/3, item2 2/3 -> 7/9
    assert accuracy_multi(logits, target) == pytest.approx(7 / 9)
    # F2 per item: item0 tp1 fp1 fn0 -> 5/(5+1)=0.8333; item1 1.0; item2 tp0 fn1 -> 0
    assert fbeta_multi(logits, target, beta=2) == pytest.approx((5 / 6 + 1.0 + 0.0) / 3)
    m = classification_metrics(logits, target, multilabel=True)
    assert m["error_rate"] == pytest.approx(2 / 9) and "f2" in m


def test_predicting_nothing_scores_zero_f2():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert fbeta_multi(torch.full((2, 2), -10.0), target) == 0.0
