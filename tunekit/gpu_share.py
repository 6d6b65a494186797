"""A trial's share of a GPU, all of it in one place: the ``gpus_per_trial = "auto"`` share, the fraction and
how it spreads over the GPUs, a packed trial's memory limit, and whether its images stay on the GPU. No Ray
here (a search's Ray tasks call into it: ``tuner.nodes``).

For every (model, batch_size, img_size, precision) a search can run (``memory_keys``), the measurement stage
(``measure``: a few bare train steps of the same network, with the trials' backend settings) measures the
peak memory the caching allocator reserves. The share is the smallest 1/k of the GPU (k <= MAX_PER_GPU) that
holds that peak plus the CUDA context and a margin, beside the room its images may take (PRELOAD_SHARE), so
small models pack several to a GPU and big ones get what they need. Peaks are kept in the machine's book
(``machine.Book``), so a search of the same networks on the machine measures nothing again.

    shares = AutoShares(shares_from(found.peaks, found.total_gib), spec.data)    # found: measure.Found
    shares.gpus_for(trial_config, floor=plan_share)  # Ray's per-trial GPU resource
    limit_memory(device, 0.25)                        # in the trial: keep to a quarter of the GPU
    keeps_resident(cache.images.nbytes, memory_budget(device))   # its images on the GPU, or not
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import TunekitError
from .machine import StepKey

if TYPE_CHECKING:  # torch loads only where a GPU is probed: a dry run plans without it
    import torch

MAX_PER_GPU = 8  # the most trials auto packs onto one GPU
# A trial keeps its dataset's uint8 images on the GPU when they take at most this share of the memory
# it may use (share_for leaves this room beside the trial's peak).
PRELOAD_SHARE = 0.15
CONTEXT_GIB = 0.6  # CUDA context + cuDNN/cuBLAS handles: outside the allocator's count
MARGIN = 1.15  # fragmentation over a long run, validation batches, a later larger cuDNN workspace


@dataclass(frozen=True)
class Share:
    peak_gib: float  # measured peak reserved by the probe (0 when it ran out of memory)
    need_gib: float  # what a trial is given room for
    gpus: float  # the share of one GPU: 1/k
    out_of_memory: bool = False  # the probe ran out of memory on a whole GPU: trials get one, and may fail


@dataclass
class AutoShares:
    """The measured share of each key a search's trials can have (``gpus_per_trial = "auto"``)."""

    shares: dict[StepKey, Share]
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


def shares_from(peaks: dict[StepKey, float | None], total_gib: float) -> dict[StepKey, Share]:
    """Each key's share of a ``total_gib`` GPU from its measured peak (``measure.Found.peaks``); a key whose
    train step ran out of memory on a whole GPU (None) gets a whole GPU, flagged."""
    return {key: Share(0.0, total_gib, 1.0, out_of_memory=True) if peak is None else share_for(peak, total_gib)
            for key, peak in peaks.items()}


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


def memory_keys(spec, purpose: str = "gpus_per_trial='auto'",
                instead: str = "set gpus_per_trial to a number") -> list[StepKey]:
    """Every key (model, batch_size, img_size, precision as asked) a search's trials can have (its space must
    give finite choices for them, which ``purpose`` measures; else the error says to give them, or ``instead``)."""
    from .config import TrialConfig
    from .data.size import resolve_img_size

    values = {}
    for key in ("model", "batch_size", "img_size", "precision"):
        values[key] = spec.values_of(key)
        if values[key] is None:
            raise TunekitError(f"{purpose} measures each {key} the space can take, and {key!r} is sampled "
                               f"from a range: give it as tune.choice([...])" + (f" or {instead}" if instead else ""))
    keys = set()
    for model in values["model"]:
        for batch in values["batch_size"]:
            for size in values["img_size"]:
                for precision in values["precision"]:
                    cfg = TrialConfig(data=spec.data, model=model, batch_size=batch, img_size=size, pretrained=False)
                    keys.add(StepKey(model, int(batch), resolve_img_size(cfg), str(precision)))
    return sorted(keys, key=str)


def key_of(config: dict, data: str) -> StepKey:
    """The key of one trial's config (as Ray passes it), its precision as asked."""
    from .config import TrialConfig
    from .data.size import resolve_img_size

    cfg = TrialConfig(data=data, model=config["model"], batch_size=config.get("batch_size", TrialConfig.batch_size),
                      img_size=config.get("img_size"), pretrained=False)
    return StepKey(cfg.model, cfg.batch_size, resolve_img_size(cfg), str(config.get("precision",
                                                                                    TrialConfig.precision)))
