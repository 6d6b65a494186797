"""A fit time the study's score can trust when trials share GPUs: each trial's work at the speed its
network trains alone on the machine (``fit_time_unshared``), beside the wall time it measured packed.

The study scores ``error_rate * (fit_time + 80)``. A packed trial's fit_time also holds the time the
trials beside it took from it (efficientnet_b0 measured 50.9 s for 4 epochs with 7 others on an H200), so a
packed search would rank models partly by what happened to run next to them. When a search packs trials
onto GPUs, the plan times each network's steps alone first (train, frozen train, validation, in seconds
per image: ``alone_times``, in a process of its own before any trial), kept in the run folder
(``runfolder.STEP_TIMES_FILE``); each trial's work (its images x epochs, frozen and not, and its
validation passes) at those speeds is its ``fit_time_unshared`` (``unshared_fit_time``). A trial with a
GPU (or CPU cores) to itself ran unshared: its fit_time is its unshared time.

The alone times are the bare steps' (``device.random_steps``), without the loop's data path, which
``tunekit bench`` measures at >= 0.9 of the step: fit_time_unshared is the time the trial's steps take,
a little below what the trial would measure alone, the same way for every trial of the search.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from .gpu_share import MemoryKey

if TYPE_CHECKING:
    import torch

TIMES = ("train_s", "frozen_s", "eval_s")  # seconds per image: train step, frozen-body train step, eval


def unshared_fit_time(times: dict[str, float], n_train: int, n_valid: int, frozen_epochs: int,
                      epochs: int) -> float:
    """Seconds of ``epochs`` epochs (the first ``frozen_epochs`` of them with the body frozen), each a pass
    over ``n_train`` images and a validation pass over ``n_valid``, at ``times``' speeds."""
    frozen = min(frozen_epochs, epochs)
    return (n_train * (frozen * times["frozen_s"] + (epochs - frozen) * times["train_s"])
            + n_valid * epochs * times["eval_s"])


def key_text(key: MemoryKey) -> str:
    return json.dumps(asdict(key), sort_keys=True)


def alone_times(key: MemoryKey, device: torch.device, steps: int = 20) -> dict[str, float]:
    """Seconds per image of the network's train step, frozen train step and eval batch, alone on ``device``."""
    from .device import random_steps, resolve_precision

    precision = resolve_precision(key.precision, device)
    out = {}
    for name, frozen in (("train_s", False), ("frozen_s", True)):
        rate, _ = random_steps(key.model, device, key.batch_size, key.img_size, precision, warmup=3, steps=steps,
                               frozen=frozen)
        out[name] = 1 / rate
    out["eval_s"] = 1 / random_steps(key.model, device, key.batch_size, key.img_size, precision, warmup=3,
                                     steps=steps, train=False)[0]
    return out


def probe_alone(keys: list[MemoryKey], echo: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """:func:`alone_times` of every key on this machine's GPU, in a process of its own that exits (its GPU
    memory back before the trials), each kept per machine (``compiled.ledger``) so a search of the same
    networks measures nothing again; {key_text: times}."""
    from .device import in_own_process

    echo(f"timing the steps of {len(keys)} network(s) alone on the GPU (for fit_time_unshared)")
    return in_own_process(_probe_here, keys)


def _probe_here(keys: list[MemoryKey]) -> dict[str, dict[str, float]]:
    import torch

    from .compiled import ledger, step_key
    from .device import resolve_device, resolve_precision

    device = resolve_device("cuda")
    book, out = ledger(), {}
    for key in keys:
        sk = step_key(key.model, key.img_size, key.batch_size, resolve_precision(key.precision, device), device)
        known = {k[len("alone_"):]: v for k, v in book.get(sk).items() if k.startswith("alone_")}
        if set(known) != set(TIMES):
            try:
                known = alone_times(key, device)
            finally:
                torch.cuda.empty_cache()
            book.record(sk, **{f"alone_{k}": v for k, v in known.items()})
        out[key_text(key)] = known
    return out


def save(times: dict[str, dict[str, float]], path: Path) -> None:
    path.write_text(json.dumps(times, indent=1, sort_keys=True))


def load(path: Path) -> dict[str, dict[str, float]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
