"""The compiled step (config key ``compile``): the same numbers as eager, a compile cache the runs of a
machine share, and ``auto``'s rule on the times runs measured. Real torch.compile on the CPU (Inductor's
C++ backend), kept small: the tiniest timm ResNet at 16 px, one epoch (~40-80 s to compile on 2 cores,
once: the next process and bench load its kernels from the shared cache)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tunekit.compiled import Decision, Ledger, StepKey, decide, ledger
from tunekit.config import TrialConfig
from tunekit.errors import TunekitError

KEY = StepKey("resnet18", 224, 64, "bf16", "NVIDIA H200")


@pytest.mark.parametrize("mode, known, steps, expected", [
    ("off", {"compile_s": 1, "compiled_step_s": 0.01, "eager_step_s": 1}, 10_000, Decision(False, "off")),
    ("on", {}, 1, Decision(True, "on")),
    # 1,000 steps x (0.030 - 0.020) s = 10 s saved, against 33 s to compile: eager
    ("auto", {"compile_s": 33.0, "compiled_step_s": 0.020, "eager_step_s": 0.030}, 1_000,
     Decision(False, "auto: eager (1000 steps would save 10s against 33s to compile)")),
    ("auto", {"compile_s": 33.0, "compiled_step_s": 0.020, "eager_step_s": 0.030}, 5_000,
     Decision(True, "auto: compiled (5000 steps would save 50s against 33s to compile)")),
    ("auto", {"eager_step_s": 0.030}, 5_000,
     Decision(False, "auto: eager (no compile_s, compiled_step_s measured for this network here yet: tunekit "
                     "bench --compile, or a run with compile=on)")),
])
def test_auto_compiles_when_the_steps_pay_for_the_compile(mode, known, steps, expected):
    assert decide(mode, KEY, steps, known) == expected


def test_the_ledger_keeps_each_networks_latest_times(tmp_path):
    book = Ledger(tmp_path / "steps.json")
    book.record(KEY, eager_step_s=0.03)
    book.record(KEY, compile_s=33, compiled_step_s=0.02)
    book.record(KEY, eager_step_s=0.029)
    assert {k: v for k, v in book.get(KEY).items() if k != "key"} == {
        "eager_step_s": 0.029, "compile_s": 33.0, "compiled_step_s": 0.02}
    assert book.get(StepKey("resnet18", 224, 64, "bf16", "cpu")) == {}
    assert "torch " in json.loads((tmp_path / "steps.json").read_text()).popitem()[0]  # per torch version too


def test_compile_is_a_config_key_with_three_values():
    assert TrialConfig(compile="auto").compile == "auto"
    with pytest.raises(TunekitError, match="compile must be one of 'off', 'on', 'auto', got 'yes'"):
        TrialConfig(compile="yes")


SCRIPT = """
import copy, json, sys
import torch
from torch._dynamo.utils import counters
from tunekit.compiled import compile_model
from tunekit.config import TrialConfig
from tunekit.loop import fit
from tunekit.model import build_model

out = {}
if sys.argv[2] == "steps":  # the train step itself: eager and compiled from the same weights, on one batch
    torch.manual_seed(0)
    cfg = TrialConfig(model="test_resnet", pretrained=False, img_size=16, batch_size=16)  # concat pool, fastai head
    model, _ = build_model(cfg, 6, 16)
    twin = compile_model(copy.deepcopy(model))
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 6, (16,))
    seen = {}
    for name, net in (("eager", model), ("compiled", twin)):
        torch.manual_seed(1)  # the dropout masks: drawn from torch's generator by both
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        net.eval()
        with torch.no_grad():
            seen[name] = (float(loss), torch.cat([p.grad.flatten() for p in net.parameters()]), net(x))
    (le, ge, oe), (lc, gc, oc) = seen["eager"], seen["compiled"]
    out["step"] = {"loss": [le, lc], "grad_diff": float((ge - gc).abs().max()), "grad_max": float(ge.abs().max()),
                   "eval_diff": float((oe - oc).abs().max()), "eval_max": float(oe.abs().max())}
for mode in sys.argv[3:]:
    cfg = TrialConfig(data=sys.argv[1], model="test_resnet", pretrained=False, epochs=1, batch_size=16, img_size=16,
                      compile=mode, seed=1, threads=1)
    r = fit(cfg)
    out[mode] = {"losses": [r.history[0]["train_loss"], r.history[0]["valid_loss"]], "why": r.info.compile_why,
                 "compiled": r.info.compiled}
out["cache_hits"] = counters["inductor"]["fxgraph_cache_hit"]
print("RESULT " + json.dumps(out))
"""


def run_fits(data: str, *modes: str) -> dict:
    """``fit`` in a fresh process (as a trial is): its results and Inductor's cache hits there."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT, data, *modes], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ")[1])


@pytest.mark.timeout(1200)
def test_a_compiled_run_matches_eager_and_the_next_process_reuses_its_compile(small_shapes, tmp_path):
    data = f"folder:{small_shapes}"
    first = run_fits(data, "steps", "off", "on")
    # a train step's loss and gradients (dropout's masks drawn as eager draws them) and the outputs in eval
    # mode: the same numbers but for the float reassociation of the compiled kernels
    step = first["step"]
    assert step["loss"][1] == pytest.approx(step["loss"][0], rel=1e-5)
    assert step["grad_diff"] <= 1e-4 * step["grad_max"] and step["eval_diff"] <= 1e-4 * step["eval_max"], step
    # a whole run: 12 AdamW steps amplify those last-digit differences (Adam's update is the gradient's
    # sign for the smallest ones), so its losses agree to a percent, not to the last digit
    assert first["off"]["compiled"] is False and first["on"]["compiled"] is True
    assert first["on"]["losses"] == pytest.approx(first["off"]["losses"], rel=2e-2)
    # a second trial of the same network on this machine: Inductor's kernels come from the shared cache
    second = run_fits(data, "nosteps", "on")
    assert second["cache_hits"] > 0 and second["on"]["losses"] == pytest.approx(first["on"]["losses"], rel=1e-5)
    # tunekit bench --compile (the same network and shapes: its compile comes from the cache too): eager and
    # compiled rates, the compile's time, kept for compile=auto
    out = tmp_path / "bench.json"
    proc = subprocess.run(["tunekit", "bench", "--models", "test_resnet", "--img-size", "16", "--batch-size", "16",
                           "--device", "cpu", "--n-images", "96", "--rounds", "1", "--compile", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = json.loads(out.read_text())
    assert record["compiled_images_per_s"] > 0 and record["loop_compiled_images_per_s"] > 0
    assert record["compile_s"] > 0 and "compile" in proc.stdout and "loop / fastest step" in proc.stdout
    key = StepKey("test_resnet", 16, 16, "fp32", "cpu")
    times = {k: v for k, v in ledger().get(key).items() if k != "key"}
    assert times["compile_s"] == pytest.approx(record["compile_s"])
    assert times["eager_step_s"] == pytest.approx(16 / record["ceiling_images_per_s"])
    # auto decides on them, and says how
    saved = 10**6 * (times["eager_step_s"] - times["compiled_step_s"])
    assert decide("auto", key, 10**6) == Decision(saved > times["compile_s"], decide("auto", key, 10**6).why)
    assert decide("auto", key, 10**6).why.startswith("auto: compiled (" if saved > times["compile_s"] else "auto: eager (")
