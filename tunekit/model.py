"""A timm backbone with a fresh pool + head for the dataset's classes.

    model, info = build_model(cfg, n_classes=37)
    logits = model(images)            # body.forward_features -> pool -> head

Pooling (``pool``), following fastai's rule for timm models:

* Backbones whose pretrained config has a ``pool_size`` (CNNs: ResNet, ConvNeXt,
  EfficientNet, ...) give a feature map. ``avg`` averages it; ``concat`` concatenates its
  max and its average (fastai's AdaptiveConcatPool2d), doubling the features.
* Token models (ViT, LeViT, Swin, ...) give a token sequence or map. ``avg`` is the
  backbone's own pooled representation (timm's ``forward_head(pre_logits=True)``: the
  class token for ViT, the token mean for others), exactly what fastai used for them.
  ``concat`` concatenates that with the max over the patch tokens (prefix tokens such as
  CLS excluded): the CNN recipe's "is any position X" signal, added to the model's own
  summary. (In the study, fastai ignored concat_pool for token models.)

Heads (``head``): ``fastai`` is fastai's ``create_head`` (BatchNorm1d, Dropout 0.25,
Linear(nf, 512), ReLU, BatchNorm1d, Dropout 0.5, Linear(512, n)); ``linear`` is one Linear.

``zero_init`` maps to timm's ``zero_init_last`` (zero gamma of the last BatchNorm in each
residual block) where the backbone has it; elsewhere it is recorded as not applicable.
Pretrained weights overwrite those gammas, which ``ModelInfo.zero_init`` says.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# isort: off
from . import _compat  # noqa: F401  - first: timm imports torchvision, which a CPU-only torch can break
import timm
# isort: on

from .catalog import check_model_name, fixed_input_size
from .config import HEADS, TrialConfig
from .errors import TunekitError
from .weights import local_weights, require_reachable, weights_error

# fastai keeps these trainable while the body is frozen (train_bn) and exempts them from decay.
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
              nn.InstanceNorm3d, nn.LayerNorm)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    layout: str  # feature layout of the body: "NCHW" or "NHWC" (maps), "tokens"
    num_features: int  # body features before pooling
    pooled_features: int  # features entering the head
    zero_init: str  # "on", "off", "backbone default", "n/a (...)", "... (overwritten by pretrained weights)"
    weights: str  # "random init", "timm hub", or "file: PATH"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    params: int





class FineTuneModel(nn.Module):
    """``body`` (timm, no classifier) -> pool -> ``head``."""

    def __init__(self, body: nn.Module, head: nn.Module, pool: str, layout: str, own_pool: bool) -> None:
        super().__init__()
        self.body, self.head = body, head
        self.pool, self.layout, self.own_pool = pool, layout, own_pool
        self.num_prefix_tokens = int(getattr(body, "num_prefix_tokens", 0) or 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(self.body.forward_features(x)))

    def pooled(self, f: torch.Tensor) -> torch.Tensor:
        if self.layout == "tokens":
            positions, dims = f[:, self.num_prefix_tokens:], (1,)
        else:
            positions, dims = f, ((2, 3) if self.layout == "NCHW" else (1, 2))
        summary = self.body.forward_head(f, pre_logits=True) if self.own_pool else positions.mean(dims)
        if self.pool == "avg":
            return summary
        top = positions.amax(dims)
        # fastai's AdaptiveConcatPool2d order: max first.
        return torch.cat([top, summary] if not self.own_pool else [summary, top], dim=1)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def freeze_body(self, frozen: bool) -> None:
        """Freeze (or unfreeze) the body; its normalization layers stay trainable, as fastai's train_bn."""
        for module in self.body.modules():
            trainable = not frozen or isinstance(module, NORM_TYPES)
            for p in module.parameters(recurse=False):
                p.requires_grad_(trainable)


def fastai_head(nf: int, n_out: int, hidden: int = 512) -> nn.Sequential:
    """fastai's create_head without its pool: BN, Dropout, Linear (no bias after BN), ReLU, ..."""
    head = nn.Sequential(
        nn.BatchNorm1d(nf), nn.Dropout(0.25), nn.Linear(nf, hidden, bias=False), nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden), nn.Dropout(0.5), nn.Linear(hidden, n_out, bias=False),
    )
    _init_head(head)
    return head


def linear_head(nf: int, n_out: int) -> nn.Sequential:
    head = nn.Sequential(nn.Linear(nf, n_out))
    _init_head(head)
    return head


# config.HEADS -> what builds it, (pooled features, classes) -> head
HEAD_BUILDERS = {"fastai": fastai_head, "linear": linear_head}
assert tuple(HEAD_BUILDERS) == HEADS, "config.HEADS and model.HEAD_BUILDERS name the same heads"


def _init_head(head: nn.Module) -> None:
    """fastai's head init: kaiming-normal linears, BatchNorm weight 1 and bias 1e-3."""
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, 1e-3)


def build_model(cfg: TrialConfig, n_classes: int, img_size: int) -> tuple[FineTuneModel, ModelInfo]:
    """The backbone of ``cfg.model`` (weights per ``cfg.pretrained``) with a new pool and head."""
    check_model_name(cfg.model)
    body, zero_init, weights = _create_body(cfg, img_size)
    pretrained_cfg = body.pretrained_cfg
    body.eval()
    with torch.no_grad():
        f = body.forward_features(torch.zeros(1, 3, img_size, img_size))
    body.train()
    if f.ndim == 3:
        layout = "tokens"
    elif f.ndim == 4:
        layout = "NHWC" if str(getattr(body, "output_fmt", "NCHW")) == "NHWC" else "NCHW"
    else:
        raise TunekitError(f"{cfg.model!r} returns features of shape {tuple(f.shape)}: not a map or token sequence")
    own_pool = pretrained_cfg.get("pool_size") is None
    model = FineTuneModel(body, nn.Identity(), cfg.pool, layout, own_pool)
    with torch.no_grad():
        body.eval()
        nf = model.pooled(f).shape[1]
        body.train()
    model.head = HEAD_BUILDERS[cfg.head](nf, n_classes)
    data_cfg = timm.data.resolve_data_config({}, model=body)
    info = ModelInfo(
        name=cfg.model, layout=layout, num_features=int(getattr(body, "num_features", f.shape[-1])),
        pooled_features=nf, zero_init=zero_init, weights=weights,
        mean=tuple(data_cfg["mean"]), std=tuple(data_cfg["std"]),
        params=sum(p.numel() for p in model.parameters()),
    )
    return model, info


def _create_body(cfg: TrialConfig, img_size: int) -> tuple[nn.Module, str, str]:
    kwargs: dict = {"num_classes": 0}
    if fixed_input_size(cfg.model):
        kwargs["img_size"] = img_size  # ViT-style models are built for one size; timm resamples pos embeds
    if isinstance(cfg.pretrained, str):
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(Path(cfg.pretrained).expanduser())})
        weights = f"file: {cfg.pretrained}"
    elif cfg.pretrained:
        kwargs["pretrained"] = True
        cached = local_weights(cfg.model)
        if cached:  # load the cached file directly: no network round trip per trial
            kwargs["pretrained_cfg_overlay"] = {"file": cached}
        else:
            require_reachable(cfg.model)
        weights = "timm hub"
    else:
        kwargs["pretrained"] = False
        weights = "random init"
    if cfg.zero_init is not None:
        kwargs["zero_init_last"] = cfg.zero_init
    try:
        body = _create(cfg, kwargs)
        zero_init = "backbone default" if cfg.zero_init is None else ("on" if cfg.zero_init else "off")
    except TypeError as e:
        if "zero_init_last" not in str(e):
            raise
        kwargs.pop("zero_init_last")
        body = _create(cfg, kwargs)
        zero_init = f"n/a ({type(body).__name__} has no zero_init_last)"
        warnings.warn(f"zero_init={cfg.zero_init}: not supported by {cfg.model} ({type(body).__name__} has no "
                      f"zero_init_last); training it as it is", stacklevel=2)
    if cfg.uses_pretrained and not zero_init.startswith("n/a"):
        zero_init += " (overwritten by pretrained weights)"
    return body, zero_init, weights


def _create(cfg: TrialConfig, kwargs: dict) -> nn.Module:
    try:
        return timm.create_model(cfg.model, **kwargs)
    except TypeError:
        raise
    except Exception as e:  # noqa: BLE001 - hub/network/file errors all mean "weights unavailable"
        if not kwargs.get("pretrained"):
            raise
        source = kwargs.get("pretrained_cfg_overlay", {}).get("file")
        if source:
            raise TunekitError(f"could not load weights file {source!r} into {cfg.model!r}: {e}") from None
        raise weights_error(cfg.model, f"{type(e).__name__}: {e}") from None
