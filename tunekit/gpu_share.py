"""A trial's share of a GPU, all of it in one place: the ``gpus_per_trial = "auto"`` probe and its
cache, the fraction and how it spreads over the GPUs, a packed trial's memory limit, and whether its
images stay on the GPU. No Ray here (a search's Ray tasks call into it: ``tuner.nodes``).

For every (model, batch_size, img_size, precision) a search can run, a quick probe (a few bare
train steps of the same network: ``device.random_steps``, ``tunekit bench``'s ceiling) measures the
peak memory the caching allocator reserves. The share is the smallest 1/k of the GPU (k <=
MAX_PER_GPU) that holds that peak plus the CUDA context and a margin, beside the room its images
may take (PRELOAD_SHARE), so small models pack several to a GPU and big ones get what they need.
Probes are cached per machine (GPU name, torch version) in ``~/.cache/tunekit/gpu_memory.json``.

    shares = probe_apart(memory_keys(spec))          # on this machine's GPUs, in a process that exits
    shares.gpus_for(trial_config, floor=plan_share)  # Ray's per-trial GPU resource
    limit_memory(device, 0.25)                        # in the trial: keep to a quarter of the GPU
    keeps_resident(cache.images.nbytes, memory_budget(device))   # its images on the GPU, or not
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import TunekitError
from .paths import MachineFile, cache_root

if TYPE_CHECKING:  # torch loads only where a GPU is probed: a dry run plans without it
    import torch

MAX_PER_GPU = 8  # the most trials auto packs onto one GPU
# A trial keeps its dataset's uint8 images on the GPU when they take at most this share of the memory
# it may use (share_for leaves this room beside the trial's peak).
PRELOAD_SHARE = 0.15
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
    peak_gib: float  # measured peak reserved by the probe (0 when it ran out of memory)
    need_gib: float  # what a trial is given room for
    gpus: float  # the share of one GPU: 1/k
    out_of_memory: bool = False  # the probe ran out of memory on a whole GPU: trials get one, and may fail


@dataclass
class AutoShares:
    """The probed share of each MemoryKey a search's trials can have (``gpus_per_trial = "auto"``)."""

    shares: dict[MemoryKey, Share]
    data: str  # the search's data spec (a trial's image size can depend on it)

    def smallest(self) -> float:
        return min((s.gpus for s in self.shares.values()), default=1.0)

    def gpus_for(self, config: dict, floor: float = 0.0) -> float:
        """A trial's GPU share (its config as Ray passes it), at least ``floor`` (the plan's :func:`spread`)."""
        return max(self.shares[key_of(config, self.data)].gpus, floor)

    def lines(self) -> list[str]:
        return [f"  gpu share {key}: ran out of memory on a whole GPU -> 1 GPU (its trials will likely fail: lower "
                f"batch_size or img_size)" if share.out_of_memory else
                f"  gpu share {key}: peak {share.peak_gib:.2f} GiB, room for {share.need_gib:.2f} GiB -> "
                f"{fraction_text(share.gpus)} GPU" for key, share in self.shares.items()]


def fraction_text(share: float) -> str:
    """1, 1/3, 0.4: a share as a user reads it."""
    if share <= 0 or share >= 1:
        return f"{share:g}"
    k = round(1 / share)
    return f"1/{k}" if abs(1 / k - share) < 1e-9 else f"{share:g}"


def share_for(peak_gib: float, total_gib: float) -> Share:
    """The smallest 1/k of a ``total_gib`` GPU that holds ``peak_gib`` with room to spare, and
    beside it the training data a trial keeps on the GPU (up to PRELOAD_SHARE of its share)."""
    need = peak_gib * MARGIN + CONTEXT_GIB
    usable = total_gib * (1 - PRELOAD_SHARE)
    k = max(1, min(MAX_PER_GPU, math.floor(usable / need)))
    return Share(round(peak_gib, 3), round(need, 3), 1.0 / k)


def spread(share: float, total_gpus: float, at_once: int) -> float:
    """``share`` raised so that ``at_once`` trials spread over all ``total_gpus`` GPUs: Ray places
    fractions best-fit, so 12 trials at 1/8 on 4 GPUs would fill the first GPU, half the second and
    leave two idle; at 1/3 each GPU takes three. A whole GPU, none, or one GPU: unchanged."""
    if not 0 < share < 1 or total_gpus < 1:
        return share
    per_gpu = max(1, math.ceil(at_once / math.floor(total_gpus)))
    return max(share, 1.0 / per_gpu)


def smallest_card(cards: list[tuple[str, float]]) -> tuple[str, float]:
    """The GPU with the least memory among ``cards`` ((name, GiB) of every GPU of every node): shares
    are fractions, so on a cluster of mixed GPUs a share sized on a big card runs out on a small one."""
    if not cards:
        raise TunekitError("gpus_per_trial='auto': no GPU was found on any node to size the shares on")
    return min(cards, key=lambda card: card[1])


def packed_fraction(share: float) -> float | None:
    """The memory fraction a trial holding ``share`` of a GPU keeps to: the share when packed with
    others (0 < share < 1), so its caching allocator cannot starve its neighbours; None (no limit) for
    a whole GPU or none."""
    return share if 0 < share < 1 else None


def limit_memory(device: torch.device, share: float) -> None:
    """Keep this process to ``share`` of ``device``'s memory (see :func:`packed_fraction`)."""
    import torch

    fraction = packed_fraction(share)
    if device.type == "cuda" and fraction is not None:
        torch.cuda.set_per_process_memory_fraction(fraction, device)


def memory_budget(device: torch.device) -> int:
    """Bytes this process may use on a CUDA ``device``: its memory times the per-process fraction."""
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    return int(torch.cuda.get_per_process_memory_fraction(device) * total)


def keeps_resident(nbytes: int, budget: int) -> bool:
    """Whether a dataset's ``nbytes`` of uint8 images stay on the GPU: when they are at most
    PRELOAD_SHARE of ``budget``, the memory this process may use there (a packed trial's share)."""
    return nbytes <= PRELOAD_SHARE * budget


def resident_on(device: torch.device, nbytes: int) -> bool:
    """:func:`keeps_resident` for this process on ``device`` (never on a CPU: the images are there already).
    Decided on the whole cache (all splits), so training and validation together keep to the room."""
    return device.type == "cuda" and keeps_resident(nbytes, memory_budget(device))


def cache_file() -> Path:
    return cache_root() / "gpu_memory.json"


def machine_key(device: torch.device) -> str:
    import torch

    props = torch.cuda.get_device_properties(device)
    return f"{props.name} {props.total_memory // 2**20}MiB torch {torch.__version__}"


def probe_shares(keys: list[MemoryKey], device: torch.device, echo=lambda line: None,
                 size_on_gib: float | None = None) -> tuple[dict[MemoryKey, Share], float]:
    """The share of each key, its peak probed on ``device`` (a CUDA GPU) where the cache lacks it, the
    fraction sized for a GPU of ``size_on_gib`` (default: this one's memory); and that memory in GiB.

    Each probe is written to the cache as soon as it is measured, so an interrupted probe keeps what it
    learned; one that runs out of memory on the whole GPU is reported (a whole GPU for its trials, not
    cached: the GPU may have been busy) and the others go on. Probes run with cuDNN's autotuner on, as
    trials do (its workspaces count in their peak)."""
    import torch

    from .device import random_steps, resolve_precision

    total = size_on_gib or torch.cuda.get_device_properties(device).total_memory / 2**30
    machine = machine_key(device)

    def measure(key: MemoryKey) -> float:
        try:
            return random_steps(key.model, device, key.batch_size, key.img_size,
                                resolve_precision(key.precision, device), warmup=2, steps=2)[1]
        finally:
            torch.cuda.empty_cache()

    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        return shares_of(keys, total, measure, _cached(machine), lambda name, peak: _remember(machine, name, peak),
                         echo), total
    finally:
        torch.backends.cudnn.benchmark = benchmark


def shares_of(keys: list[MemoryKey], total_gib: float, measure: Callable[[MemoryKey], float],
              cached: dict[str, float], remember: Callable[[str, float], None],
              echo: Callable[[str], None]) -> dict[MemoryKey, Share]:
    """:func:`probe_shares`' loop, without the GPU: each key's peak from ``cached`` or ``measure``d (and
    ``remember``ed at once); a key whose probe runs out of memory gets a whole GPU, flagged."""
    import torch

    shares = {}
    for key in keys:
        name = json.dumps(asdict(key), sort_keys=True)
        peak = cached.get(name)
        if peak is None:
            echo(f"  probing GPU memory of {key} ...")
            try:
                peak = measure(key)
            except torch.OutOfMemoryError:
                echo(f"  warning: {key} ran out of memory on a whole GPU: its trials get a whole GPU and will "
                     f"likely fail; lower its batch_size or img_size")
                shares[key] = Share(0.0, total_gib, 1.0, out_of_memory=True)
                continue
            remember(name, peak)
        shares[key] = share_for(peak, total_gib)
    return shares


def _cached(machine: str) -> dict[str, float]:
    return MachineFile(cache_file()).get(machine)


def _remember(machine: str, name: str, peak: float) -> None:
    """Add one probe to the cache file (other drivers may probe at once: ``paths.MachineFile``)."""
    MachineFile(cache_file()).update(machine, {name: peak})


def probe_remote(keys: list[MemoryKey], size_on_gib: float | None = None) -> tuple[dict[MemoryKey, Share], float]:
    """For a Ray task holding one GPU (Ray makes it this process's only visible GPU)."""
    from .device import resolve_device

    return probe_shares(keys, resolve_device("cuda"), size_on_gib=size_on_gib)


def probe_apart(keys: list[MemoryKey], data: str, echo: Callable[[str], None] = print) -> AutoShares | None:
    """The shares of ``keys`` probed on this machine's GPU in a process of its own that exits after it
    (giving its GPU memory back before the trials start), sized for this machine's smallest GPU; None
    where there is no GPU."""
    from .device import cuda_available, in_own_process

    if not cuda_available():
        return None
    echo(f"probing the GPU memory of {len(keys)} model/batch/size combination(s) on this machine's GPU")
    cards, shares = in_own_process(_probe_here, keys)
    size_for(cards, echo)
    return AutoShares(shares, data)


def _probe_here(keys: list[MemoryKey]) -> tuple[list[tuple[str, float]], dict[MemoryKey, Share]]:
    """In a process of its own (``probe_apart``): this machine's GPUs, and the shares probed on one,
    sized for the smallest."""
    cards = gpu_cards()
    return cards, probe_remote(keys, smallest_card(cards)[1] if cards else None)[0]


def size_for(cards: list[tuple[str, float]], echo: Callable[[str], None]) -> float | None:
    """The memory (GiB) shares are sized for: the smallest of ``cards`` (every GPU of every node), said;
    None, with a note, where none could be listed (the probe's own GPU then)."""
    if not cards:
        echo("  note: the GPUs could not be listed, so shares are sized for the GPU the probe runs on")
        return None
    name, gib = smallest_card(cards)
    kinds = sorted({c[0] for c in cards})
    mixed = f"the smallest card, {name} ({gib:.0f} GiB) of {', '.join(kinds)}" if len(kinds) > 1 else \
        f"{name} ({gib:.0f} GiB)"
    echo(f"  shares sized for {mixed}")
    return gib


def gpu_cards() -> list[tuple[str, float]]:
    """(name, GiB) of every GPU of this machine, for a task holding none: torch sees them all when Ray
    leaves CUDA_VISIBLE_DEVICES alone for zero-GPU workers (Ray 2.60); else nvidia-smi lists them."""
    import shutil
    import subprocess

    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return [(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory / 2**30)
                for i in range(torch.cuda.device_count())]
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
        return parse_nvidia_smi(out)
    return []


def parse_nvidia_smi(text: str) -> list[tuple[str, float]]:
    """``name, MiB`` lines of ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``."""
    cards = []
    for line in text.strip().splitlines():
        name, _, mib = line.rpartition(",")
        if name.strip() and mib.strip().isdigit():
            cards.append((name.strip(), int(mib) / 1024))
    return cards


def memory_keys(spec) -> list[MemoryKey]:
    """Every MemoryKey a search's trials can have (its space must give finite choices for them)."""
    from .config import TrialConfig
    from .data.size import resolve_img_size

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
    from .data.size import resolve_img_size

    cfg = TrialConfig(data=data, model=config["model"], batch_size=config.get("batch_size", TrialConfig.batch_size),
                      img_size=config.get("img_size"), pretrained=False)
    return MemoryKey(cfg.model, cfg.batch_size, resolve_img_size(cfg),
                     str(config.get("precision", TrialConfig.precision)))
