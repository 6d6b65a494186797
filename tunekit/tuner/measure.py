"""The measurement stage of a search: after the plan's arithmetic, before any trial, everything the
search decides by that must be measured on the machine, in one process (``tunekit.measure``), once:

    measure(state)        # the stage (tuner.flow): state.shares, state.step_times, the plan with the shares

  gpus_per_trial="auto"    each network's peak GPU memory -> its share (``gpu_share``), the plan's slots again
  trials share GPUs        each network's steps alone -> each trial's fit_time_unshared (``unshared``)
  compile="auto" (or "on"  eager and compiled steps and the compiles a run pays -> ``compile = "auto"``'s
  with shared GPUs)        decision in each trial (``compiled.decide``), and a compiled trial's unshared time

It runs after the data is prepared (bad data fails first, and the network it builds has the data's classes).
A dry run ends before this stage: it measures nothing (and imports no torch). On a cluster, the GPU memory is
measured by the same function in a Ray task on a GPU node (``nodes.measure_on_cluster``); steps alone and
compiles are not (a cluster's nodes may differ): the report then ranks by the measured fit_time, and each
node's trials decide ``compile = "auto"`` on that node's own book, saying so.
"""

from __future__ import annotations

import dataclasses
import json

from ..config import TrialConfig
from ..errors import TunekitError
from ..gpu_share import AutoShares, memory_keys, shares_from, size_for
from ..machine import StepKey
from ..measure import Found, Needs, measure_apart
from .plan import make_plan, packs
from .state import Search


def needs_of(state: Search) -> tuple[Needs, list[str]]:
    """What the search's plan needs measured, and a note for each measurement it cannot make."""
    spec, plan = state.spec, state.plan
    compile_values = set(spec.values_of("compile") or ["auto"])
    local = state.options.address is None
    memory = plan.gpu_auto
    alone = packs(plan) and local
    compiled = local and ("auto" in compile_values or ("on" in compile_values and alone))
    notes = []
    if packs(plan) and not local:
        notes.append("  note     fit_time_unshared: the networks' steps are timed alone on this machine's GPU, and "
                     "this search runs elsewhere: the report ranks by the measured fit_time")
    if "auto" in compile_values and not local:
        notes.append("  note     compile='auto' on a cluster: each node's trials decide on that node's own "
                     "measurements (tunekit bench --compile there), eager where it has none")
    if not (memory or alone or compiled):
        return Needs(()), notes
    try:
        keys = tuple(memory_keys(spec) if memory else memory_keys(spec, "the measurement stage", ""))
    except TunekitError as e:
        if memory:
            raise
        notes.append(f"  note     not measured ({e}): the report ranks by the measured fit_time, and compile='auto' "
                     f"runs eager unless this machine measured the network before")
        return Needs(()), notes
    device = "cuda" if plan.total_gpus > 0 and (plan.gpu_auto or plan.gpus_per_trial > 0) else "cpu"  # the trials'
    frozen = any(v is not False for v in spec.values_of("pretrained") or [True])  # some trials start frozen
    # the trials' network: a compiled graph is theirs only with their head (the space's first, the data's classes)
    pool, head = ((spec.values_of(k) or [getattr(TrialConfig, k)])[0] for k in ("pool", "head"))
    facts = getattr(state, "facts", None)
    n_classes = facts.n_classes if facts is not None and facts.n_classes else 6
    return Needs(keys, memory=memory, alone=alone, compiled=compiled, frozen=frozen, device=device,
                 threads=max(1, int(spec.cpus_per_trial)), head=(pool, head, n_classes)), notes


def measure(state: Search) -> None:
    """The stage: what ``needs_of`` asks, measured here (a process of its own) or, for the shares of a cluster's
    search, on a GPU node; the results in ``state`` and said."""
    if state.plan.finished:
        return
    needs, notes = needs_of(state)
    for note in notes:
        state.echo(note)
    if not needs:
        return
    if state.options.address is not None:
        from .nodes import measure_on_cluster

        found = measure_on_cluster(needs, state.echo)
    else:
        found = measure_apart(needs, state.echo)
        if needs.memory:
            size_for(found.cards, state.echo)
    if needs.memory:
        set_shares(state, found)
    if needs.alone:
        state.step_times = found.times
    if needs.compiled:
        for line in compile_lines(found):
            state.echo(line)


def set_shares(state: Search, found: Found) -> None:
    """The measured shares, and the plan made again with the smallest of them (its slots)."""
    spec, opts, plan = state.spec, state.options, state.plan
    state.shares = AutoShares(shares_from(found.peaks, found.total_gib), spec.data)
    state.plan = dataclasses.replace(
        make_plan(spec, state.run_dir, plan.total_cpus, plan.total_gpus, state.restoring, state.shares.smallest(),
                  opts.num_gpus is not None), finished=plan.finished)
    for line in state.shares.lines():
        state.echo(line)
    state.echo(f"  per trial {state.plan.cpus_per_trial:g} CPU, {state.plan.gpu_text}; up to {state.plan.concurrency} "
               f"at once (with the measured shares)")


def compile_lines(found: Found) -> list[str]:
    """For each network measured eager and compiled: its steps, its compiles, and from how many train steps a
    trial's compile pays (``compile = "auto"`` decides per trial, on its expected steps)."""
    lines = []
    for text, compiled in found.times.items():
        key = StepKey(**json.loads(text))
        if not key.compile:
            continue
        eager = found.times.get(dataclasses.replace(key, compile=False).text(), {})
        if not {"train_s", "compile_s"} <= set(compiled) or "train_s" not in eager:
            continue
        b = key.batch_size
        cost = compiled["compile_s"] + compiled.get("compile_eval_s", 0.0)
        gain = (eager["train_s"] - compiled["train_s"]) * b
        pays = f"pays after {cost / gain:,.0f} unfrozen train steps" if gain > 0 else "never pays (no faster)"
        cold = f"; cold: {compiled['compile_cold_s']:.1f}s for all its graphs" if "compile_cold_s" in compiled else ""
        lines.append(f"  compile  {dataclasses.replace(key, compile=False)}: step {eager['train_s'] * b * 1e3:.1f} ms "
                     f"eager, {compiled['train_s'] * b * 1e3:.1f} ms compiled; compiles {cost:.1f}s "
                     f"({compiled.get('cache', 'warm')} cache{cold}): {pays}")
    return lines
