"""The device side of a run: which device and precision, the one AMP train step, peak memory.

Both the training loop (``train.fit``) and the benchmark's ceiling (``bench.ceiling``) step a model
through :meth:`Amp.step`, so the benchmark's "as fast as it can be" is the loop's own step on random
tensors, never a second copy of it::

    device = resolve_device("auto")
    amp = Amp.create(resolve_precision("auto", device), device)
    loss = amp.step(model, x, y, loss_fn, optimizer)      # not synchronized: call .item() when needed
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import TunekitError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(requested: str) -> torch.device:
    """``auto``: CUDA, else MPS, else the CPU; a named device must exist here."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TunekitError(f"device {requested!r} requested, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TunekitError(f"device {requested!r} requested, but MPS is not available here")
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that have it, fp16 (+GradScaler) on older GPUs, fp32 elsewhere.

    fp32 on CPUs even with AMX/avx512_bf16: on such a Xeon bf16 autocast made test_resnet faster
    but test_convnext and test_vit slower (benchmarks/RESULTS.md, "Precision on CPU"), and on
    CPUs without native bf16 it is many times slower. Force ``bf16`` to try.
    """
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@dataclass
class Amp:
    """Mixed precision on one device: autocast's dtype (None: fp32) and fp16's GradScaler."""

    device: torch.device
    precision: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, precision: str, device: torch.device) -> Amp:
        return cls(device, precision, _DTYPES.get(precision),
                   torch.amp.GradScaler(device.type, enabled=precision == "fp16"))

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One training step: forward under autocast, the loss in fp32, backward, optimizer step."""
        with self.autocast():
            out = model(x)
        loss = loss_fn(out.float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def scaler_state(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler.is_enabled() else None


def channels_last(device: torch.device, layout: str) -> bool:
    """Whether to train in channels-last memory format: on CUDA, for backbones whose maps are NCHW."""
    return device.type == "cuda" and layout == "NCHW"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer reads true time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring :func:`peak_memory_gib` afresh. The allocator's cached blocks go first: a
    reused worker (Ray's reuse_actors), or a benchmark's earlier run, still holds them, and
    max_memory_reserved would count them as this run's peak."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory reserved on the device in GiB (what the study's GPU_mem measured); 0 on CPU."""
    if device.type != "cuda":
        return 0.0
    return torch.cuda.max_memory_reserved(device) / 2**30


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}"
