"""The Ray Tune trainable: a trial's config dict -> TrialConfig -> loop.fit, reporting every epoch.

Each report carries the epoch's metrics and a checkpoint (model, optimizer, schedule position,
RNG) of which Tune keeps the last two; a retried or resumed trial continues after the latest.
Besides the metric contract, reports carry ``device`` (what the trial really ran on: a node
may declare GPUs it cannot use), ``node`` (the Ray node id), ``started_time`` and ``ready_time``
(when this run of the trial entered this function, and when it was about to take its first
training step, Unix seconds), on its first report ``start_phases`` (``loop.StartClock``: seconds
per phase of its start) and, on divergence, ``diverged``. ``tunekit_run.json`` in the trial
folder records what the trial really used (device, precision, image counts, zero-init status,
Ray resources and GPU ids) and its ``start_phases``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import torch
from ray import tune

from .._exit import skip_final_collections
from ..config import TrialConfig
from ..device import resolve_device
from ..errors import TunekitError
from ..gpu_share import limit_memory
from ..runfolder import CHECKPOINT_FILE, RUN_INFO_FILE
from ..spec import IMPORTS_KEY
from .ray_api import trial_working_directory

if TYPE_CHECKING:
    from ..loop import RunInfo

CHECKPOINTS_KEY = "_checkpoints"  # config flag: False when the storage is not shared by all nodes
# config: the scheduler's rungs (epochs; None: every trial runs to its end) and its reduction factor, from which
# compile="auto" takes the work a trial is expected to do (compiled.Work); flat values, as trackers log a config
RUNGS_KEY, REDUCTION_KEY = "_rungs", "_reduction_factor"
ALONE_KEY = "_alone"  # config flag: a CPU trial has the machine to itself (the search runs one trial at a time)
# Fault injection for tests: {"epoch": N, "marker": PATH, "error": "oom"} raises after epoch N's report
# and checkpoint; with a marker only once (the file records that it fired), without one every time.
# "error" "oom" raises torch's CUDA out-of-memory error, "config" tunekit's own error, else a RuntimeError; with
# "while": PATH only while that file exists. "hold_s" raises nothing (its "marker" and "error" unused): the trial
# waits that long after epoch N (a slow epoch that takes no CPU: trials a test needs to overlap). Space files cannot
# set it.
FAULT_KEY = "_fault"
_CONFIG_KEYS = {f.name for f in fields(TrialConfig)}


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable."""
    entered = time.time()
    # here, not at the module's top: the driver, which only names this function, does not load timm
    from ..loop import StartClock, fit

    clock = StartClock(start=entered)  # the trial's start, phase by phase (tunekit_run.json's start_phases)
    skip_final_collections()  # the worker's exit, when Ray ends it, is not seconds of a core beside the others
    for module in config.get(IMPORTS_KEY, []):  # the space's own models register here (Ray shipped the files)
        importlib.import_module(module)
    cfg = TrialConfig.from_dict({k: v for k, v in config.items() if k in _CONFIG_KEYS})
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            # weights_only: a checkpoint is data (tensors, numbers, strings), never code
            resume = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    clock.mark("setup")
    node = ray.get_runtime_context().get_node_id()
    share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    # the GPU Ray assigned (indexed), or the CPU for a trial Ray gave none: every later CUDA call gets it
    device = resolve_device(cfg.device, ray_gpus=[str(g) for g in ray.get_gpu_ids()])
    limit_memory(device, share)
    cfg = dataclasses.replace(cfg, device=str(device))
    clock.mark("device")

    extra = {"node": node, "started_time": clock.start}  # reported with every epoch's metrics
    resolved: dict[str, Any] = {}

    record: dict[str, Any] = {}

    def on_setup(info: RunInfo) -> None:
        ready = time.time()
        extra.update(device=info.device, ready_time=ready)
        resolved["img_size"] = info.img_size
        context = ray.get_runtime_context()
        # started: the trial function's entry; ready: its first training step is next
        record.update(**asdict(info), node=node, started=clock.start, ready=ready,
                      resources=context.get_assigned_resources(), gpu_ids=[str(g) for g in ray.get_gpu_ids()])
        write_record()

    def write_record() -> None:
        # synced to the run folder from whichever node ran it (SyncConfig(sync_artifacts=True))
        trial_dir = trial_working_directory()
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / RUN_INFO_FILE).write_text(json.dumps(record, indent=2, default=str))

    reported: list[int] = []

    def report(metrics: dict[str, Any], state) -> None:
        out = {**_finite(metrics), **extra}
        if not reported:  # this run's first report: its start, the first step's time included
            reported.append(metrics["epoch"])
            record["start_phases"] = dict(clock.phases)
            write_record()
            out["start_phases"] = dict(clock.phases)  # for the driver's summary (tuner.progress)
        if not config.get(CHECKPOINTS_KEY, True):
            tune.report(out)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state(), os.path.join(d, CHECKPOINT_FILE))
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(d))
        _maybe_fault(config.get(FAULT_KEY), metrics["epoch"])

    _maybe_fault(config.get(FAULT_KEY), 0)  # epoch 0: in the trial's setup
    # its device to itself: a whole GPU (or more), or a CPU trial of a search that runs one at a time
    alone = share >= 1 or (share == 0 and bool(config.get(ALONE_KEY, False)))
    try:
        fit(cfg, report, resume=resume, on_setup=on_setup, clock=clock, alone=alone,
            rungs=config.get(RUNGS_KEY) or (), reduction_factor=config.get(REDUCTION_KEY) or 1.0)
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise TrialOutOfMemory(_oom_advice(cfg, resolved.get("img_size"), share, e)) from e


class TrialOutOfMemory(RuntimeError):
    """A trial ran out of accelerator memory; the message says with what and what to change."""


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _oom_advice(cfg: TrialConfig, img_size: int | None, share: float, error: BaseException) -> str:
    """One line (the report shows the last line of error.txt): what ran out, with what, what to change."""
    where = f"{share:g} GPU per trial"
    if cfg.device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(cfg.device)).total_memory / 2**30
        where += f" ({share * total:.1f} of the GPU's {total:.0f} GiB)"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"out of memory: {cfg.model} at batch_size {cfg.batch_size}, img_size {img_size or cfg.img_size}, "
            f"{where}: lower batch_size, raise gpus_per_trial (fewer trials per GPU) or set gpus_per_trial='auto' "
            f"[{first[:120]}]")


def _maybe_fault(fault: dict[str, Any] | None, epoch: int) -> None:
    if not fault or epoch != fault["epoch"]:
        return
    if fault.get("while") and not os.path.exists(fault["while"]):
        return  # a fault of the environment, since fixed
    if "hold_s" in fault:
        time.sleep(fault["hold_s"])
        return
    marker = fault.get("marker")
    if marker:
        if os.path.exists(marker):
            return
        Path(marker).write_text(f"fired after epoch {epoch}\n")
    if fault.get("error") == "oom":
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (injected after epoch {epoch})")
    if fault.get("error") == "config":  # what tunekit's own checks raise: the same in every attempt
        raise TunekitError(f"injected configuration error after epoch {epoch}")
    raise RuntimeError(f"injected fault after epoch {epoch}")


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """Drop None (no loss on divergence) so Tune's loggers see only numbers."""
    return {k: v for k, v in metrics.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
