"""``gpus_per_trial = "auto"``: each trial's GPU share from its measured peak memory.

For every (model, batch_size, img_size, precision) a search can run, a quick probe (a few bare
train steps of the same network, as ``tunekit bench``'s ceiling) measures the peak memory the
caching allocator reserves. The share is the smallest 1/k of the GPU (k <= MAX_PER_GPU) that holds
that peak plus the CUDA context and a margin, so small models pack several to a GPU and big ones
get what they need; Ray's per-trial resources (``tuner.assemble``) then place them. Probes are
cached per machine (GPU name, torch version) in ``~/.cache/tunekit/gpu_memory.json`` (beside the
data root). No Ray here: the probe runs wherever torch does.

    shares = probe_shares([MemoryKey("resnet18", 64, 224, "bf16")], torch.device("cuda"))
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

if TYPE_CHECKING:  # torch loads only where a GPU is probed: a dry run plans without it
    import torch

MAX_PER_GPU = 8  # the most trials auto packs onto one GPU
CONTEXT_GIB = 0.6  # CUDA context + cuDNN/cuBLAS handles: outside the allocator's count
MARGIN = 1.15  # fragmentation over a long run, validation batches, a later larger cuDNN workspace


@dataclass(frozen=True)
class MemoryKey:
    """What a trial's GPU memory depends on (pooling and head are negligible beside it)."""

    model: str
    batch_size: int
    img_size: int
    precision: str

    def __str__(self) -> str:
        return f"{self.model} b{self.batch_size} {self.img_size}px {self.precision}"


@dataclass(frozen=True)
class Share:
    peak_gib: float  # measured peak reserved by the probe
    need_gib: float  # what a trial is given room for
    gpus: float  # the share of one GPU: 1/k


def share_for(peak_gib: float, total_gib: float) -> Share:
    """The smallest 1/k of a ``total_gib`` GPU that holds ``peak_gib`` with room to spare, and
    beside it the training data a trial keeps on the GPU (up to PRELOAD_SHARE of its share)."""
    from .data.batches import PRELOAD_SHARE

    need = peak_gib * MARGIN + CONTEXT_GIB
    usable = total_gib * (1 - PRELOAD_SHARE)
    k = max(1, min(MAX_PER_GPU, math.floor(usable / need)))
    return Share(round(peak_gib, 3), round(need, 3), 1.0 / k)


def cache_file() -> Path:
    from .data.download import data_root

    return data_root().parent / "gpu_memory.json"


def machine_key(device: torch.device) -> str:
    import torch

    props = torch.cuda.get_device_properties(device)
    return f"{props.name} {props.total_memory // 2**20}MiB torch {torch.__version__}"


def probe_shares(keys: list[MemoryKey], device: torch.device,
                 echo=lambda line: None) -> tuple[dict[MemoryKey, Share], float]:
    """The share of each key on ``device`` (a CUDA GPU), probing what the cache lacks; and the
    GPU's memory in GiB."""
    import torch

    from .bench import ceiling
    from .device import resolve_precision

    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = machine_key(device)
    shares = {}
    with FileLock(str(path) + ".lock"):
        known = json.loads(path.read_text()) if path.is_file() else {}
        mine = known.setdefault(machine, {})
        for key in keys:
            name = json.dumps(asdict(key), sort_keys=True)
            if name not in mine:
                echo(f"  probing GPU memory of {key} ...")
                precision = resolve_precision(key.precision, device)
                mine[name] = ceiling(key.model, device, key.batch_size, key.img_size, precision,
                                     warmup=2, steps=2)[1]
                torch.cuda.empty_cache()
            shares[key] = share_for(mine[name], total)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(tmp, path)
    return shares, total


def probe_remote(keys: list[MemoryKey]) -> tuple[dict[MemoryKey, Share], float]:
    """For a Ray task holding one GPU on a cluster node."""
    import torch

    return probe_shares(keys, torch.device("cuda"))


def memory_keys(spec) -> list[MemoryKey]:
    """Every MemoryKey a search's trials can have (its space must give finite choices for them)."""
    from .config import TrialConfig
    from .errors import TunekitError
    from .loop import resolve_img_size

    values = {}
    for key in ("model", "batch_size", "img_size", "precision"):
        values[key] = spec.values_of(key)
        if values[key] is None:
            raise TunekitError(f"gpus_per_trial='auto' probes each {key} the space can take, and {key!r} is sampled "
                               f"from a range: give it as tune.choice([...]) or set gpus_per_trial to a number")
    keys = set()
    for model in values["model"]:
        for batch in values["batch_size"]:
            for size in values["img_size"]:
                for precision in values["precision"]:
                    cfg = TrialConfig(data=spec.data, model=model, batch_size=batch, img_size=size, pretrained=False)
                    keys.add(MemoryKey(model, int(batch), resolve_img_size(cfg), str(precision)))
    return sorted(keys, key=str)


def key_of(config: dict, data: str) -> MemoryKey:
    """The MemoryKey of one trial's config (as Ray passes it)."""
    from .config import TrialConfig
    from .loop import resolve_img_size

    cfg = TrialConfig(data=data, model=config["model"], batch_size=config.get("batch_size", TrialConfig.batch_size),
                      img_size=config.get("img_size"), pretrained=False)
    return MemoryKey(cfg.model, cfg.batch_size, resolve_img_size(cfg),
                     str(config.get("precision", TrialConfig.precision)))
