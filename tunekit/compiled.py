"""A compiled step: ``torch.compile`` of the network a run trains (its train and eval forward, and with it
the backward), whether it pays, and the compile cache the runs of a machine share.

    decision = decide("auto", key, steps=1_200)        # Decision(compile=False, why="auto: ... ")
    compile_model(model)                                # in place: state_dict keys unchanged
    ledger().record(key, compile_s=31.0, compiled_step_s=0.021)

``auto`` compiles when the run's expected train steps amortize the compile time measured for the same
network on this machine (``tunekit bench --compile`` measures eager and compiled steps and the compile;
a run with ``compile`` on or auto records its own, unless it shared its GPU): steps x (eager step -
compiled step) > compile time. Without both measurements it runs eager and says why. Inductor's cache
(``TORCHINDUCTOR_CACHE_DIR``) is set to one folder under tunekit's cache, so the trials of a machine
share it: only the first trial of a network pays the full compile; the next ones load its kernels.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .paths import MachineFile, cache_root

COMPILE_MODES = ("off", "on", "auto")


@dataclass(frozen=True)
class StepKey:
    """What a step's speed depends on: the network, its input, its precision, the device, torch."""

    model: str
    img_size: int
    batch_size: int
    precision: str
    device: str  # "cpu", or the GPU's name

    def text(self) -> str:
        return "|".join(map(str, (self.model, self.img_size, self.batch_size, self.precision, self.device,
                                  f"torch {torch.__version__}")))


def step_key(model: str, img_size: int, batch_size: int, precision: str, device: torch.device) -> StepKey:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return StepKey(model, img_size, batch_size, precision, name)


@dataclass(frozen=True)
class Decision:
    compile: bool
    why: str


def decide(mode: str, key: StepKey, steps: int, known: dict | None = None) -> Decision:
    """Whether a run of ``steps`` train steps compiles (``mode``: COMPILE_MODES); ``known``: the ledger's
    entry for ``key`` (read when not given)."""
    if mode in ("off", "on"):
        return Decision(mode == "on", mode)
    known = ledger().get(key) if known is None else known
    needed = ("compile_s", "compiled_step_s", "eager_step_s")
    if not all(isinstance(known.get(k), (int, float)) for k in needed):
        missing = [k for k in needed if k not in known]
        return Decision(False, f"auto: eager (no {', '.join(missing)} measured for this network here yet: "
                               f"tunekit bench --compile, or a run with compile=on)")
    saved = steps * (known["eager_step_s"] - known["compiled_step_s"])
    verdict = saved > known["compile_s"]
    return Decision(verdict, f"auto: {'compiled' if verdict else 'eager'} ({steps} steps would save {saved:.0f}s "
                             f"against {known['compile_s']:.0f}s to compile)")


def use_shared_cache() -> Path:
    """Point Inductor's cache at tunekit's (unless the user set one): shared by the runs of this machine."""
    folder = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "torch_compile")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` compiled in place (``nn.Module.compile``: its state_dict and methods stay as they are).
    Random ops in the graph (the fastai head's dropout) draw from torch's own generator, as eager does
    (Inductor's ``fallback_random``): a compiled run gives eager's numbers for the same seed, within float
    tolerance, instead of an equally random but different run (dropout on a head's features costs little)."""
    import torch._inductor.config as inductor

    use_shared_cache()
    inductor.fallback_random = True
    model.compile()
    return model


class Ledger:
    """Measured step and compile times per StepKey, in one file per machine (``paths.MachineFile``)."""

    def __init__(self, path: Path) -> None:
        self.file = MachineFile(path)

    def get(self, key: StepKey) -> dict:
        return self.file.get(key.text())

    def record(self, key: StepKey, **times: float) -> None:
        self.file.update(key.text(), {**{k: float(v) for k, v in times.items()}, "key": asdict(key)})


def ledger() -> Ledger:
    return Ledger(cache_root() / "torch_compile" / "steps.json")
