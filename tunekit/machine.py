"""What a step's speed and memory depend on (``StepKey``: the one key of every measurement tunekit makes), and
each machine's book of them (``Book``: one file per machine, through ``paths.MachineFile``). A contract module:
no torch (the machine's identity, which needs it, is ``device.machine_id``).

    key = StepKey("resnet18", batch_size=64, img_size=224, precision="bf16", compile=True, frozen=False)
    book = Book("NVIDIA H200 x1, torch 2.13.0")
    book.record(key, by="stage", train_s=0.0011, compile_s=31.0, cache="cold")
    book.times(key)      # the times a run of key's network needs: train_s, frozen_s, eval_s, its compiles

Per key, a book holds what was measured of it: ``peak_gib`` (the GPU memory probe, ``gpu_share``; eager unfrozen
keys), ``train_s`` (seconds per image of a steady train step), ``eval_s`` (of validation, on unfrozen keys),
and for compiled keys ``compile_s`` and ``compile_eval_s`` (the compiles of that key's train step and eval: for a
frozen key a fine-tune's first, for an unfrozen one the full graph's, which a run that starts frozen pays again
at the unfreeze: Dynamo guards on requires_grad), ``cache`` (``cold``: Inductor compiled it; ``warm``: loaded from the
machine's kernel cache) and ``compile_cold_s`` (the cold compile, where it was measured too). Each value is
the latest measurement of it; ``by`` says which measured it last (``stage``, ``run``, ``bench``). Runs and
``tunekit bench`` record under names of their own (``run_train_s``, ``run_compile_s``; ``bench_train_s``,
``bench_compile_s``), beside the stage's, which ``compile = "auto"`` decides by: eager and compiled steps
measured by one process, one way.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .paths import MachineFile, cache_root


@dataclass(frozen=True)
class StepKey:
    """A network's step on one machine: what its speed and memory depend on (the pooling and head are
    negligible beside the body). ``precision`` is resolved (fp32, bf16, fp16) in what a machine records; the
    plan's keys may say ``auto`` (what the space asks), which the measuring process resolves on its device."""

    model: str
    batch_size: int
    img_size: int
    precision: str
    compile: bool = False
    frozen: bool = False

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def __str__(self) -> str:
        return (f"{self.model} b{self.batch_size} {self.img_size}px {self.precision}"
                + (" compiled" if self.compile else "") + (" frozen" if self.frozen else ""))


def machines_folder() -> Path:
    return cache_root() / "machines"


class Book:
    """One machine's measurements (``machine``: ``device.machine_id``), in ``machines_folder()/<machine>.json``.
    Machines that share a home directory keep one file each; identical machines share one."""

    def __init__(self, machine: str, folder: Path | None = None) -> None:
        self.machine = machine
        slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", machine).strip("_") or "machine"
        self.file = MachineFile((folder or machines_folder()) / f"{slug}.json")

    @property
    def path(self) -> Path:
        return self.file.path

    def get(self, key: StepKey) -> dict:
        return self.file.get(key.text())

    def record(self, key: StepKey, by: str, **values: float | str) -> None:
        """``values`` measured of ``key`` (by the measurement ``stage``, a ``run`` or ``bench``), added at once."""
        self.file.update(key.text(), {**{k: v if isinstance(v, str) else float(v) for k, v in values.items()},
                                      "by": by, "machine": self.machine})

    def times(self, key: StepKey) -> dict:
        """What a run of ``key``'s network (its ``compile`` as given, ``frozen`` ignored) is timed by:
        ``train_s``, ``eval_s`` (unfrozen), ``frozen_s`` (the frozen body's train step), and compiled:
        ``compile_s`` and ``compile_eval_s`` (the unfrozen train and eval graphs' compiles), ``compile_frozen_s``
        and ``compile_frozen_eval_s`` (the frozen body's), ``cache``. Only what was measured."""
        unfrozen, frozen = self.get(replace(key, frozen=False)), self.get(replace(key, frozen=True))
        out = {k: unfrozen[k] for k in ("train_s", "eval_s", "compile_s", "compile_eval_s", "compile_cold_s",
                                         "cache") if k in unfrozen}
        if "train_s" in frozen:
            out["frozen_s"] = frozen["train_s"]
        for name in ("compile_s", "compile_eval_s"):
            if name in frozen:
                out[name.replace("compile_", "compile_frozen_")] = frozen[name]
        return out
