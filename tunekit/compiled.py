"""A compiled step: ``torch.compile`` of the network a run trains (its train and eval forward, and with it
the backward), whether it pays (``compile = "auto"``), and the compile cache the runs of a machine share.

    work = Work.of(n_train=4_000, n_valid=1_000, batch_size=64, frozen_epochs=1, total_epochs=6,
                   rungs=[1, 3], reduction_factor=3)     # ASHA: 2.0 epochs expected, 1/3 of runs unfreeze
    decision = decide("auto", work, eager=book.times(key), compiled=book.times(compiled_key))
    compile_model(model)                                # in place: state_dict keys unchanged

``auto`` compiles when the work a run is expected to do pays for every compile it would pay: its train images
(frozen and not) and validation images x (eager - compiled seconds per image) > the compiles (the frozen
body's train and eval graphs, and both again at the unfreeze, where requires_grad changes, which Dynamo
guards on; a partial last validation batch is padded, so it compiles nothing). The expected epochs come from
the scheduler: under ASHA most trials stop at the first rung (``expected_epochs``). The times are the
machine's (``machine.Book``), measured by the search's measurement stage (``measure``: the trials' backend
settings, frozen and unfrozen steps apart, the compile cold and then warm, as a trial after it finds the
kernel cache) and by ``tunekit bench --compile``; a run with its device alone records its own beside them.
Inductor's cache (``TORCHINDUCTOR_CACHE_DIR``) is one folder under tunekit's cache, so the trials of a machine
share it: the stage pays the cold compile, the trials load its kernels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .paths import cache_root

if TYPE_CHECKING:
    import torch

COMPILE_MODES = ("off", "on", "auto")


@dataclass(frozen=True)
class Decision:
    compile: bool
    why: str


@dataclass(frozen=True)
class Work:
    """What a run is expected to do from where it starts, in images: train images with the body frozen and
    not, validation images; the expected epochs they come from (of ``total_epochs``), whether its first epoch
    is frozen, and the chance it reaches an unfrozen epoch (under ASHA, a run stopped at a rung inside its
    frozen epochs never unfreezes, nor pays the compiles the unfreeze brings)."""

    frozen_images: float
    train_images: float
    eval_images: float
    batch_size: int
    epochs: float
    total_epochs: int
    starts_frozen: bool = False
    reach_unfrozen: float = 1.0

    @classmethod
    def of(cls, n_train: int, n_valid: int, batch_size: int, frozen_epochs: int, total_epochs: int,
           rungs: list[int] = (), reduction_factor: float = 1.0, start: int = 0) -> Work:
        """``n_train`` images per train epoch (full batches), ``n_valid`` per validation pass, the first
        ``frozen_epochs`` of ``total_epochs`` frozen, under ASHA's ``rungs`` (none: every epoch runs), for a run
        that starts after epoch ``start`` (a resumed or promoted trial)."""
        expected = expected_epochs(total_epochs, rungs, reduction_factor, start)
        frozen_end = min(frozen_epochs, total_epochs)
        frozen = expected_epochs(frozen_end, rungs, reduction_factor, start) if start < frozen_end else 0.0
        reach = reduction_factor ** -sum(start < r <= frozen_end for r in rungs if r < total_epochs) \
            if start < frozen_end < total_epochs else float(frozen_end < total_epochs)
        return cls(n_train * frozen, n_train * (expected - frozen), n_valid * expected, batch_size, expected,
                   total_epochs - start, start < frozen_end, reach if start < frozen_end else 1.0)

    def epochs_text(self) -> str:
        if self.epochs < self.total_epochs - 1e-9:
            return f"{self.epochs:.3g} of {self.total_epochs} epochs expected under ASHA"
        return f"{self.total_epochs} epoch(s)"


def expected_epochs(total: int, rungs: list[int], reduction_factor: float, start: int = 0) -> float:
    """The epochs a trial of ``total`` is expected to train after epoch ``start`` under ASHA: it trains to the
    next rung, and the top ``1/reduction_factor`` of those at a rung go on to the next (the paper's rule, with
    many trials), and from the top rung to ``total``. No rungs (no ASHA): ``total - start``."""
    expected, reach, last = 0.0, 1.0, start
    for rung in sorted(r for r in rungs if start < r < total):
        expected += reach * (rung - last)
        reach, last = reach / reduction_factor, rung
    return expected + reach * (total - last)


def compile_costs(work: Work) -> dict[str, float]:
    """The compiles a run of ``work`` pays (``machine.Book.times``' names), each weighted by the chance it pays
    it: a run that starts frozen pays the frozen body's train and eval graphs, and those of the full network
    at the unfreeze if it gets there."""
    frozen = {"compile_frozen_s": 1.0, "compile_frozen_eval_s": 1.0} if work.starts_frozen else {}
    unfrozen = {"compile_s": work.reach_unfrozen, "compile_eval_s": work.reach_unfrozen} \
        if work.reach_unfrozen > 0 else {}
    return {**frozen, **unfrozen}


def step_names(work: Work) -> tuple[str, ...]:
    """The step times (seconds per image) ``work`` is done at."""
    return (("frozen_s",) if work.frozen_images else ()) + (("train_s",) if work.train_images else ()) + \
        (("eval_s",) if work.eval_images else ())


def seconds(work: Work, times: dict) -> float:
    """``work``'s seconds at ``times``' speeds (seconds per image), its compiles left out."""
    return (work.frozen_images * times.get("frozen_s", 0.0) + work.train_images * times.get("train_s", 0.0)
            + work.eval_images * times.get("eval_s", 0.0))


def decide(mode: str, work: Work, eager: dict, compiled: dict) -> Decision:
    """Whether a run of ``work`` compiles (``mode``: COMPILE_MODES); ``eager`` and ``compiled``: this
    machine's times of the run's network (``machine.Book.times``), seconds per image and of each compile."""
    if mode in ("off", "on"):
        return Decision(mode == "on", mode)
    missing = [f"eager {k}" for k in step_names(work) if k not in eager] + \
        [f"compiled {k}" for k in (*step_names(work), *compile_costs(work)) if k not in compiled]
    if missing:
        return Decision(False, f"auto: eager (not measured on this machine yet: {', '.join(missing)}; a search's "
                               f"measurement stage measures them)")
    saved = seconds(work, eager) - seconds(work, compiled)
    cost = sum(compiled[k] * share for k, share in compile_costs(work).items())
    verdict = saved > cost
    steps = (work.frozen_images + work.train_images) / work.batch_size
    return Decision(verdict, f"auto: {'compiled' if verdict else 'eager'} ({work.epochs_text()}, {steps:,.0f} train "
                             f"steps: compiled would save {saved:.1f}s against {cost:.1f}s of compiles, "
                             f"{compiled.get('cache', 'cold')} cache)")


def cache_misses() -> int:
    """Inductor's kernel-cache misses in this process so far: a compile that adds none loaded its kernels
    from the machine's cache (warm), which this points at tunekit's first."""
    use_shared_cache()
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["fxgraph_cache_miss"])


def use_shared_cache() -> Path:
    """Point Inductor's cache at tunekit's (unless the user set one): shared by the runs of this machine. The
    first use of Dynamo (timm's models touch it) sets torch's own default where none is set
    (``/tmp/torchinductor_<user>``), which is not the user's choice: it is replaced too."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or current == default_cache_dir():
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = current = str(cache_root() / "torch_compile")
    folder = Path(current)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` compiled in place (``nn.Module.compile``: its state_dict and methods stay as they are).
    Random ops in the graph (the fastai head's dropout) draw from torch's own generator, as eager does
    (Inductor's ``fallback_random``): a compiled run gives eager's numbers for the same seed, within float
    tolerance, instead of an equally random but different run (dropout on a head's features costs little).
    Dynamo starts afresh (``torch._dynamo.reset``): a worker Ray reuses for the next trial still holds the last
    trial's compiled frames, and past Dynamo's recompile limit the new trial's model would run eager."""
    import torch._dynamo
    import torch._inductor.config as inductor

    use_shared_cache()
    inductor.fallback_random = True
    torch._dynamo.reset()
    model.compile()
    return model
