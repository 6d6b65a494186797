"""The measurement stage (tunekit/measure.py, tunekit/tuner/measure.py): what a plan needs measured, one key and
one machine identity for all of it, and the trials' own backend settings in the process that measures."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray import tune

from tunekit.machine import StepKey
from tunekit.measure import Needs
from tunekit.spec import build_spec
from tunekit.tuner.measure import needs_of
from tunekit.tuner.plan import make_plan

KEY = StepKey("test_resnet", 16, 16, "auto")


def state_of(tmp_path, gpus_per_trial=0, total_gpus=0.0, address=None, **space):
    spec = build_spec({"name": "m", "data": "shapes", "gpus_per_trial": gpus_per_trial, "num_samples": 4,
                       "space": {"model": "test_resnet", "batch_size": 16, "img_size": 16, **space}})
    share = 1 / 8 if gpus_per_trial == "auto" else None
    plan = make_plan(spec, tmp_path, total_cpus=8, total_gpus=total_gpus, restoring=False, auto_share=share)
    return SimpleNamespace(spec=spec, plan=plan, options=SimpleNamespace(address=address))


@pytest.mark.parametrize("search, expected, note", [
    # a CPU search with compile=auto: eager and compiled steps on the CPU, with a trial's threads; from scratch,
    # so no frozen steps
    (dict(compile="auto", pretrained=False), Needs((KEY,), compiled=True, frozen=False, device="cpu", threads=1), None),
    # trials packed four to a GPU: their steps alone (fit_time_unshared), fine-tunes: frozen steps too
    (dict(gpus_per_trial=0.25, total_gpus=1.0), Needs((KEY,), alone=True, device="cuda", threads=1), None),
    # compile on, packed: the compiled steps and compiles too (a compiled trial's unshared time)
    (dict(gpus_per_trial=0.25, total_gpus=1.0, compile="on"), Needs((KEY,), alone=True, compiled=True, threads=1), None),
    # CPU trials on a machine with GPUs: measured where they run
    (dict(gpus_per_trial=0, total_gpus=1.0, compile="auto", pretrained=False),
     Needs((KEY,), compiled=True, frozen=False, device="cpu", threads=1), None),
    # a GPU each and compile on: nothing to decide or to correct, nothing measured
    (dict(gpus_per_trial=1, total_gpus=1.0, compile="on"), Needs(()), None),
    (dict(gpus_per_trial="auto", total_gpus=1.0), Needs((KEY,), memory=True, alone=True, threads=1), None),
    # on a cluster: the memory on a GPU node; steps alone and compiles not (its nodes may differ), said
    (dict(gpus_per_trial="auto", total_gpus=2.0, address="auto", compile="auto"), Needs((KEY,), memory=True, threads=1),
     "compile='auto' on a cluster: each node's trials decide on that node's own measurements"),
    (dict(gpus_per_trial=0.25, total_gpus=2.0, address="auto"), Needs(()), "the report ranks by the measured fit_time"),
    # a batch size drawn from a range has no finite set of networks to measure
    (dict(compile="auto", batch_size=tune.randint(8, 32)), Needs(()),
     "not measured (the measurement stage measures each batch_size the space can take, and 'batch_size' is sampled "
     "from a range"),
])
def test_the_stage_measures_what_the_plan_decides_by_and_says_what_it_cannot(tmp_path, search, expected, note):
    needs, notes = needs_of(state_of(tmp_path, **search))
    assert needs == expected and bool(needs) == bool(expected.keys)
    assert notes == [] if note is None else any(note in line for line in notes), notes


TRIAL_FLAGS = """
import json, sys
import tunekit
from tunekit.config import TrialConfig
from tunekit.device import backend_flags
from tunekit.loop import StartClock, _setup
before = backend_flags()
_setup(TrialConfig(data=sys.argv[1], model="test_resnet", pretrained=False, batch_size=16, img_size=16), StartClock())
print(json.dumps([before, backend_flags()]))
"""


def test_the_stage_and_a_trial_train_with_the_same_backend_settings(small_shapes):
    """What a step's speed depends on beyond the network (cuDNN's autotuner first: on in trials, and so in the
    measuring process, which times convolutional networks as their trials run them), each in a fresh process
    as the stage and a trial run."""
    import json
    import subprocess
    import sys

    import torch

    from tunekit.measure import measure_apart

    lines: list[str] = []
    found = measure_apart(Needs((StepKey("test_resnet", 16, 16, "fp32"),), alone=True, frozen=False, device="cpu",
                                threads=1), echo=lines.append)
    trial = subprocess.run([sys.executable, "-c", TRIAL_FLAGS, f"folder:{small_shapes}"], capture_output=True,
                           text=True, timeout=300)
    assert trial.returncode == 0, trial.stderr[-2000:]
    fresh, trial_flags = json.loads(trial.stdout.splitlines()[-1])
    assert found.flags == trial_flags and trial_flags["cudnn.benchmark"] is True
    assert fresh["cudnn.benchmark"] is False  # (a fresh process has it off: both turned it on)
    assert found.machine.startswith("CPU ") and found.machine.endswith(f", torch {torch.__version__}")
    assert "measuring steps alone of 1 network(s) on this machine's CPU, in a process of its own" in lines
