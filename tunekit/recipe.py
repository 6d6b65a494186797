"""The fine-tune recipe: fastai's ``fine_tune`` schedule and optimizer, as the study used them.

With pretrained weights: the body frozen (its norm layers still training) for ``freeze_epochs`` of
one-cycle with pct_start 0.99; then the lr halved, the body unfrozen, and ``epochs`` of one-cycle
(pct_start 0.3, div 5, final div 1e5) with discriminative lrs (body lr/100, head lr). From
scratch, one one-cycle over all parameters (fastai's fit_one_cycle defaults). AdamW, betas
(0.9, 0.99) with beta1 cycled 0.95-0.85-0.95, eps 1e-5, weight decay 0.01 except on norm layers
and biases::

    opt = optimizer(model, cfg.lr)
    for phase in plan(cfg):
        model.freeze_body(phase.frozen)
        start_phase(opt)                 # Adam's state cleared, as fastai's freeze/unfreeze do
        ...  phase.apply(opt, position)   # before each step, position in [0, 1] of the phase
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import TrialConfig
from .model import NORM_TYPES, FineTuneModel


@dataclass(frozen=True)
class Phase:
    """A stretch of one-cycle training (fastai's fit_one_cycle) with per-role max lrs."""

    frozen: bool
    epochs: int
    lr_body: float
    lr_head: float
    pct_start: float
    div: float = 25.0
    div_final: float = 1e5
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)

    def at(self, pos: float) -> tuple[float, float]:
        """(lr factor relative to max lr, beta1) at ``pos`` in [0, 1] of the phase."""
        if pos < self.pct_start:
            p = pos / self.pct_start
            return _cos(1 / self.div, 1.0, p), _cos(self.moms[0], self.moms[1], p)
        p = (pos - self.pct_start) / (1 - self.pct_start)
        return _cos(1.0, 1 / self.div_final, p), _cos(self.moms[1], self.moms[2], p)

    def apply(self, opt: torch.optim.Optimizer, pos: float) -> None:
        """Set every parameter group's lr (by its role, body or head) and beta1 for ``pos``."""
        factor, beta1 = self.at(pos)
        max_lr = {"body": self.lr_body, "head": self.lr_head}
        for group in opt.param_groups:
            group["lr"] = max_lr[group["role"]] * factor
            group["betas"] = (beta1, group["betas"][1])


def _cos(start: float, end: float, pos: float) -> float:
    """fastai's SchedCos: cosine from ``start`` to ``end`` as pos goes 0 -> 1."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def plan(cfg: TrialConfig) -> list[Phase]:
    """The phases of ``cfg``: fine_tune with pretrained weights, one cycle from scratch."""
    if not cfg.uses_pretrained:
        return [Phase(frozen=False, epochs=cfg.epochs, lr_body=cfg.lr, lr_head=cfg.lr, pct_start=0.25)]
    # fit_one_cycle(freeze_epochs, slice(lr)): the frozen body's groups get lr/10, the head lr.
    frozen = Phase(frozen=True, epochs=cfg.freeze_epochs, lr_body=cfg.lr / 10, lr_head=cfg.lr, pct_start=0.99)
    lr = cfg.lr / 2
    tuned = Phase(frozen=False, epochs=cfg.epochs, lr_body=lr / 100, lr_head=lr, pct_start=0.3, div=5.0)
    return ([frozen] if cfg.freeze_epochs > 0 else []) + [tuned]


def start_phase(opt: torch.optim.Optimizer) -> None:
    """Clear the optimizer's state (Adam's moments and step counts) at the start of a phase: fastai's
    ``Learner.freeze_to`` (``freeze``, ``unfreeze``) calls ``opt.clear_state()``, so its unfrozen phase
    starts with fresh moments (its first steps move each weight by about the lr). Checked step by step
    against fastai in benchmarks/vs_fastai.py."""
    opt.state.clear()


def optimizer(model: FineTuneModel, lr: float) -> torch.optim.Optimizer:
    """AdamW over four groups: (body, head) x (decayed, not decayed: norm layers and biases)."""
    no_decay = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    no_decay |= {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    head_ids = {id(p) for p in model.head_parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        role = "head" if id(p) in head_ids else "body"
        groups.setdefault((role, id(p) not in no_decay), []).append(p)
    param_groups = [
        {"params": params, "role": role, "weight_decay": 0.01 if decay else 0.0}
        for (role, decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.99), eps=1e-5)
