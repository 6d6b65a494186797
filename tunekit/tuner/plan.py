"""The plan stage of a search: capacity and trial slots, worked out from what the machine and the space say,
without measuring or starting anything (a cluster is joined to count it); a dry run ends here. What must be
measured (``auto``'s GPU shares, steps alone, compiles) is the next stage's (``tuner.measure``).

    plan(state)                                  # the stage (tuner.flow): sets state.plan
    make_plan(spec, run_dir, total_cpus=16, total_gpus=4, restoring=False)   # the arithmetic alone
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from pathlib import Path

from ..errors import TunekitError
from ..gpu_share import MAX_PER_GPU, memory_keys, spread
from ..runfolder import SPACE_COPY, SPEC_FILE
from ..spec import SearchSpec
from .state import Plan, Search

# NVIDIA's driver, WSL2's GPU bridge (CUDA there has no /dev/nvidia*), AMD's ROCm driver
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")


def plan(state: Search) -> None:
    """Capacity (a cluster is joined to count it) and the Plan (``auto``: with its smallest share standing in
    until the measurement stage)."""
    spec, opts = state.spec, state.options
    if opts.address is not None:
        from .session import runtime_env

        state.session.join(opts.address, runtime_env(spec))
    cpus, gpus = capacity(opts.address, opts.num_gpus, opts.dry_run)
    auto = spec.gpus_per_trial == "auto"
    if auto:
        memory_keys(spec)  # the space gives finite choices to probe, or an error now
        if gpus <= 0 and not opts.dry_run:
            raise TunekitError("gpus_per_trial='auto' sizes each trial's share of a GPU by probing its memory, and "
                               "no GPU is available: set gpus_per_trial=0 to run on CPUs")
    if opts.dry_run and (auto or spec.gpus_per_trial > 0) and gpus <= 0:
        gpus = 1.0
        state.notes.append("  note     no GPU here: planned for 1 GPU (pass --num-gpus N to plan for N)")
    capped = opts.num_gpus is not None
    # auto's smallest share stands in for the measured ones: a plan that cannot run fails before any measurement
    share = 1 / MAX_PER_GPU if auto else None
    state.plan = dataclasses.replace(make_plan(spec, state.run_dir, cpus, gpus, state.restoring, share, capped),
                                     finished=state.previous.done(opts.resume))
    lines = state.plan.lines(spec)
    if spec.trackers:
        lines += trackers(state)
    if opts.dry_run or state.plan.total_gpus > 0:
        from ..estimate import estimate

        cost = estimate(spec)  # from timm's published throughput (None: the data's size is not known yet)
        if cost is not None and cost.estimated:
            lines.append(cost.line())
    if opts.dry_run:
        from .nodes import check_local_data

        check_local_data(spec)
        if auto:
            lines.append("  note     gpus_per_trial='auto': each model's share is measured on the GPU when the search "
                         "starts")
        state.outcome = state.plan
        lines += state.notes
    for line in lines:
        state.echo(line)


def trackers(state: Search) -> list[str]:
    """The plan's lines for the trackers (resolved and checked by ``previous.check_trackers``); a dry run says
    whether they answer now, without failing."""
    from ..tracking import describe, reachability

    lines = [f"  trackers {describe(state.resolved)}"] + [f"  {n}" for n in state.tracker_notes]
    return lines + reachability(state.resolved) if state.options.dry_run else lines


def packs(plan: Plan) -> bool:
    """Whether trials can share a GPU: their fit_time then holds their neighbours' time (``unshared``)."""
    return plan.total_gpus > 0 and (plan.gpu_auto or 0 < plan.gpus_per_trial < 1)


def capacity(address: str | None, num_gpus: float | None, dry_run: bool) -> tuple[float, float]:
    """(CPUs, GPUs) the search may use: this machine's, or those of the cluster joined at ``address``;
    with ``num_gpus``, at most that many (the plan then caps the trials at once: see ``make_plan``)."""
    if address is None:
        if num_gpus is not None and dry_run:
            return float(os.cpu_count() or 1), float(num_gpus)
        local = _local_gpus(dry_run)
        if num_gpus is not None and num_gpus > local:
            raise TunekitError(f"--num-gpus {num_gpus:g}: this machine has {local} GPU(s)")
        return float(os.cpu_count() or 1), float(num_gpus if num_gpus is not None else local)
    import ray

    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0.0)
    return resources.get("CPU", 0.0), gpus if num_gpus is None else min(gpus, float(num_gpus))


def _local_gpus(dry_run: bool = False) -> int:
    """This machine's GPUs: none without a GPU driver (no torch import, seconds, to learn it); for a dry run
    (which imports no torch) as the driver lists them, else as torch counts them."""
    if sys.platform.startswith("linux") and not any(Path(p).exists() for p in GPU_DRIVER_FILES):
        return 0
    if dry_run:
        return gpus_listed()
    import torch

    return torch.cuda.device_count()


def gpus_listed() -> int:
    """The GPUs a driver lists without torch: those CUDA_VISIBLE_DEVICES names where it is set (as torch would
    see them), else NVIDIA's (/proc/driver/nvidia/gpus, else ``nvidia-smi -L``); 1 for a driver that lists none
    this way (WSL2, ROCm): a dry run plans for one (--num-gpus N for more)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and not v.strip().startswith("-")])
    listed = Path("/proc/driver/nvidia/gpus")
    if listed.is_dir():
        return len(list(listed.iterdir()))
    if shutil.which("nvidia-smi"):
        import subprocess

        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
            return sum(line.startswith("GPU ") for line in out.splitlines())
        except (OSError, subprocess.SubprocessError):
            pass
    return 1


def make_plan(spec: SearchSpec, run_dir: Path, total_cpus: float, total_gpus: float, restoring: bool,
              auto_share: float | None = None, capped: bool = False) -> Plan:
    """The plan; under gpus_per_trial='auto', ``auto_share`` (the smallest share) stands for it.
    ``capped``: the GPUs are a limit the user set (--num-gpus), which Ray's own count would not keep,
    so the plan's concurrency is passed to Ray as a limit."""
    gpus = auto_share if spec.gpus_per_trial == "auto" else spec.gpus_per_trial
    if gpus > 0 and total_gpus <= 0:
        raise TunekitError(f"gpus_per_trial={gpus:g} but no GPU is available: "
                           f"pass --num-gpus N, or --gpus-per-trial 0 to run on CPUs")
    if gpus > max(total_gpus, 0) and total_gpus > 0:
        raise TunekitError(f"gpus_per_trial={gpus:g} is more than the {total_gpus:g} GPU(s) available")
    if spec.cpus_per_trial > total_cpus:
        raise TunekitError(f"cpus_per_trial={spec.cpus_per_trial:g} is more than the {total_cpus:g} CPU(s) available")
    by_cpu = math.floor(total_cpus / spec.cpus_per_trial + 1e-9)
    by_gpu = math.floor(total_gpus / gpus + 1e-9) if gpus > 0 else by_cpu
    concurrency = max(1, min(by_cpu, by_gpu, spec.max_concurrent or by_cpu, spec.trial_count()))
    return Plan(spec.name, run_dir, spec.trial_count(), spec.total_epochs(), spec.cpus_per_trial,
                spread(gpus, total_gpus, concurrency), total_cpus, total_gpus, concurrency, spec.searcher, spec.asha,
                restoring, gpu_auto=spec.gpus_per_trial == "auto", capped=capped and gpus > 0, asked_gpus=gpus)


def save_spec(spec: SearchSpec, run_dir: Path, instance: str = "") -> None:
    """The run folder reproduces the search on its own: a copy of the space file and the resolved spec (with the
    search instance, which a resumed search keeps)."""
    if spec.path is not None and spec.path.resolve() != (run_dir / SPACE_COPY).resolve():
        shutil.copyfile(spec.path, run_dir / SPACE_COPY)
    described = {**spec.describe(), **({"instance": instance} if instance else {})}
    (run_dir / SPEC_FILE).write_text(json.dumps(described, indent=2, default=str))
