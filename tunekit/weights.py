"""Bring your own weights: a foreign state dict, installed where timm's ``pretrained=True`` finds it offline.

    import_weights(Path("efficientnet-lite0.pth"), "tf_efficientnet_lite0")   # tunekit weights import
    availability(["tf_efficientnet_lite0", "resnet18"])                       # tunekit weights list

Air-gapped machines cannot reach timm's hub, and the hub is not the only source of weights. A foreign
file (safetensors, or a torch checkpoint read with ``weights_only=True``) is mapped onto the timm model:
by name when its keys are timm's, else by order and shape (a state dict from another implementation of
the same network lists the same tensors in the same order under other names); any mismatch is refused,
naming the first bad key and both shapes. The mapped weights are written in the layout of the Hugging
Face cache that timm reads (``$HF_HOME/hub/models--<org>--<model>.<tag>/snapshots/<rev>/model.safetensors``
and ``refs/main``), so ``pretrained=True`` (tunekit's or timm's own) loads them with no network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import TunekitError
from .model import cached_weights, check_model_name, timm_pretrained_cfg


def load_state(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a torch file (a state dict, or a checkpoint holding
    one under 'state_dict' or 'model'), read as data (``weights_only``)."""
    if not file.is_file():
        raise TunekitError(f"weights file {str(file)!r} does not exist")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unreadable, or not plain data
        raise TunekitError(f"{file} is not a readable weights file ({type(e).__name__}: {str(e)[:200]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TunekitError(f"{file} holds no state dict (a mapping of names to tensors)")
    return state


def map_state(foreign: dict[str, torch.Tensor], target: dict[str, torch.Tensor], model: str,
              source: str = "the file") -> tuple[dict[str, torch.Tensor], str]:
    """``foreign``'s tensors under ``target``'s names: by name if the names are the same, else by order
    (every shape must agree). Returns the mapped state and how it was mapped."""
    if set(foreign) == set(target):
        for key, value in target.items():
            if tuple(foreign[key].shape) != tuple(value.shape):
                raise TunekitError(f"{source}: {key!r} is {tuple(foreign[key].shape)} but {model}'s {key!r} is "
                                   f"{tuple(value.shape)}")
        return {key: foreign[key] for key in target}, "by name"
    if len(foreign) != len(target):
        missing = next(k for k in target if k not in foreign)
        raise TunekitError(f"{source} has {len(foreign)} tensors and {model} {len(target)}: neither the names (no "
                           f"{missing!r} in the file) nor the order can map it")
    mapped = {}
    for (fkey, fvalue), (tkey, tvalue) in zip(foreign.items(), target.items()):
        if tuple(fvalue.shape) != tuple(tvalue.shape):
            raise TunekitError(f"{source} does not fit {model} by order: its {fkey!r} {tuple(fvalue.shape)} would "
                               f"go to {tkey!r} {tuple(tvalue.shape)}")
        mapped[tkey] = fvalue.to(tvalue.dtype) if fvalue.dtype != tvalue.dtype else fvalue
    return mapped, "by order and shape"


def hub_cache() -> Path:
    import huggingface_hub.constants as hf

    return Path(hf.HF_HUB_CACHE)


def import_weights(file: Path, model: str) -> tuple[Path, str]:
    """Map ``file`` onto timm's ``model`` and install it in this machine's Hugging Face cache; returns the
    installed file and how the tensors were mapped."""
    import timm

    check_model_name(model)
    repo = getattr(timm_pretrained_cfg(model), "hf_hub_id", None)
    if not repo:
        raise TunekitError(f"timm has no hub entry for {model!r}: there is nowhere pretrained=True would look; pass "
                           f"the file itself instead (--weights FILE, or pretrained='FILE' in a space)")
    foreign = load_state(file.expanduser())
    net = timm.create_model(model, pretrained=False)
    state, how = map_state(foreign, net.state_dict(), model, source=str(file))
    net.load_state_dict(state, strict=True)  # the mapped weights really are this network's
    return install(repo, state), how


def install(repo: str, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` as ``repo``'s model.safetensors in the Hugging Face cache layout."""
    from safetensors.torch import save_file

    digest = hashlib.sha1()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    revision = digest.hexdigest()  # a snapshot folder named like a commit, by content
    folder = hub_cache() / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    target = snapshot / "model.safetensors"
    tmp = target.with_name(target.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(target)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return target


@dataclass
class Availability:
    model: str
    status: str  # "offline", "download", "none"
    where: str


def availability(models: Iterable[str]) -> list[Availability]:
    """For each model: are its pretrained weights on this machine (the file), else where timm would get them."""
    out = []
    for model in models:
        check_model_name(model)
        cfg = timm_pretrained_cfg(model)
        cached = cached_weights(model)
        if cached:
            out.append(Availability(model, "offline", cached))
        elif cfg is not None and (getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None)):
            out.append(Availability(model, "download", getattr(cfg, "hf_hub_id", None) or cfg.url))
        else:
            out.append(Availability(model, "none", "timm has no pretrained weights for it"))
    return out
