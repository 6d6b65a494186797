"""What a search will do, worked out before anything starts: capacity, trial slots, resume, the plan.

    plan = make_plan(spec, run_dir, total_cpus=16, total_gpus=4, restoring=False)
    print("\n".join(plan.lines(spec)))          # what --dry-run prints
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runfolder
from ..errors import TunekitError
from ..gpu_share import MemoryKey, Share, memory_keys, probe_shares, spread
from ..prescreen import load_screen
from ..runfolder import SPACE_COPY, SPEC_FILE
from ..spec import SearchSpec

# NVIDIA's driver, WSL2's GPU bridge (CUDA there has no /dev/nvidia*), AMD's ROCm driver
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")

DEFAULT_STORAGE = "~/ray_results"


@dataclass
class Plan:
    """What a search will do, computed without starting anything (``--dry-run`` prints it)."""

    name: str
    path: Path
    trials: int
    max_epochs: int
    cpus_per_trial: float
    gpus_per_trial: float
    total_cpus: float
    total_gpus: float
    concurrency: int
    searcher: str
    asha: dict[str, int] | None
    resume: bool

    gpu_auto: bool = False
    finished: bool = False  # the run folder holds this search, finished
    capped: bool = False  # Ray runs at most ``concurrency`` trials at once (--num-gpus below what Ray counts)
    asked_gpus: float | None = None  # the share asked for, before it was spread over the GPUs

    @property
    def max_concurrent(self) -> int | None:
        """The limit on trials at once to hand to Ray: the plan's, where Ray would not keep to it."""
        return self.concurrency if self.capped else None

    @property
    def gpu_text(self) -> str:
        if self.gpu_auto:
            return f"auto GPU share (at least {_fraction(self.gpus_per_trial)})"
        spread = (f" (raised from {_fraction(self.asked_gpus)}: Ray would pack the trials that run at once onto the "
                  f"first GPUs)" if self.asked_gpus is not None and self.asked_gpus != self.gpus_per_trial else "")
        return f"{_fraction(self.gpus_per_trial)} GPU{spread}"

    @property
    def epoch_budget(self) -> int:
        return self.trials * self.max_epochs

    def lines(self, spec: SearchSpec) -> list[str]:
        asha = (f"ASHA on epochs (grace {self.asha['grace_period']}, reduction {self.asha['reduction_factor']}, "
                f"max {self.max_epochs})" if self.asha else "no early stopping")
        return [
            f"search {self.name!r} -> {self.path}"
            + (" (already finished)" if self.finished else " (resuming)" if self.resume else ""),
            f"  space    {spec.path or '-'}: {self.trials} trial(s), searcher {self.searcher}, {asha}",
            f"  data     {spec.data}",
            f"  metric   {spec.metric} ({spec.mode})",
            f"  per trial {self.cpus_per_trial:g} CPU, {self.gpu_text}; "
            f"up to {self.concurrency} at once on {self.total_cpus:g} CPU / {self.total_gpus:g} GPU",
            f"  budget   at most {self.epoch_budget} epochs ({self.trials} x {self.max_epochs})",
        ]


def runtime_env(spec: SearchSpec) -> dict[str, Any] | None:
    """What Ray ships to every worker of a search: the files of the space's ``imports`` (a user's models)."""
    from ..spec import module_files

    return {"py_modules": module_files(spec.imports)} if spec.imports else None


def check_runtime_env(spec: SearchSpec) -> None:
    """A Ray the caller started must already ship the space's ``imports`` (tunekit's own ray.init does)."""
    import ray

    if spec.imports and ray.is_initialized() and not ray.get_runtime_context().runtime_env.get("py_modules"):
        raise TunekitError(f"imports {spec.imports}: Ray was started before the search, without them, so its trials "
                           f"could not import them: start it with ray.init(runtime_env={runtime_env(spec)!r}), "
                           f"or let the search start Ray")


def capacity(address: str | None, num_gpus: float | None, dry_run: bool, verbose: bool,
             env: dict[str, Any] | None = None) -> tuple[float, float]:
    """(CPUs, GPUs) the search may use: this machine's, or the cluster's at ``address`` (joined); with
    ``num_gpus``, at most that many (the plan then caps the trials at once: see ``make_plan``)."""
    if address is None:
        if num_gpus is not None and num_gpus > _local_gpus() and not dry_run:
            raise TunekitError(f"--num-gpus {num_gpus:g}: this machine has {_local_gpus()} GPU(s)")
        return float(os.cpu_count() or 1), float(num_gpus if num_gpus is not None else _local_gpus())
    check_address(address)
    import ray

    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=verbose, logging_level="INFO" if verbose else "WARNING",
                     runtime_env=env)
        except (ConnectionError, RuntimeError) as e:  # no cluster there, or none running on this machine
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TunekitError(f"--address {address}: no Ray cluster to join ({first[:160]}); start one with "
                               f"'ray start --head' (on this machine, for --address auto) or leave --address out "
                               f"for a local run") from None
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0.0)
    return resources.get("CPU", 0.0), gpus if num_gpus is None else min(gpus, float(num_gpus))


def cli_overrides(overrides: dict[str, Any] | None, **options: Any) -> dict[str, Any]:
    out = dict(overrides or {})
    out.update({k: v for k, v in options.items() if v is not None})
    return out


def _local_gpus() -> int:
    if sys.platform.startswith("linux") and not any(Path(p).exists() for p in GPU_DRIVER_FILES):
        return 0  # no GPU driver: nothing torch could use, and no torch import (seconds) to learn it
    import torch

    return torch.cuda.device_count()


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail within seconds when a cluster address does not answer (instead of Ray's long retry)."""
    if address == "auto":
        return
    host, _, port = address.replace("ray://", "").rpartition(":")
    try:
        socket.create_connection((host or address, int(port or 6379)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise TunekitError(f"--address {address}: no Ray cluster answers there ({e}); start one with "
                           f"'ray start --head' or leave --address out for a local run") from None


@dataclass
class Previous:
    """What a run folder already holds for a search of this name."""

    path: Path
    exists: bool  # a search Ray can continue
    same_space: bool = True
    finished: bool = False  # every trial of the space ended (completed, stopped, errored)
    trials: int = 0
    errored: int = 0  # trials that failed (--resume retries them)
    when: str = ""  # when its state was last saved

    def refusal(self) -> str:
        return (f"{self.path} holds a search made from a different space; use another --name, or --restart to "
                f"move that folder aside and start over")

    def finished_lines(self) -> list[str]:
        errored = f", {self.errored} errored (--resume retries them)" if self.errored else ""
        return [f"search {self.path.name!r} already finished on {self.when}: {self.trials} trial(s){errored}; "
                f"results in {self.path}",
                f"to search again: --name NEW, or --restart (moves {self.path.name} aside to "
                f"{self.path.name}.old-DATE and starts over)"]


def previous_search(spec: SearchSpec, run_dir: Path, resume: bool) -> Previous:
    """What ``run_dir`` holds: nothing, a search of another space, an unfinished or a finished one."""
    from ray import tune

    if not (run_dir.is_dir() and tune.Tuner.can_restore(str(run_dir))):
        if resume:
            raise TunekitError(f"--resume: there is no search named {spec.name!r} in {run_dir.parent}")
        return Previous(run_dir, exists=False)
    saved = runfolder.read_json(run_dir / SPEC_FILE) or {}
    same = "fingerprint" not in saved or saved["fingerprint"] == spec.fingerprint()
    states = runfolder.ray_states(run_dir)
    screen = load_screen(run_dir) if spec.prescreen else None  # a pre-screened search runs the kept models only
    expected = (spec.with_models(screen.kept) if screen else spec).trial_count()
    finished = len(states) >= expected and all(s in ("TERMINATED", "ERROR") for s in states.values())
    state_files = sorted(run_dir.glob(runfolder.EXPERIMENT_STATE_GLOB), key=lambda f: f.stat().st_mtime)
    when = (time.strftime("%Y-%m-%d %H:%M", time.localtime(state_files[-1].stat().st_mtime))
            if state_files else "?")
    errored = sum(s == "ERROR" for s in states.values())
    return Previous(run_dir, exists=True, same_space=same, finished=finished, trials=len(states), errored=errored,
                    when=when)


def move_aside(run_dir: Path) -> Path:
    """Move an old run folder out of the way (``NAME.old-YYYYmmdd-HHMMSS``) so a search starts over."""
    target = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(target)
    return target


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


def auto_shares_here(spec: SearchSpec, echo: Callable[[str], None]) -> dict[MemoryKey, Share] | None:
    """For a dry run: probe on this machine's GPU (None without one)."""
    import torch

    from ..device import resolve_device

    if not torch.cuda.is_available():
        return None
    return probe_shares(memory_keys(spec), resolve_device("cuda"), echo)[0]


def smallest_share(shares: dict[MemoryKey, Share] | None) -> float:
    return min((s.gpus for s in shares.values()), default=1.0) if shares else 1.0


def share_lines(shares: dict[MemoryKey, Share]) -> list[str]:
    return [f"  gpu share {key}: ran out of memory on a whole GPU -> 1 GPU (its trials will likely fail: lower "
            f"batch_size or img_size)" if share.out_of_memory else
            f"  gpu share {key}: peak {share.peak_gib:.2f} GiB, room for {share.need_gib:.2f} GiB -> "
            f"{_fraction(share.gpus)} GPU" for key, share in shares.items()]


def _fraction(share: float) -> str:
    """1, 1/3, 0.4: a share as a user reads it."""
    if share <= 0 or share >= 1:
        return f"{share:g}"
    k = round(1 / share)
    return f"1/{k}" if abs(1 / k - share) < 1e-9 else f"{share:g}"


def save_spec(spec: SearchSpec, run_dir: Path) -> None:
    """The run folder reproduces the search on its own: a copy of the space file and the resolved spec."""
    if spec.path is not None and spec.path.resolve() != (run_dir / SPACE_COPY).resolve():
        shutil.copyfile(spec.path, run_dir / SPACE_COPY)
    (run_dir / SPEC_FILE).write_text(json.dumps(spec.describe(), indent=2, default=str))
