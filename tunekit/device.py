"""The device side of a run: which device and precision, the one AMP train step, peak memory.

Both the training loop (``loop.fit``) and the benchmark's ceiling (``bench.ceiling``) step a model
through :meth:`Amp.step`, so the benchmark's "as fast as it can be" is the loop's own step on random
tensors, never a second copy of it::

    device = resolve_device("auto")
    amp = Amp.create(resolve_precision("auto", device), device)
    loss = amp.step(model, x, y, loss_fn, optimizer)      # not synchronized: call .item() when needed
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import TunekitError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU here."""
    return torch.cuda.is_available()


def in_own_process(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh (spawned) process that exits after it: GPU work done there
    leaves the calling process with no CUDA context and no cached GPU memory (a search's driver keeps
    none through the trials that need it). ``fn`` and its arguments must pickle."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def resolve_device(requested: str, *, ray_gpus: list[str] | None = None) -> torch.device:
    """The device every later call of a run uses: ``cpu``, ``mps`` or an indexed ``cuda:N``, never a
    bare ``cuda`` (torch's per-device queries refuse one). ``ray_gpus``: under Ray, the GPU ids Ray
    assigned to this worker (``ray.get_gpu_ids()``); an empty list keeps ``auto`` on the CPU. A CUDA
    device becomes the process's current device too, so library calls that take none agree."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    name = pick_device(requested, cuda_count=torch.cuda.device_count() if cuda else 0, mps=mps,
                       ray_gpus=ray_gpus, visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def pick_device(requested: str, *, cuda_count: int, mps: bool, ray_gpus: list[str] | None = None,
                visible: str | None = None) -> str:
    """:func:`resolve_device`'s decision, from what the machine has (no CUDA call: tested on any CPU).

    ``auto``: under Ray (``ray_gpus`` given) the GPU Ray assigned, or the CPU when it assigned none
    (Ray 2.60 no longer hides the GPUs from a zero-GPU worker: a CPU trial would otherwise train on
    cuda:0, uncounted); elsewhere cuda:0, else MPS, else the CPU. ``cuda`` is ``auto`` that must find a
    GPU; ``cuda:N`` must exist among the ``cuda_count`` visible devices.
    """
    kind, _, index = requested.partition(":")
    if requested == "auto" or requested == "cuda":
        if ray_gpus is not None:
            if ray_gpus and cuda_count > 0:
                return f"cuda:{cuda_index(ray_gpus[0], visible)}"
            if ray_gpus and requested == "auto":
                return "mps" if mps else "cpu"  # a node that declares GPUs torch cannot use (a test cluster's)
            if requested == "cuda":
                raise TunekitError("device 'cuda' requested, but Ray assigned this trial no GPU it can use "
                                   "(gpus_per_trial=0?): give trials a GPU share, or leave the device 'auto'")
            return "cpu"
        if cuda_count > 0:
            return "cuda:0"
        if requested == "cuda":
            raise TunekitError(f"device {requested!r} requested, but CUDA is not available here")
        return "mps" if mps else "cpu"
    if kind == "cuda":
        if not index.isdigit():
            raise TunekitError(f"device {requested!r}: expected cuda:N with N a GPU number")
        if cuda_count == 0:
            raise TunekitError(f"device {requested!r} requested, but CUDA is not available here")
        if int(index) >= cuda_count:
            raise TunekitError(f"device {requested!r} requested, but this machine has {cuda_count} CUDA device(s) "
                               f"(cuda:0 to cuda:{cuda_count - 1})")
        return f"cuda:{int(index)}"
    if kind == "mps" and not mps:
        raise TunekitError(f"device {requested!r} requested, but MPS is not available here")
    if kind not in ("cpu", "mps"):
        raise TunekitError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {requested!r}")
    return kind


def cuda_index(gpu_id: str | int, visible: str | None) -> int:
    """The torch index of the physical GPU ``gpu_id`` (as Ray names it) in a process that sees the
    GPUs listed in CUDA_VISIBLE_DEVICES (``visible``; None: all, in their physical order). Ray lists
    a worker's assigned GPUs there, so the first assigned GPU is usually cuda:0."""
    if visible is None or not visible.strip():
        return int(gpu_id)
    ids = [v.strip() for v in visible.split(",")]
    if str(gpu_id) not in ids:
        raise TunekitError(f"GPU {gpu_id} was assigned by Ray but is not among this process's visible devices "
                           f"(CUDA_VISIBLE_DEVICES={visible})")
    return ids.index(str(gpu_id))


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: :func:`pick_precision` for this device's compute capability; any other as given."""
    if requested != "auto":
        return requested
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return pick_precision(device.type, capability)


def pick_precision(device_type: str, capability: tuple[int, int] | None) -> str:
    """bf16 on GPUs with native bf16 (compute capability 8.0 on: A100, H100, RTX 30xx on), fp16 with a
    GradScaler on older GPUs (V100, T4: torch reports bf16 "supported" there, but emulates it, slowly,
    and some convolutions fail), fp32 elsewhere.

    fp32 on CPUs even with AMX/avx512_bf16: on such a Xeon bf16 autocast made test_resnet faster
    but test_convnext and test_vit slower (benchmarks/RESULTS.md, "Precision on CPU"), and on
    CPUs without native bf16 it is many times slower. Force ``bf16`` to try.
    """
    if device_type == "cuda":
        return "bf16" if capability is not None and tuple(capability) >= (8, 0) else "fp16"
    return "fp32"


def inference_precision(trained: str | None, device_type: str, capability: tuple[int, int] | None) -> str:
    """An exported model's precision where it predicts: the trial's own on a GPU (its bf16 as fp16 on a
    GPU without native bf16), else what ``auto`` picks there (fp32 on a CPU, where bf16 is slow; the
    weights are fp32 either way). Models exported before the manifest recorded it: ``auto``."""
    chosen = pick_precision(device_type, capability)
    if device_type != "cuda" or trained in (None, "auto"):
        return chosen
    return chosen if trained == "bf16" else trained


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


def peak_memory_gib(device: torch.device, resident_bytes: int = 0) -> float:
    """Peak memory reserved on the device in GiB (what the study's GPU_mem measured), less the
    ``resident_bytes`` of training images a run keeps on the device (see :func:`model_peak_gib`); 0 on CPU."""
    if device.type != "cuda":
        return 0.0
    return model_peak_gib(torch.cuda.max_memory_reserved(device), resident_bytes)


# The caching allocator hands out large blocks in multiples of 2 MiB: what a resident tensor really reserves.
_LARGE_BLOCK = 2 << 20


def model_peak_gib(peak_reserved: int, resident_bytes: int) -> float:
    """The model's own peak (GiB): the device's peak reserved bytes without the images kept there.
    Whether a split is resident depends on the trial's share and on crop vs squish (a crop's canvas is
    wider), so counting them would rank models by their neighbours and their resize, not their cost."""
    reserved = -(-resident_bytes // _LARGE_BLOCK) * _LARGE_BLOCK
    return max(0, peak_reserved - reserved) / 2**30


def trial_backend(device: torch.device) -> None:
    """The backend settings a trial trains with, which the measurement stage (``measure``) measures with too:
    cuDNN's autotuner on (each convolution's fastest algorithm for the shapes it meets: a convolutional
    network timed without it is slower than its trials, a ViT is not). On a GPU, its CUDA context is made
    here. :func:`backend_flags` reads what this set."""
    torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.empty(1, device=device)


def backend_flags() -> dict[str, object]:
    """The backend settings a step's speed depends on, as this process has them (tested: a trial's and the
    measurement stage's are the same)."""
    return {"cudnn.benchmark": torch.backends.cudnn.benchmark, "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "deterministic": torch.are_deterministic_algorithms_enabled()}


def machine_id(device: torch.device) -> str:
    """This machine as its measurements are kept (``machine.Book``): its GPU's name and how many the machine
    has (the same in every process of it: a Ray worker sees only its own GPU), or its CPU's model and cores;
    and torch's version, which can change any speed."""
    if device.type == "cuda":
        gpus = Path("/proc/driver/nvidia/gpus")
        count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
        what = torch.cuda.get_device_name(device) + (f" x{count}" if count else "")
    elif device.type == "mps":
        what = f"MPS {platform.machine()}"
    else:
        what = f"CPU {cpu_model()} x{os.cpu_count()}"
    return f"{what}, torch {torch.__version__}"


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.partition(":")[2].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}"


class RandomSteps:
    """The network tunekit trains (timm body + pool + head) stepped through :meth:`Amp.step` on random tensors,
    as timm's benchmark.py measures a model: ``tunekit bench``'s ceiling, the GPU share probe's peak memory
    (``gpu_share``) and the measurement stage's step times (``measure``). One model, its optimizer and a
    batch, built once; ``compiled``: through ``torch.compile`` (a step's first call then holds its compile)."""

    def __init__(self, model_name: str, device: torch.device, batch_size: int, img_size: int, precision: str,
                 n_classes: int = 6, compiled: bool = False, pool: str | None = None, head: str | None = None) -> None:
        from .compiled import compile_model
        from .config import TrialConfig
        from .model import build_model

        torch.manual_seed(0)
        cfg = TrialConfig(model=model_name, pretrained=False, img_size=img_size, batch_size=batch_size,
                          **({"pool": pool} if pool else {}), **({"head": head} if head else {}))
        self.model, _ = build_model(cfg, n_classes, img_size)
        self.device, self.batch_size = device, batch_size
        nhwc = channels_last(device, self.model.layout)
        self.model.to(device, memory_format=torch.channels_last if nhwc else torch.preserve_format).train()
        if compiled:
            compile_model(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5)
        self.x = torch.randn(batch_size, 3, img_size, img_size, device=device)
        if nhwc:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, n_classes, (batch_size,), device=device)
        self.amp, self.loss_fn = Amp.create(precision, device), torch.nn.CrossEntropyLoss()

    def _eval_step(self, *args) -> None:
        with torch.inference_mode(), self.amp.autocast():
            self.model(self.x)

    def time(self, train: bool = True, frozen: bool = False, warmup: int = 5, steps: int = 50) -> tuple[float, float]:
        """(seconds of the first step, seconds per steady step after ``warmup``) of a train step (the body
        ``frozen`` or not) or, ``train=False``, of validation's forward pass."""
        import time

        self.model.freeze_body(frozen)
        self.model.train(train)
        step = self.amp.step if train else self._eval_step
        start = time.perf_counter()
        for i in range(max(1, warmup)):
            step(self.model, self.x, self.y, self.loss_fn, self.opt)
            if i == 0:
                synchronize(self.device)
                first = time.perf_counter() - start
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            step(self.model, self.x, self.y, self.loss_fn, self.opt)
        synchronize(self.device)
        return first, (time.perf_counter() - start) / steps


def random_steps(model_name: str, device: torch.device, batch_size: int, img_size: int, precision: str,
                 n_classes: int = 6, warmup: int = 5, steps: int = 50, compiled: bool = False,
                 timings: dict | None = None, frozen: bool = False, train: bool = True) -> tuple[float, float]:
    """(images/s, peak GiB) of :class:`RandomSteps`' train step (``frozen``: the body frozen, a fine-tune's
    first epoch; ``train=False``: validation's forward pass); ``compiled``: the first step's seconds, which
    hold the compile, go to ``timings["first_step_s"]``."""
    stepper = RandomSteps(model_name, device, batch_size, img_size, precision, n_classes, compiled)
    reset_peak_memory(device)
    first, step_s = stepper.time(train, frozen, warmup, steps)
    if timings is not None:
        timings["first_step_s"] = first
    return batch_size / step_s, peak_memory_gib(device)
