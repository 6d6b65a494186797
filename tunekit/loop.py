"""fit(cfg, report): the AMP fine-tune loop of one run. Plain PyTorch: knows nothing of Ray.

    result = fit(TrialConfig(model="resnet26d", data="pets"), report=lambda metrics, state: print(metrics))

The schedule and optimizer are the recipe's (``recipe.py``: fastai's fine_tune); the device,
precision and the train step itself are ``device.py``'s. After each epoch ``report(metrics, state)``
gets the flat metric dict of the contract (``config.METRICS``) and ``state``, a function returning a
checkpoint dict; pass such a dict back as ``fit(..., resume=checkpoint)`` to continue after its
epoch. A non-finite loss ends the run: the last report has ``diverged=True``, ``error_rate=1.0``
and no losses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from . import data as tkdata
from .catalog import check_model_name
from .compiled import Work, cache_misses, compile_model, decide
from .config import TrialConfig
from .data.size import img_size_rule, resolve_img_size  # noqa: F401 - also tunekit.loop's
from .device import (
    Amp,
    channels_last,
    machine_id,
    peak_memory_gib,
    reset_peak_memory,
    resolve_device,
    resolve_precision,
    synchronize,
    trial_backend,
)
from .errors import TunekitError
from .gpu_share import resident_on
from .machine import Book, StepKey
from .metrics import classification_metrics
from .model import FineTuneModel, ModelInfo, build_model
from .recipe import Phase, optimizer, plan, start_phase
from .weights import check_weights_available

log = logging.getLogger("tunekit")

DIVERGENCE_CHECK_EVERY = 25  # steps between (syncing) checks of the running loss

Reporter = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]


class StartClock:
    """How long a run takes to start, phase by phase: ``mark(name)`` ends the phase that began at the last
    mark (or at the clock's start). Phases, in order: ``setup`` (in a new worker the loop's libraries
    loaded, timm's among them; the trial's config, a user's model modules, its checkpoint read), ``device``
    (the device resolved, CUDA's context made), ``data`` (opened from the decode cache, moved to the device
    when it stays there), ``model`` (built, its weights loaded, moved to the device), ``first_step`` (the
    first training step, to its end)."""

    PHASES = ("setup", "device", "data", "model", "first_step")

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else start  # Unix time: the trial's entry, for the driver
        self.last = time.perf_counter() - (time.time() - self.start)
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self.last
        self.last = now


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
    # GiB of training and validation images kept on the GPU (0: read from the host every batch); the
    # per-epoch gpu_mem leaves them out, as they depend on the trial's share, not on the model
    resident_gib: float = 0.0
    compiled: bool = False  # the step ran through torch.compile (config key compile; compiled.decide)
    compile_why: str = "off"  # the decision and the numbers behind it
    start_phases: dict[str, float] = field(default_factory=dict)  # StartClock's: seconds per start phase


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
    amp: Amp
    clock: StartClock
    key: StepKey | None = None  # this run's network on this machine (its compile as it runs)
    book: Book | None = None  # where its steady steps and compiles go: only a run with its device alone
    timed: set = field(default_factory=set)  # the phases (frozen or not) whose first epoch here was timed
    compiles: dict = field(default_factory=dict)  # what this process's compiles took: first steps beyond steady ones
    misses: int = 0  # Inductor's cache misses before the first compile (cold or warm)

    @property
    def resident_bytes(self) -> int:
        return self.train.resident_bytes + self.valid.resident_bytes


def fit(cfg: TrialConfig, report: Reporter | None = None, *, resume: dict[str, Any] | None = None,
        on_setup: Callable[[RunInfo], None] | None = None, clock: StartClock | None = None,
        alone: bool = True, rungs: list[int] = (), reduction_factor: float = 1.0) -> FitResult:
    """Train ``cfg`` to the end (or divergence); ``report`` after every epoch; ``on_setup`` once
    data and model are ready, with what the run really uses; ``clock``: its start phases (in
    ``RunInfo.start_phases``, the first step's once the first epoch reports). ``rungs`` and
    ``reduction_factor``: the scheduler's (none: every epoch runs), from which ``compile = "auto"`` weighs the
    work this run is expected to do from where it starts (``compiled.Work``). A run with ``compile`` on or auto
    that has its device ``alone`` records its steady unfrozen train step and the compiles it paid in the
    machine's book (``run_train_s``, ``run_compile_s`` and each compile in ``run_compiles``, ``run_cache``:
    beside, not over, the measurement stage's bare steps, which ``auto`` decides by)."""
    run = _setup(cfg, clock or StartClock(), rungs, reduction_factor, start=resume["epoch"] if resume else 0)
    if cfg.compile == "off" or not alone:  # (a packed trial's step times hold its neighbours' too)
        run.book = None
    if on_setup is not None:
        on_setup(run.info)
    phases = plan(cfg)
    history: list[dict[str, Any]] = []
    start_epoch, fit_time = 0, 0.0
    if resume is not None:
        run.model.load_state_dict(resume["model"])
        run.opt.load_state_dict(resume["optimizer"])
        if resume.get("scaler"):
            run.amp.scaler.load_state_dict(resume["scaler"])
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
            "scaler": run.amp.scaler_state(),
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
            if phase_epoch == 0:
                start_phase(run.opt)  # (a resume inside a phase keeps the state it loaded)
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


def _setup(cfg: TrialConfig, clock: StartClock, rungs: list[int] = (), reduction_factor: float = 1.0,
           start: int = 0) -> _Run:
    # before any data work, cheapest and likeliest first: a missing folder, a typo, unavailable weights
    tkdata.DataSpec.parse(cfg.data).check_path()
    check_model_name(cfg.model)
    if cfg.pretrained is True:
        check_weights_available(cfg.model)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    clock.mark("setup")
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    trial_backend(device)  # cuDNN's autotuner; CUDA's context made here, so that its time is its own phase
    clock.mark("device")
    img_size, why = img_size_rule(cfg)
    ds = tkdata.load(cfg.data, cfg.resize, img_size, threads=cfg.threads)
    clock.mark("data")
    torch.manual_seed(cfg.seed)
    model, model_info = build_model(cfg, len(ds.classes), img_size)
    nhwc = channels_last(device, model.layout)
    model.to(device, memory_format=torch.channels_last if nhwc else torch.preserve_format)
    clock.mark("model")
    reset_peak_memory(device)
    batch = {"batch_size": cfg.batch_size, "device": device, "mean": model_info.mean, "std": model_info.std,
             "channels_last": nhwc, "seed": cfg.seed, "resident": resident_on(device, ds.cache.images.nbytes)}
    train, valid = ds.batches("train", **batch), ds.batches("valid", **batch)
    synchronize(device)
    clock.mark("data")
    if len(train) == 0:
        raise TunekitError(f"batch_size {cfg.batch_size} is larger than the {train.n_items} training images")
    key = StepKey(cfg.model, cfg.batch_size, img_size, precision)
    book = Book(machine_id(device)) if cfg.compile != "off" else None
    work = Work.of(len(train) * cfg.batch_size, valid.n_items, cfg.batch_size,
                   cfg.freeze_epochs if cfg.uses_pretrained else 0, cfg.total_epochs, rungs, reduction_factor, start)
    decision = decide(cfg.compile, work, book.times(key) if book else {},
                      book.times(replace(key, compile=True)) if book else {})
    misses = 0
    if decision.compile:
        misses = cache_misses()
        compile_model(model)
    info = RunInfo(
        device=str(device), precision=precision, img_size=img_size, n_train=train.n_items,
        n_valid=valid.n_items, classes=ds.classes, multilabel=ds.multilabel,
        skipped=list(ds.cache.skipped), model=model_info,
        resident_gib=(train.resident_bytes + valid.resident_bytes) / 2**30, start_phases=clock.phases,
        compiled=decision.compile, compile_why=decision.why,
    )
    log.info(
        "%s on %s (%s): %d train / %d valid images, %d classes%s, %dpx (%s) %s; %.2fM params, "
        "pool %s, head %s, weights: %s, zero_init: %s, compile: %s",
        cfg.model, device, precision, info.n_train, info.n_valid, len(ds.classes),
        " (multi-label)" if ds.multilabel else "", img_size, why, cfg.resize, model_info.params / 1e6,
        cfg.pool, cfg.head, model_info.weights, model_info.zero_init, decision.why,
    )
    return _Run(
        cfg=cfg, info=info, device=device, model=model, train=train, valid=valid,
        loss_fn=nn.BCEWithLogitsLoss() if ds.multilabel else nn.CrossEntropyLoss(),
        opt=optimizer(model, cfg.lr), amp=Amp.create(precision, device), clock=clock,
        key=replace(key, compile=decision.compile), book=book,
        misses=misses,
    )


def _epoch(run: _Run, phase: Phase, phase_epoch: int, epoch: int) -> dict[str, Any]:
    """Train and validate one epoch; the metrics of the contract plus ``seconds`` it took."""
    model, opt, device = run.model, run.opt, run.device
    steps = len(run.train)
    total_steps = phase.epochs * steps
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    diverged = False
    first_step = "first_step" not in run.clock.phases  # this run's first epoch
    # the first epoch of each phase in this process: its first step (a compile, compiled) against its steady ones
    timed = run.book is not None and phase.frozen not in run.timed
    run.timed.add(phase.frozen)
    first_s = 0.0
    for i, (x, y) in enumerate(run.train.epoch(epoch)):
        phase.apply(opt, (phase_epoch * steps + i) / total_steps)
        loss = run.amp.step(model, x, y, run.loss_fn, opt)
        if (first_step or timed) and i == 0:
            synchronize(device)
            if first_step:
                run.clock.mark("first_step")
            first_s = time.perf_counter() - start
        loss_sum += loss * len(x)
        seen += len(x)
        if (i + 1) % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
            diverged = True
            break
    diverged = diverged or not bool(torch.isfinite(loss_sum))
    synchronize(device)
    train_seconds = time.perf_counter() - start
    head_lr = next(g["lr"] for g in opt.param_groups if g["role"] == "head")
    common = {
        "epoch": epoch, "images_per_s": seen / train_seconds, "lr": head_lr,
        "gpu_mem": peak_memory_gib(device, run.resident_bytes),  # the model's, without the resident images
    }
    if diverged:
        bad = {"error_rate": 1.0, "accuracy": 0.0, **({"f2": 0.0} if run.info.multilabel else {})}
        return {**common, "train_loss": None, "valid_loss": None, **bad, "diverged": True, "seconds": train_seconds}
    valid_start = time.perf_counter()
    # the eval graph too: an unfreeze changes requires_grad, which Dynamo guards on, so it compiles again
    timed_eval = timed and len(run.valid) > 1
    valid_loss, quality, first_valid_s = _validate(run, timed=timed_eval)
    seconds = time.perf_counter() - start
    if timed and i > 0:
        step_s = (train_seconds - first_s) / i
        frozen = "frozen " if phase.frozen else ""
        if run.info.compiled:
            run.compiles[f"{frozen}train"] = max(0.0, first_s - step_s)
        if timed_eval and run.info.compiled:
            valid_rest = (time.perf_counter() - valid_start - first_valid_s) / (len(run.valid) - 1)
            run.compiles[f"{frozen}eval"] = max(0.0, first_valid_s - valid_rest)
        if not phase.frozen:  # only an unfrozen epoch's steady steps are this network's train step
            _record_step_times(run, step_s / run.cfg.batch_size)
    return {**common, "train_loss": loss_sum.item() / seen, "valid_loss": valid_loss, **quality, "seconds": seconds}


def _validate(run: _Run, timed: bool = False) -> tuple[float, dict[str, float], float]:
    """(loss, quality metrics, ``timed``: seconds of the first batch, where a compiled network compiles its
    eval; else 0, and no wait for the device). A compiled network's partial last batch is padded to a full one
    (each image's outputs are its own in eval mode), so it compiles no second graph."""
    run.model.eval()
    outs, ys = [], []
    start, first_s = time.perf_counter(), 0.0
    with torch.inference_mode(), run.amp.autocast():
        for x, y in run.valid.epoch(0):
            n = len(x)
            if run.info.compiled and n < run.cfg.batch_size:
                x = pad_batch(x, run.cfg.batch_size)
            outs.append(run.model(x)[:n].float())
            ys.append(y)
            if timed and len(outs) == 1:
                synchronize(run.device)
                first_s = time.perf_counter() - start
    logits, target = torch.cat(outs), torch.cat(ys)
    loss = run.loss_fn(logits, target).item()
    return loss, classification_metrics(logits.cpu(), target.cpu(), run.info.multilabel), first_s


def pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with zero images after its own, to ``size`` of them, in its memory format."""
    nhwc = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    padded = torch.cat([x, x.new_zeros((size - len(x), *x.shape[1:]))])
    return padded.contiguous(memory_format=torch.channels_last) if nhwc else padded


def _record_step_times(run: _Run, train_s: float) -> None:
    """This run's steady unfrozen train step (seconds per image) and, compiled, what its compiles took in this
    process (and whether Inductor's cache was cold or warm), in the machine's book beside the measurement
    stage's bare steps (``measure``): a run's step holds its data path too. (A validation of a single batch
    cannot tell its compile from its step: that compile is not counted.)"""
    compiled = {"run_compile_s": sum(run.compiles.values()),
                "run_compiles": ", ".join(f"{k} {v:.2f}s" for k, v in run.compiles.items()),
                "run_cache": "cold" if cache_misses() > run.misses else "warm"} if run.info.compiled else {}
    try:
        run.book.record(run.key, by="run", run_train_s=train_s, **compiled)
    except OSError as e:  # a read-only cache: only a measurement is lost
        log.warning("could not record this run's step times: %s", e)
