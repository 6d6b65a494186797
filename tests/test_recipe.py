"""The fine-tune recipe (recipe.py): fastai's phases, one-cycle schedule, optimizer groups."""

from __future__ import annotations

import pytest
import torch

from tunekit.config import TrialConfig
from tunekit.model import NORM_TYPES, build_model
from tunekit.recipe import Phase, optimizer, plan


def test_fine_tune_recipe_phases_and_group_lrs():
    frozen, tuned = plan(TrialConfig(lr=0.008, epochs=5, freeze_epochs=1, pretrained=True))
    assert (frozen.frozen, frozen.epochs, frozen.pct_start) == (True, 1, 0.99)
    assert (frozen.lr_body, frozen.lr_head) == pytest.approx((0.0008, 0.008))  # slice(lr): lr/10 for the body
    assert (tuned.frozen, tuned.epochs, tuned.pct_start, tuned.div) == (False, 5, 0.3, 5.0)
    assert (tuned.lr_body, tuned.lr_head) == pytest.approx((0.004 / 100, 0.004))  # halved, body /100
    (scratch,) = plan(TrialConfig(lr=0.01, epochs=4, pretrained=False))
    assert (scratch.frozen, scratch.lr_body, scratch.lr_head, scratch.pct_start) == (False, 0.01, 0.01, 0.25)
    assert len(plan(TrialConfig(freeze_epochs=0, pretrained=True))) == 1


def test_one_cycle_schedule_matches_fastai():
    p = Phase(frozen=False, epochs=1, lr_body=1, lr_head=1, pct_start=0.3, div=5.0, div_final=1e5)
    assert p.at(0.0) == pytest.approx((1 / 5, 0.95))
    assert p.at(0.3) == pytest.approx((1.0, 0.85))
    assert p.at(1.0) == pytest.approx((1e-5, 0.95))
    lrs = [p.at(i / 100)[0] for i in range(101)]
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 30


def test_phase_sets_each_groups_lr_by_role_and_beta1():
    model, _ = build_model(TrialConfig(model="test_resnet", pretrained=False), n_classes=3, img_size=32)
    opt = optimizer(model, lr=0.01)
    phase = Phase(frozen=False, epochs=1, lr_body=0.001, lr_head=0.01, pct_start=0.3, div=5.0)
    phase.apply(opt, 0.3)  # the peak: max lr, lowest beta1
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(0.01 if group["role"] == "head" else 0.001)
        assert group["betas"] == pytest.approx((0.85, 0.99))


def test_optimizer_exempts_norms_and_biases_from_weight_decay():
    model, _ = build_model(TrialConfig(model="test_resnet", pretrained=False), n_classes=3, img_size=32)
    opt = optimizer(model, lr=0.01)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(decay) == len(list(model.parameters()))  # every parameter, once
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            expected = 0.0 if isinstance(module, NORM_TYPES) or name == "bias" else 0.01
            assert decay[id(p)] == expected, (type(module).__name__, name)
    head = {id(p) for p in model.head.parameters()}
    assert all((g["role"] == "head") == (id(g["params"][0]) in head) for g in opt.param_groups)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["eps"] == 1e-5
