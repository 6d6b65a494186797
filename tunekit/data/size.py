"""The image size a run trains at, and why (shown in its setup line): ``img_size`` if set, else from
the data and the model.

    size, why = img_size_rule(TrialConfig(model="convnext_tiny", data="folder:~/data/icons"))
"""

from __future__ import annotations

from ..catalog import timm_pretrained_cfg
from ..config import TrialConfig
from .spec import DataSpec


def resolve_img_size(cfg: TrialConfig) -> int:
    """The size a run trains at (see :func:`img_size_rule`)."""
    return img_size_rule(cfg)[0]


def img_size_rule(cfg: TrialConfig) -> tuple[int, str]:
    """(size, why): ``img_size`` if set; for the generated shapes, their size; else the model's
    pretrained input size, lowered to the data's median short side when its images are smaller
    (no point decoding 64px images at 160px: slower, a bigger cache, nothing to learn from)."""
    if cfg.img_size:
        return cfg.img_size, "set"
    from .items import natural_size  # (no torch: image headers only)

    natural = natural_size(cfg.data)
    if natural and DataSpec.parse(cfg.data).kind.startswith("shapes"):
        return natural, "the generated data's size"
    pretrained_cfg = timm_pretrained_cfg(cfg.model)
    model_size = int(pretrained_cfg.input_size[-1]) if pretrained_cfg else 224
    if natural and natural < model_size:
        return natural, f"the images' median short side; {cfg.model} was pretrained at {model_size}px"
    return model_size, f"{cfg.model}'s pretrained input size"
