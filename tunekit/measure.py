"""The measurement stage's machine side: what a search's plan needs measured, measured on this machine in one
process, the way its trials run (``tuner.measure`` is the stage; on a cluster a Ray task on a GPU node runs
the same function).

    needs = Needs(keys, memory=True, alone=True, device="cuda")
    found = measure_apart(needs, echo)       # a spawned process that exits: its GPU memory back before the trials
    found.peaks[key], found.times[key.text()], found.machine

Per key (``machine.StepKey``), with the trials' backend settings (``device.trial_backend``: cuDNN's autotuner
on), their precision (resolved on this device), channels layout, thread count and, compiled, their compile:

  memory    the peak GPU memory of the unfrozen train step (``gpu_share``: the ``auto`` share)
  alone     seconds per image of the eager train step, frozen and not, and of validation (``unshared``:
            a packed trial's fit_time_unshared)
  compiled  the same for eager and compiled steps, and the compiles a run pays: the frozen train and eval
            graphs', and at the unfreeze both again (Dynamo guards on requires_grad); timed cold (Inductor
            compiles) and then warm (the kernels loaded from the machine's cache, as every trial after the stage
            finds them): the warm ones are what ``compile = "auto"`` weighs (``compiled.decide``)

Each measurement goes to the machine's book (``machine.Book``) as it is made: a search of the same networks on
this machine measures nothing again. One key whose train step runs out of memory on a whole GPU is reported
(its trials get a whole GPU) and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from .gpu_share import gpu_cards, smallest_card
from .machine import Book, StepKey

if TYPE_CHECKING:
    import torch

STEPS = 20  # timed steps of each kind, after WARMUP (the first of which holds a compile)
WARMUP = 3


@dataclass(frozen=True)
class Needs:
    """What a search's plan needs measured of its ``keys`` (as the space gives them: compile False, frozen
    False, the precision as asked), on ``device`` ("cuda": this machine's GPU; "cpu") with ``threads``."""

    keys: tuple[StepKey, ...]
    memory: bool = False
    alone: bool = False
    compiled: bool = False
    frozen: bool = True  # some trials start with the body frozen (pretrained): their frozen steps too
    device: str = "cuda"
    threads: int | None = None
    size_on_gib: float | None = None  # memory: shares sized for a GPU of this size (a cluster's smallest card)
    head: tuple[str, str, int] = ("concat", "fastai", 6)  # the trials' pool, head and classes: their graph

    def __bool__(self) -> bool:
        return bool(self.keys) and (self.memory or self.alone or self.compiled)

    def what(self) -> str:
        parts = (["GPU memory"] if self.memory else []) + (["steps alone"] if self.alone else []) + \
            (["eager and compiled steps, compiles"] if self.compiled else [])
        return ", ".join(parts)


@dataclass
class Found:
    """What the stage found: the machine, each key's peak (GiB; None: out of memory on a whole GPU), the
    memory shares are sized for and the cards, each measured network's times (``machine.Book.times``, by the
    resolved key's text, compile False and True), a line per key of where its numbers came from, the backend
    settings it measured with (``device.backend_flags``), and the keys (as asked) whose compile was cold here
    (timed again by a second process: :func:`measure_apart`)."""

    machine: str
    peaks: dict[StepKey, float | None] = field(default_factory=dict)
    total_gib: float = 0.0
    cards: list[tuple[str, float]] = field(default_factory=list)
    times: dict[str, dict] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    flags: dict = field(default_factory=dict)
    cold: list[StepKey] = field(default_factory=list)


def measure_apart(needs: Needs, echo: Callable[[str], None] = print) -> Found:
    """:func:`measure_here` in a fresh process that exits after it (``device.in_own_process``): the search's
    driver keeps no CUDA context, GPU memory or compiled state through the trials. Where a compile was cold,
    a second fresh process times it again: warm, as a trial's own process finds the machine's kernel cache."""
    from .device import in_own_process

    echo(f"measuring {needs.what()} of {len(needs.keys)} network(s) on this machine's {needs.device.upper()}, "
         f"in a process of its own")
    found = in_own_process(measure_here, needs)
    for line in found.lines:
        echo(line)
    if found.cold:
        echo(f"  {len(found.cold)} cold compile(s): timed again, in a fresh process (as a trial finds the kernels)")
        warm = in_own_process(measure_here, replace(needs, keys=tuple(found.cold), memory=False, alone=False))
        found.times.update(warm.times)
        for line in warm.lines:
            echo(line)
    return found


def measure_here(needs: Needs, timer: Callable[..., tuple[dict, str | None]] | None = None) -> Found:
    """Every measurement ``needs`` asks for that this machine's book lacks, on this process's ``needs.device``
    (under Ray: the GPU it was given); ``timer``: :func:`time_network` (tests give one that needs no GPU)."""
    import torch

    from .device import backend_flags, machine_id, resolve_device, resolve_precision, trial_backend

    device = resolve_device(needs.device)
    trial_backend(device)
    if needs.threads:
        torch.set_num_threads(needs.threads)
    book = Book(machine_id(device))
    found = Found(book.machine, flags=backend_flags())
    if needs.memory:
        found.cards = gpu_cards()
        found.total_gib = needs.size_on_gib or (smallest_card(found.cards)[1] if found.cards else
                                                torch.cuda.get_device_properties(device).total_memory / 2**30)
    timer = timer or partial(time_network, head=needs.head)
    for key in needs.keys:
        run = replace(key, precision=resolve_precision(key.precision, device), compile=False, frozen=False)
        try:
            said = _measure_eager(book, run, device, needs, timer)
        except torch.OutOfMemoryError:
            found.peaks[key] = None
            found.lines.append(f"  warning: {key} ran out of memory on a whole GPU: its trials get a whole GPU and "
                               f"will likely fail; lower its batch_size or img_size")
            continue
        finally:
            _free(device)
        if needs.compiled:
            try:
                compiled_said, cold = _measure_compiled(book, replace(run, compile=True), device, needs, timer)
                said += compiled_said
                if cold:
                    found.cold.append(key)
            except Exception as e:  # noqa: BLE001 - a compiler that fails here fails in the trials: auto stays eager
                first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                said += f"; compiling failed ({type(e).__name__}: {first}): compile='auto' runs it eager"
            finally:
                _free(device)
        if needs.memory:
            found.peaks[key] = book.get(run)["peak_gib"]
        for compiled in (False, True) if needs.compiled else (False,):
            found.times[replace(run, compile=compiled).text()] = book.times(replace(run, compile=compiled))
        found.lines.append(f"  {run}: {said}")
    return found


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def _steps(needs: Needs) -> set[str]:
    return {"train_s", "eval_s"} | ({"frozen_s"} if needs.frozen else set())


def _measure_eager(book: Book, run: StepKey, device: torch.device, needs: Needs, timer: Callable) -> str:
    """The eager steps (and peak memory) ``needs`` asks of ``run``'s network that its book lacks; what was done."""
    if (needs.memory and "peak_gib" not in book.get(run)) or \
            ((needs.alone or needs.compiled) and not _steps(needs) <= set(book.times(run))):
        _record(book, timer(run, device, frozen=needs.frozen)[0])
        return "eager steps measured"
    return "eager steps known (this machine's book)"


def _measure_compiled(book: Book, run: StepKey, device: torch.device, needs: Needs,
                      timer: Callable) -> tuple[str, bool]:
    """The compiled steps and compiles of ``run`` (compiled), unless the book has them warm; what was done,
    and whether the compile was cold (recorded as such, with ``compile_cold_s``: all its graphs)."""
    compiles = {"compile_s", "compile_eval_s"} | ({"compile_frozen_s", "compile_frozen_eval_s"} if needs.frozen
                                                  else set())
    known = book.times(run)
    if _steps(needs) | compiles <= set(known) and known.get("cache") == "warm":
        return "; compiled steps and compiles known (warm)", False
    timed, cache = timer(run, device, frozen=needs.frozen)
    for values in timed.values():
        values["cache"] = cache
    if cache == "cold":
        timed[run]["compile_cold_s"] = sum(v.get("compile_s", 0.0) + v.get("compile_eval_s", 0.0)
                                           for v in timed.values())
    _record(book, timed)
    return f"; compiled steps and compiles measured ({cache} cache)", cache == "cold"


def _record(book: Book, timed: dict) -> None:
    for key, values in timed.items():
        book.record(key, by="stage", **values)


def time_network(key: StepKey, device: torch.device, frozen: bool = True, steps: int = STEPS, warmup: int = WARMUP,
                 head: tuple[str, str, int] = ("concat", "fastai", 6)) -> tuple[dict[StepKey, dict], str | None]:
    """One model of ``key``'s network (``key.compile``: compiled), stepped as a fine-tune runs: the train step
    and validation's forward pass with the body frozen (``frozen``: trials that start frozen), then both
    unfrozen (the train step's peak memory: the share's); ``head``: the trials' (pool, head, classes), so that a
    compiled graph is theirs (a compile of another head is another graph: cold for its first trial).
    ({frozen key: {train_s[, compile_s, compile_eval_s]}, unfrozen key: {train_s, eval_s, peak_gib[, compile_s,
    compile_eval_s]}},
    cache) in seconds per image; a compiled key's first step of each kind, beyond a steady one, is a compile,
    and ``cache`` is "cold" where Inductor compiled, "warm" where it loaded the machine's kernels (eager: None)."""
    from .compiled import cache_misses
    from .device import RandomSteps, peak_memory_gib, reset_peak_memory

    pool, head_kind, n_classes = head
    stepper = RandomSteps(key.model, device, key.batch_size, key.img_size, key.precision, n_classes=n_classes,
                          compiled=key.compile, pool=pool, head=head_kind)
    misses = cache_misses() if key.compile else 0
    b, out = key.batch_size, {}
    if frozen:  # an unfreeze changes requires_grad, which Dynamo guards on: the eval graph compiles again too
        first, step_s = stepper.time(frozen=True, warmup=warmup, steps=steps)
        eval_first, eval_s = stepper.time(train=False, warmup=warmup, steps=steps)
        out[replace(key, frozen=True)] = {"train_s": step_s / b, **({
            "compile_s": max(0.0, first - step_s), "compile_eval_s": max(0.0, eval_first - eval_s)}
            if key.compile else {})}
    reset_peak_memory(device)
    train_first, train_s = stepper.time(frozen=False, warmup=warmup, steps=steps)
    peak = peak_memory_gib(device)
    eval_first, eval_s = stepper.time(train=False, warmup=warmup, steps=steps)
    unfrozen = out[replace(key, frozen=False)] = {"train_s": train_s / b, "eval_s": eval_s / b}
    if not key.compile:
        unfrozen["peak_gib"] = peak
        return out, None
    unfrozen["compile_s"] = max(0.0, train_first - train_s)
    unfrozen["compile_eval_s"] = max(0.0, eval_first - eval_s)
    return out, "cold" if cache_misses() > misses else "warm"
