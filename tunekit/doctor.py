"""`tunekit doctor`: can this machine (or this Ray cluster) run a search? One screen, first thing to run.

    checks = diagnose(address=None)        # Python, packages, GPUs, data root, offline weights
    print("\n".join(c.line() for c in checks)); ok = not any(c.status == FAIL for c in checks)

Each check is a line with a status: ``ok``, ``note`` (worth knowing, not a problem) or ``FAIL`` (a
search cannot run, and why). GPUs are read with torch in this process, which exits afterwards; a
cluster (``address``) is joined to list its nodes and their resources.
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

OK, NOTE, FAIL = "ok", "note", "FAIL"
# What the suite and benchmarks/gpu_check.py last ran on (benchmarks/RESULTS.md): older or newer releases
# within the requirements should work, and are shown as such.
TESTED = {"python": "3.11, 3.12", "torch": "2.11 (CUDA), 2.13 (CPU)", "timm": "1.0.29 to 1.0.31", "ray": "2.60"}
CORE = ("torch", "torchvision", "timm", "ray", "optuna", "pandas", "tensorboard", "click", "plotly")
MIN_FREE_GIB = 5.0  # the data root: decode-once caches of a study-sized dataset take a few GiB


@dataclass
class Check:
    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status:>4s}  {self.name:12s} {self.detail}"


def diagnose(address: str | None = None) -> list[Check]:
    checks = [python_check(), *package_checks()]
    if not any(c.status == FAIL and c.name in ("torch", "timm") for c in checks):
        checks += gpu_checks()
    checks += [data_root_check(), weights_check()]
    if address is not None:
        checks += cluster_checks(address)
    return checks


def python_check() -> Check:
    version = platform.python_version()
    ok = sys.version_info >= (3, 10)
    why = "" if ok else ": needs 3.10 or later"
    return Check("python", OK if ok else FAIL, f"{version} ({sys.executable}); tested with {TESTED['python']}{why}")


def package_checks() -> list[Check]:
    """Each required package: installed or not, and within tunekit's requirements or not."""
    from packaging.requirements import Requirement

    wanted = {}
    for text in metadata.requires("tunekit") or []:
        req = Requirement(text)
        if req.marker is None:
            wanted[req.name.lower()] = req
    out = []
    for name in CORE:
        req = wanted.get(name)
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(Check(name, FAIL, f"not installed (pip install -e . installs it{f': {req}' if req else ''})"))
            continue
        tested = f"; tested with {TESTED[name]}" if name in TESTED else ""
        if req is not None and req.specifier and not req.specifier.contains(version, prereleases=True):
            out.append(Check(name, FAIL, f"{version}, but tunekit needs {req}{tested}"))
            continue
        extra = ""
        if name == "torch":
            import torch

            extra = f", CUDA {torch.version.cuda} build" if torch.version.cuda else ", CPU build (no CUDA)"
        out.append(Check(name, OK, f"{version}{extra}{tested}"))
    return out


def gpu_checks() -> list[Check]:
    """Every GPU torch sees: name, memory, compute capability and the precision ``auto`` picks there."""
    import torch

    from .device import pick_precision

    if not torch.cuda.is_available():
        driver = any(Path(p).exists() for p in ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg"))
        if driver and not torch.version.cuda:
            return [Check("gpu", FAIL, "an NVIDIA driver is here, but torch is a CPU build: install a CUDA build "
                                       "of torch to train on the GPU")]
        return [Check("gpu", NOTE, "none: searches run on the CPU (gpus_per_trial = 0), slowly for real models")]
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        capability = (props.major, props.minor)
        precision = pick_precision("cuda", capability)
        out.append(Check(f"cuda:{i}", OK, f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute "
                                          f"{props.major}.{props.minor}: precision auto -> {precision}"
                         + ("" if precision == "bf16" else " (no native bf16: fp16 with a GradScaler)")))
    return out


def data_root_check() -> Check:
    from .paths import data_root

    root = data_root()
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 2**30
    writable = _writable(probe)
    status = OK if writable and free >= MIN_FREE_GIB else FAIL if not writable else NOTE
    why = "" if writable else ": not writable (set TUNEKIT_DATA to a folder you can write)"
    low = f" (under {MIN_FREE_GIB:g} GiB: decode-once caches may not fit)" if free < MIN_FREE_GIB else ""
    return Check("data root", status, f"{root}: {free:.0f} GiB free{low}{why}")


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)


def weights_check() -> Check:
    """Pretrained weights a search can use offline: timm models in the Hugging Face cache, weight packages."""
    from .weights import PACKAGES, hub_cache, packaged_file

    cache = hub_cache()
    found = cache.glob("models--timm--*") if cache.is_dir() else []
    cached = sorted(p.name.removeprefix("models--timm--") for p in found)
    packaged = [name for name in PACKAGES if packaged_file(name) is not None]
    shown = ", ".join(cached[:6]) + (f" and {len(cached) - 6} more" if len(cached) > 6 else "")
    parts = [f"{len(cached)} timm model(s) in {cache}" + (f" ({shown})" if cached else "")]
    if packaged:
        parts.append(f"weight packages: {', '.join(packaged)}")
    return Check("weights", OK if cached or packaged else NOTE,
                 "; ".join(parts) + ("" if cached or packaged else
                                     " (offline, pretrained models need them: tunekit weights import, or a package)"))


def cluster_checks(address: str) -> list[Check]:
    """Join the cluster at ``address``: its nodes, their CPUs, GPUs and GPU types; the total."""
    from .tuner.nodes import cluster_nodes

    try:
        nodes, total = cluster_nodes(address)
    except Exception as e:  # noqa: BLE001 - any failure to join is the answer to "can it run a search"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return [Check("cluster", FAIL, f"{address}: cannot join ({first[:200]})")]
    out = [Check("cluster", OK if total.get("CPU", 0) > 0 else FAIL,
                 f"{address}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"
                 + ("" if total.get("CPU", 0) > 0 else ": no CPU for trials"))]
    for node in nodes:
        res = node.get("Resources", {})
        kinds = [k.removeprefix("accelerator_type:") for k in res if k.startswith("accelerator_type:")]
        out.append(Check("  node", OK, f"{node.get('NodeManagerAddress', '?')}: {res.get('CPU', 0):g} CPU, "
                                       f"{res.get('GPU', 0):g} GPU{f' ({kinds[0]})' if kinds else ''}, "
                                       f"{res.get('memory', 0) / 2**30:.0f} GiB memory"))
    return out
