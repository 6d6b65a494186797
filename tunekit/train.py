"""fit(cfg, report): the AMP fine-tune loop of one run. Plain PyTorch: knows nothing of Ray.

    result = fit(TrialConfig(model="resnet26d", data="pets"), report=lambda metrics, state: print(metrics))

With pretrained weights it runs fastai's ``fine_tune`` recipe: the body frozen (its norm
layers still training) for ``freeze_epochs`` of one-cycle with pct_start 0.99; then the lr
halved, the body unfrozen, and ``epochs`` of one-cycle (pct_start 0.3, div 5, final div
1e5) with discriminative lrs (body lr/100, head lr). From scratch, one one-cycle over all
parameters (fastai's fit_one_cycle defaults). AdamW, betas (0.9, 0.99) with beta1 cycled
0.95-0.85-0.95, eps 1e-5, weight decay 0.01 except on norm layers and biases.

After each epoch ``report(metrics, state)`` gets the flat metric dict of the contract
(``METRICS``) and ``state``, a function returning a checkpoint dict; pass such a dict back
as ``fit(..., resume=checkpoint)`` to continue after its epoch. A non-finite loss ends the
run: the last report has ``diverged=True``, ``error_rate=1.0`` and no losses.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import data as tkdata
from .config import TrialConfig
from .errors import TunekitError
from .metrics import classification_metrics
from .model import (
    NORM_TYPES,
    FineTuneModel,
    ModelInfo,
    build_model,
    check_model_name,
    check_weights_available,
    timm_pretrained_cfg,
)

log = logging.getLogger("tunekit")

METRICS = ("epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "f2", "fit_time",
           "images_per_s", "gpu_mem", "lr")
DIVERGENCE_CHECK_EVERY = 25  # steps between (syncing) checks of the running loss

Reporter = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]


@dataclass(frozen=True)
class Phase:
    """A stretch of one-cycle training (fastai's fit_one_cycle) with per-role max lrs."""

    frozen: bool
    epochs: int
    lr_body: float
    lr_head: float
    pct_start: float
    div: float = 25.0
    div_final: float = 1e5
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)

    def at(self, pos: float) -> tuple[float, float]:
        """(lr factor relative to max lr, beta1) at ``pos`` in [0, 1] of the phase."""
        if pos < self.pct_start:
            p = pos / self.pct_start
            return _cos(1 / self.div, 1.0, p), _cos(self.moms[0], self.moms[1], p)
        p = (pos - self.pct_start) / (1 - self.pct_start)
        return _cos(1.0, 1 / self.div_final, p), _cos(self.moms[1], self.moms[2], p)


def _cos(start: float, end: float, pos: float) -> float:
    """fastai's SchedCos: cosine from ``start`` to ``end`` as pos goes 0 -> 1."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def plan(cfg: TrialConfig) -> list[Phase]:
    """The phases of ``cfg``: fine_tune with pretrained weights, one cycle from scratch."""
    if not cfg.uses_pretrained:
        return [Phase(frozen=False, epochs=cfg.epochs, lr_body=cfg.lr, lr_head=cfg.lr, pct_start=0.25)]
    # fit_one_cycle(freeze_epochs, slice(lr)): the frozen body's groups get lr/10, the head lr.
    frozen = Phase(frozen=True, epochs=cfg.freeze_epochs, lr_body=cfg.lr / 10, lr_head=cfg.lr, pct_start=0.99)
    lr = cfg.lr / 2
    tuned = Phase(frozen=False, epochs=cfg.epochs, lr_body=lr / 100, lr_head=lr, pct_start=0.3, div=5.0)
    return ([frozen] if cfg.freeze_epochs > 0 else []) + [tuned]


def resolve_device(requested: str) -> torch.device:
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

    fp32 on CPUs even with AMX/avx512_bf16: measured on such a Xeon (benchmarks/RESULTS.md),
    bf16 autocast made test_resnet 1.5x faster but test_convnext 1.2x and test_vit 2.3x
    slower, and on CPUs without native bf16 it is many times slower. Force ``bf16`` to try.
    """
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_img_size(cfg: TrialConfig) -> int:
    """``img_size``, else the dataset's natural size, else the model's pretrained input size."""
    if cfg.img_size:
        return cfg.img_size
    natural = tkdata.natural_size(cfg.data)
    if natural:
        return natural
    pretrained_cfg = timm_pretrained_cfg(cfg.model)
    return int(pretrained_cfg.input_size[-1]) if pretrained_cfg else 224


@dataclass
class RunInfo:
    """What a run really used (shown to the user, saved with trial results)."""

    device: str
    precision: str
    img_size: int
    n_train: int
    n_valid: int
    classes: list[str]
    multilabel: bool
    skipped: list[str]
    model: ModelInfo


@dataclass
class FitResult:
    status: str  # "completed" or "diverged"
    history: list[dict[str, Any]]
    info: RunInfo
    model: FineTuneModel = field(repr=False)


@dataclass
class _Run:
    """Everything a run's epochs need, built once by ``_setup``."""

    cfg: TrialConfig
    info: RunInfo
    device: torch.device
    model: FineTuneModel
    train: tkdata.Batches
    valid: tkdata.Batches
    loss_fn: nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None


def fit(cfg: TrialConfig, report: Reporter | None = None, *, resume: dict[str, Any] | None = None,
        on_setup: Callable[[RunInfo], None] | None = None) -> FitResult:
    """Train ``cfg`` to the end (or divergence); ``report`` after every epoch; ``on_setup`` once
    data and model are ready, with what the run really uses."""
    run = _setup(cfg)
    if on_setup is not None:
        on_setup(run.info)
    phases = plan(cfg)
    history: list[dict[str, Any]] = []
    start_epoch, fit_time = 0, 0.0
    if resume is not None:
        run.model.load_state_dict(resume["model"])
        run.opt.load_state_dict(resume["optimizer"])
        if resume.get("scaler"):
            run.scaler.load_state_dict(resume["scaler"])
        start_epoch, fit_time, history = resume["epoch"], resume["fit_time"], list(resume["history"])
        torch.set_rng_state(resume["rng"])  # dropout draws from it: resumed == uninterrupted
        if resume.get("cuda_rng") is not None and run.device.type == "cuda":
            torch.cuda.set_rng_state(resume["cuda_rng"], run.device)
        log.info("resuming after epoch %d of %d", start_epoch, cfg.total_epochs)

    def checkpoint() -> dict[str, Any]:
        """A snapshot (CPU copies, so it stays valid as training goes on and loads on any node)."""
        return _to_cpu({
            "epoch": len(history), "fit_time": fit_time, "history": list(history),
            "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
            "rng": torch.get_rng_state(), "config": cfg.to_dict(),
            "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        })

    epoch = 0
    for phase in phases:
        run.model.freeze_body(phase.frozen)
        for phase_epoch in range(phase.epochs):
            epoch += 1
            if epoch <= start_epoch:
                continue
            metrics = _epoch(run, phase, phase_epoch, epoch)
            fit_time += metrics.pop("seconds")
            metrics["fit_time"] = fit_time
            history.append(metrics)
            if report is not None:
                report(dict(metrics), checkpoint)
            if metrics.get("diverged"):
                log.warning("loss became non-finite in epoch %d: run diverged (try a lower lr)", epoch)
                return FitResult("diverged", history, run.info, run.model)
    return FitResult("completed", history, run.info, run.model)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _setup(cfg: TrialConfig) -> _Run:
    # before any data work: a typo, or weights that cannot be had, should fail in a second
    check_model_name(cfg.model)
    tkdata.DataSpec.parse(cfg.data)
    if cfg.pretrained is True:
        check_weights_available(cfg.model)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    img_size = resolve_img_size(cfg)
    ds = tkdata.load(cfg.data, cfg.resize, img_size, threads=cfg.threads)
    torch.manual_seed(cfg.seed)
    model, model_info = build_model(cfg, len(ds.classes), img_size)
    channels_last = device.type == "cuda" and model.layout == "NCHW"
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    reset_peak_memory(device)
    batch = {"batch_size": cfg.batch_size, "device": device, "mean": model_info.mean, "std": model_info.std,
             "channels_last": channels_last, "seed": cfg.seed}
    train, valid = ds.batches("train", **batch), ds.batches("valid", **batch)
    if len(train) == 0:
        raise TunekitError(f"batch_size {cfg.batch_size} is larger than the {train.n_items} training images")
    info = RunInfo(
        device=str(device), precision=precision, img_size=img_size, n_train=train.n_items,
        n_valid=valid.n_items, classes=ds.classes, multilabel=ds.multilabel,
        skipped=list(ds.cache.skipped), model=model_info,
    )
    log.info(
        "%s on %s (%s): %d train / %d valid images, %d classes%s, %dpx %s; %.2fM params, "
        "pool %s, head %s, weights: %s, zero_init: %s",
        cfg.model, device, precision, info.n_train, info.n_valid, len(ds.classes),
        " (multi-label)" if ds.multilabel else "", img_size, cfg.resize, model_info.params / 1e6,
        cfg.pool, cfg.head, model_info.weights, model_info.zero_init,
    )
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return _Run(
        cfg=cfg, info=info, device=device, model=model, train=train, valid=valid,
        loss_fn=nn.BCEWithLogitsLoss() if ds.multilabel else nn.CrossEntropyLoss(),
        opt=_optimizer(model, cfg.lr), scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        amp_dtype=amp_dtype,
    )


def _optimizer(model: FineTuneModel, lr: float) -> torch.optim.Optimizer:
    """AdamW over four groups: (body, head) x (decayed, not decayed: norm layers and biases)."""
    no_decay = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    no_decay |= {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    head_ids = {id(p) for p in model.head_parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        role = "head" if id(p) in head_ids else "body"
        groups.setdefault((role, id(p) not in no_decay), []).append(p)
    param_groups = [
        {"params": params, "role": role, "weight_decay": 0.01 if decay else 0.0}
        for (role, decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.99), eps=1e-5)


def _epoch(run: _Run, phase: Phase, phase_epoch: int, epoch: int) -> dict[str, Any]:
    """Train and validate one epoch; the metrics of the contract plus ``seconds`` it took."""
    model, opt, device = run.model, run.opt, run.device
    steps = len(run.train)
    total_steps = phase.epochs * steps
    max_lr = {"body": phase.lr_body, "head": phase.lr_head}
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    diverged = False
    for i, (x, y) in enumerate(run.train.epoch(epoch)):
        factor, beta1 = phase.at((phase_epoch * steps + i) / total_steps)
        for group in opt.param_groups:
            group["lr"] = max_lr[group["role"]] * factor
            group["betas"] = (beta1, 0.99)
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            out = model(x)
        loss = run.loss_fn(out.float(), y)
        run.scaler.scale(loss).backward()
        run.scaler.step(opt)
        run.scaler.update()
        opt.zero_grad(set_to_none=True)
        loss_sum += loss.detach() * len(x)
        seen += len(x)
        if (i + 1) % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
            diverged = True
            break
    diverged = diverged or not bool(torch.isfinite(loss_sum))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - start
    head_lr = next(g["lr"] for g in opt.param_groups if g["role"] == "head")
    common = {
        "epoch": epoch, "images_per_s": seen / train_seconds, "gpu_mem": peak_memory_gib(device), "lr": head_lr,
    }
    if diverged:
        bad = {"error_rate": 1.0, "accuracy": 0.0, **({"f2": 0.0} if run.info.multilabel else {})}
        return {**common, "train_loss": None, "valid_loss": None, **bad, "diverged": True, "seconds": train_seconds}
    valid_loss, quality = _validate(run)
    seconds = time.perf_counter() - start
    return {**common, "train_loss": loss_sum.item() / seen, "valid_loss": valid_loss, **quality, "seconds": seconds}


def _validate(run: _Run) -> tuple[float, dict[str, float]]:
    run.model.eval()
    outs, ys = [], []
    with torch.inference_mode(), torch.autocast(run.device.type, dtype=run.amp_dtype,
                                                enabled=run.amp_dtype is not None):
        for x, y in run.valid.epoch(0):
            outs.append(run.model(x).float())
            ys.append(y)
    logits, target = torch.cat(outs), torch.cat(ys)
    loss = run.loss_fn(logits, target).item()
    return loss, classification_metrics(logits.cpu(), target.cpu(), run.info.multilabel)


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
