"""The compiled step (config key ``compile``): the same numbers as eager, a compile cache the runs of a
machine share, and ``auto``'s rule on the times runs measured. Real torch.compile on the CPU (Inductor's
C++ backend; its scalar kernels, as conftest sets for the suite), kept small: the tiniest timm ResNet at 16 px, a
fine-tune of 1 frozen + 1 epoch (its first process compiles the graphs cold, about 50 s on 2 cores; the next process
and bench load their kernels from the shared cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunekit.compiled import Decision, Work, compile_costs, decide, expected_epochs
from tunekit.config import TrialConfig
from tunekit.errors import TunekitError
from tunekit.machine import Book, StepKey

KEY = StepKey("resnet18", 64, 224, "bf16")
EAGER = {"train_s": 0.030 / 64, "frozen_s": 0.012 / 64, "eval_s": 0.010 / 64}
COMPILED = {"train_s": 0.020 / 64, "frozen_s": 0.008 / 64, "eval_s": 0.007 / 64, "compile_s": 20.0,
            "compile_frozen_s": 10.0, "compile_frozen_eval_s": 2.0, "compile_eval_s": 3.0, "cache": "warm"}
# 64,000 train images an epoch (1,000 steps), 16,000 validation images
SCRATCH = Work.of(n_train=64_000, n_valid=16_000, batch_size=64, frozen_epochs=0, total_epochs=3)


@pytest.mark.parametrize("mode, work, eager, compiled, expected", [
    ("off", SCRATCH, EAGER, COMPILED, Decision(False, "off")),
    ("on", SCRATCH, {}, {}, Decision(True, "on")),
    # from scratch, 3 epochs: 3,000 steps x 10 ms + 48,000 eval images x 0.047 ms = 32.2 s saved against
    # the full graph's and the eval graph's compiles, 23 s
    ("auto", SCRATCH, EAGER, COMPILED,
     Decision(True, "auto: compiled (3 epoch(s), 3,000 train steps: compiled would save 32.2s against 23.0s of "
                    "compiles, warm cache)")),
    # a fine-tune (1 frozen + 2): it pays the frozen body's graphs' compiles too (train and eval, before both
    # compile again at the unfreeze), and its frozen epoch saves less
    ("auto", Work.of(64_000, 16_000, 64, frozen_epochs=1, total_epochs=3), EAGER, COMPILED,
     Decision(False, "auto: eager (3 epoch(s), 3,000 train steps: compiled would save 26.2s against 35.0s of "
                     "compiles, warm cache)")),
    # under ASHA (rungs 1 and 3, reduction 3, of 9 epochs) a trial is expected to train 1 + 2/3 + 6/9 = 2.33
    ("auto", Work.of(64_000, 16_000, 64, 0, 9, rungs=[1, 3], reduction_factor=3), EAGER, COMPILED,
     Decision(True, "auto: compiled (2.33 of 9 epochs expected under ASHA, 2,333 train steps: compiled would save "
                    "25.1s against 23.0s of compiles, warm cache)")),
    ("auto", SCRATCH, {"train_s": 0.03}, {"train_s": 0.02},
     Decision(False, "auto: eager (not measured on this machine yet: eager eval_s, compiled eval_s, compiled "
                     "compile_s, compiled compile_eval_s; a search's measurement stage measures them)")),
])
def test_auto_compiles_when_the_expected_work_pays_for_every_compile(mode, work, eager, compiled, expected):
    assert decide(mode, work, eager, compiled) == expected


def test_a_fine_tune_under_asha_pays_the_unfreeze_compiles_only_as_often_as_it_unfreezes():
    # 1 frozen + 5 epochs, rungs 1 and 3, reduction 3: every trial trains its frozen epoch, a third unfreeze
    work = Work.of(64_000, 16_000, 64, frozen_epochs=1, total_epochs=6, rungs=[1, 3], reduction_factor=3)
    assert work.starts_frozen and work.reach_unfrozen == pytest.approx(1 / 3)
    assert work.frozen_images == 64_000 and work.epochs == pytest.approx(1 + 2 / 3 + 3 / 9)
    assert compile_costs(work) == pytest.approx({"compile_frozen_s": 1, "compile_frozen_eval_s": 1,
                                                 "compile_s": 1 / 3, "compile_eval_s": 1 / 3})
    # promoted past rung 3 (a new process, from its checkpoint): 3 epochs left, unfrozen, every one of them run
    resumed = Work.of(64_000, 16_000, 64, frozen_epochs=1, total_epochs=6, rungs=[1, 3], reduction_factor=3, start=3)
    assert not resumed.starts_frozen and resumed.frozen_images == 0 and resumed.epochs == 3
    assert compile_costs(resumed) == {"compile_s": 1.0, "compile_eval_s": 1.0}
    # a run that ends frozen (stopped at its frozen epoch) pays no unfrozen compile
    assert compile_costs(Work.of(64_000, 16_000, 64, frozen_epochs=1, total_epochs=1)) == {
        "compile_frozen_s": 1.0, "compile_frozen_eval_s": 1.0}


@pytest.mark.parametrize("total, rungs, rf, expected", [
    (9, [], 3, 9.0),  # no ASHA: every trial to the end
    (9, [1, 3], 3, 1 + 2 / 3 + 6 / 9),
    (6, [1, 2, 4], 2, 1 + 1 / 2 + 2 / 4 + 2 / 8),
    (1, [1, 3], 3, 1.0),  # a rung at or past a trial's end does not cut it
])
def test_the_epochs_a_trial_is_expected_to_reach_come_from_the_rungs(total, rungs, rf, expected):
    assert expected_epochs(total, rungs, rf) == pytest.approx(expected)
    assert expected_epochs(total, rungs, rf, start=total) == 0  # a run resumed at its end trains none


def test_one_book_per_machine_keys_that_differ_in_compile_or_frozen_apart(tmp_path):
    book = Book("NVIDIA H200 x1, torch 2.13.0", tmp_path)
    book.record(KEY, by="stage", train_s=0.03, eval_s=0.01)
    book.record(StepKey("resnet18", 64, 224, "bf16", frozen=True), by="stage", train_s=0.012)
    book.record(StepKey("resnet18", 64, 224, "bf16", compile=True), by="stage", train_s=0.02, compile_s=20,
                cache="warm")
    book.record(StepKey("resnet18", 64, 224, "bf16", compile=True, frozen=True), by="stage", train_s=0.008,
                compile_s=10)
    book.record(KEY, by="bench", train_s=0.029)  # the latest measurement of a name wins, and says by whom
    assert book.times(KEY) == {"train_s": 0.029, "eval_s": 0.01, "frozen_s": 0.012}
    assert book.times(StepKey("resnet18", 64, 224, "bf16", compile=True)) == {
        "train_s": 0.02, "compile_s": 20.0, "cache": "warm", "frozen_s": 0.008, "compile_frozen_s": 10.0}
    assert book.get(KEY)["by"] == "bench"
    other = Book("CPU AMD EPYC x2, torch 2.13.0", tmp_path)  # another machine sharing the home directory
    assert other.get(KEY) == {}
    other.record(KEY, by="stage", train_s=0.5)
    assert book.get(KEY)["train_s"] == 0.029 and len(list(tmp_path.glob("*.json"))) == 2


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
from tunekit.device import machine_id
from tunekit.loop import fit
from tunekit.machine import Book, StepKey
from tunekit.model import build_model

out = {}
if sys.argv[2] == "steps":  # the train step itself: eager and compiled from the same weights, on one batch
    torch.manual_seed(0)
    torch.set_num_threads(1)  # as the fits below (threads=1): Inductor's kernels, and so its cache, are per thread count
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
        with torch.inference_mode():  # as the loop validates: the twin's graphs are the fine-tune's unfrozen two
            seen[name] = (float(loss), torch.cat([p.grad.flatten() for p in net.parameters()]), net(x))
    (le, ge, oe), (lc, gc, oc) = seen["eager"], seen["compiled"]
    out["step"] = {"loss": [le, lc], "grad_diff": float((ge - gc).abs().max()), "grad_max": float(ge.abs().max()),
                   "eval_diff": float((oe - oc).abs().max()), "eval_max": float(oe.abs().max())}
for mode in sys.argv[3:]:
    if mode == "stage":  # the measurement stage's timing of the same network compiled: frozen, then unfrozen
        from tunekit.measure import time_network
        timed, cache = time_network(StepKey("test_resnet", 16, 16, "fp32", compile=True), torch.device("cpu"),
                                    steps=2, warmup=1)
        out[mode] = {"frozen" if k.frozen else "unfrozen": v for k, v in timed.items()}
        continue
    # a fine-tune: the weights, 1 frozen + 1 epoch, 20 validation images (batches of 16 and 4)
    cfg = TrialConfig(data="shapes?n=100&size=16", model="test_resnet", pretrained=sys.argv[1], freeze_epochs=1,
                      epochs=1, batch_size=16, img_size=16, compile=mode, seed=1, threads=1)
    graphs, before = [], counters["stats"]["unique_graphs"]  # Dynamo's graphs this fit compiles, per epoch
    r = fit(cfg, lambda m, s: graphs.append(counters["stats"]["unique_graphs"] - before))
    book = Book(machine_id(torch.device("cpu"))).get(StepKey("test_resnet", 16, 16, "fp32", compile=True))
    out[mode] = {"losses": [h[k] for h in r.history for k in ("train_loss", "valid_loss")], "why": r.info.compile_why,
                 "compiled": r.info.compiled, "graphs": graphs, "n_valid": r.info.n_valid,
                 "compiles": book.get("run_compiles"), "compile_s": book.get("run_compile_s"), "by": book.get("by")}
out["cache_hits"] = counters["inductor"]["fxgraph_cache_hit"]
print("RESULT " + json.dumps(out))
"""


def run_fits(weights: Path, *modes: str) -> dict:
    """``fit`` (a fine-tune from ``weights``) in a fresh process, as a trial is: its results and Inductor's cache
    hits there."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(weights), *modes], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ")[1])


@pytest.mark.timeout(1200)
def test_a_compiled_run_matches_eager_and_the_next_process_reuses_its_compile(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(5)
    weights = tmp_path / "test_resnet.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(weights))
    first = run_fits(weights, "steps", "off", "on")
    # a train step's loss and gradients (dropout's masks drawn as eager draws them) and the outputs in eval
    # mode: the same numbers but for the float reassociation of the compiled kernels
    step = first["step"]
    assert step["loss"][1] == pytest.approx(step["loss"][0], rel=1e-5)
    assert step["grad_diff"] <= 1e-4 * step["grad_max"] and step["eval_diff"] <= 1e-4 * step["eval_max"], step
    # a whole fine-tune: its 10 AdamW steps amplify those last-digit differences (Adam's update is the gradient's
    # sign for the smallest ones), so its losses agree to a percent, not to the last digit
    assert first["off"]["compiled"] is False and first["on"]["compiled"] is True
    assert first["on"]["losses"] == pytest.approx(first["off"]["losses"], rel=2e-2)
    # compiled: the frozen epoch's train and eval graphs (its partial last validation batch padded: no third), then
    # at the unfreeze both again (requires_grad changed, which Dynamo guards on); the run, alone on its device,
    # counts every one of those compiles in what it records
    tune = first["on"]
    assert tune["n_valid"] == 20 and tune["graphs"] == [2, 4] and first["off"]["graphs"] == [0, 0], tune
    parts = dict(part.rsplit(" ", 1) for part in tune["compiles"].split(", "))
    assert set(parts) == {"frozen train", "frozen eval", "train", "eval"}, tune
    # each part is shown rounded to 2 decimals: their sum is the total within that rounding (0.005 each)
    assert tune["compile_s"] == pytest.approx(sum(float(v[:-1]) for v in parts.values()), abs=0.005 * len(parts))
    assert tune["by"] == "run"
    # a second trial of the same network on this machine: Inductor's kernels come from the shared cache
    second = run_fits(weights, "nosteps", "on", "stage")
    assert second["cache_hits"] > 0 and second["on"]["losses"] == pytest.approx(first["on"]["losses"], rel=1e-5)
    # the measurement stage times the same compiles: the frozen train and eval graphs, the train graph again at the
    # unfreeze (its eval there compiles little or nothing: what it measures is recorded)
    stage = second["stage"]
    assert stage["frozen"]["compile_s"] > 0 and stage["frozen"]["compile_eval_s"] > 0, stage
    assert stage["unfrozen"]["compile_s"] > 0 and stage["unfrozen"]["compile_eval_s"] >= 0, stage
    # tunekit bench --compile (the same network, shapes and thread count: its compile comes from the cache too):
    # eager and compiled rates, the compile's time, kept for compile=auto
    out = tmp_path / "bench.json"
    proc = subprocess.run(["tunekit", "bench", "--models", "test_resnet", "--img-size", "16", "--batch-size", "16",
                           "--device", "cpu", "--n-images", "96", "--rounds", "1", "--threads", "1", "--compile",
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = json.loads(out.read_text())
    assert record["compiled_images_per_s"] > 0 and record["loop_compiled_images_per_s"] > 0
    assert record["compile_s"] > 0 and "compile" in proc.stdout and "loop / fastest step" in proc.stdout
    from tunekit.device import machine_id

    key = StepKey("test_resnet", 16, 16, "fp32")
    book = Book(machine_id(torch.device("cpu")))
    assert book.get(key)["bench_train_s"] == pytest.approx(1 / record["ceiling_images_per_s"])
    compiled = book.get(StepKey("test_resnet", 16, 16, "fp32", compile=True))
    assert compiled["bench_compile_s"] == pytest.approx(record["compile_s"]) and compiled["by"] == "bench"
    assert compiled["bench_train_s"] == pytest.approx(1 / record["compiled_images_per_s"])
    assert compiled["bench_cache"] == "warm"  # the fits above compiled this network: bench found its kernels
