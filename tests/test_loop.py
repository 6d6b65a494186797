"""The fine-tune loop (loop.py): parameter freezing, reports, divergence, resume, learning."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from safetensors.torch import save_file

from tunekit.config import METRICS, TrialConfig
from tunekit.loop import fit

SMALL = dict(model="test_resnet", batch_size=32, img_size=32, threads=2)


def small(spec: str, **cfg) -> TrialConfig:
    return TrialConfig(data=spec, **{**SMALL, **cfg})


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(path))
    return path


def test_frozen_epoch_trains_head_and_norms_only(small_shapes, weights_file, tmp_path, monkeypatch):
    """fine_tune with weights: epoch 1 leaves the body's convs as loaded, epoch 2 tunes them. With compile=auto
    (eager here: nothing measured for this network yet) the run, alone on its device, records its steady train
    step in the machine's book, from the unfrozen epoch only: the frozen one's steps are another network's."""
    from tunekit.device import machine_id
    from tunekit.machine import Book, StepKey

    monkeypatch.setattr("tunekit.machine.machines_folder", lambda: tmp_path)  # a book of this test's own
    book, key = Book(machine_id(torch.device("cpu"))), StepKey("test_resnet", 32, 32, "fp32")
    snapshots, adam_steps, recorded = [], [], [book.get(key).get("run_train_s")]

    def report(metrics, state):
        snap = state()
        snapshots.append({k: v.clone() for k, v in snap["model"].items()})
        adam_steps.append({int(s["step"]) for s in snap["optimizer"]["state"].values()})
        recorded.append(book.get(key).get("run_train_s"))

    cfg = small(f"folder:{small_shapes}", pretrained=str(weights_file), epochs=1, freeze_epochs=1, compile="auto")
    result = fit(cfg, report)
    assert result.info.compile_why.startswith("auto: eager (not measured on this machine yet")
    assert recorded[0] is None and recorded[1] is None and recorded[2] > 0
    loaded = timm.create_model("test_resnet", pretrained=False)
    from safetensors.torch import load_file
    loaded.load_state_dict(load_file(str(weights_file)))
    conv = "body.conv1.0.weight"
    bn = "body.bn1.weight"
    assert torch.equal(snapshots[0][conv], loaded.conv1[0].weight)  # frozen in epoch 1
    assert not torch.equal(snapshots[0][bn], loaded.bn1.weight)  # but BatchNorm trained
    assert not torch.equal(snapshots[1][conv], snapshots[0][conv])  # unfrozen in epoch 2
    head = [k for k in snapshots[0] if k.startswith("head.") and k.endswith("weight")][0]
    assert not torch.equal(snapshots[1][head], snapshots[0][head])
    assert [h["epoch"] for h in result.history] == [1, 2]
    # the unfrozen phase starts with fresh Adam moments, as fastai's unfreeze (clear_state): every
    # parameter's step count is that phase's steps, not the head's and norms' running total
    assert adam_steps[0] == adam_steps[1] and len(adam_steps[0]) == 1


def test_reports_follow_the_metric_contract(small_shapes):
    reports = []
    result = fit(small(f"folder:{small_shapes}", pretrained=False, epochs=2), lambda m, s: reports.append(m))
    assert result.status == "completed" and reports == result.history
    for epoch, m in enumerate(reports, start=1):
        assert set(m) == set(METRICS) - {"f2"}
        assert m["epoch"] == epoch and 0 <= m["error_rate"] <= 1
        assert m["accuracy"] == pytest.approx(1 - m["error_rate"])
        assert m["images_per_s"] > 0 and m["gpu_mem"] == 0.0 and m["lr"] > 0
        assert math.isfinite(m["train_loss"]) and math.isfinite(m["valid_loss"])
    assert reports[1]["fit_time"] > reports[0]["fit_time"] > 0
    assert result.info.device == "cpu" and result.info.precision == "fp32"
    assert result.info.n_train + result.info.n_valid == 240
    # the run's start, phase by phase, the first training step's once it ran
    assert list(result.info.start_phases) == ["setup", "device", "data", "model", "first_step"]
    assert all(v >= 0 for v in result.info.start_phases.values())


def test_the_start_clock_adds_up_each_phase():
    import time

    from tunekit.loop import StartClock

    clock = StartClock(start=time.time() - 1.0)  # the trial entered a second ago
    clock.mark("setup")
    clock.mark("data")
    time.sleep(0.01)
    clock.mark("setup")  # a phase that comes back adds to its time
    assert list(clock.phases) == ["setup", "data"]
    assert clock.phases["setup"] >= 1.0 and clock.phases["data"] < clock.phases["setup"]
    assert sum(clock.phases.values()) == pytest.approx(time.time() - clock.start, abs=0.05)


def test_multilabel_reports_f2(small_shapes_multilabel):
    result = fit(small(f"csv:{small_shapes_multilabel}", pretrained=False, epochs=1))
    assert set(result.history[0]) == set(METRICS) and 0 <= result.history[0]["f2"] <= 1


def test_non_finite_loss_ends_the_run_as_diverged(small_shapes):
    result = fit(small(f"folder:{small_shapes}", pretrained=False, epochs=3, lr=1e30))
    assert result.status == "diverged" and len(result.history) == 1
    last = result.history[-1]
    assert last["diverged"] is True and last["error_rate"] == 1.0
    assert last["train_loss"] is None and last["valid_loss"] is None


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(small_shapes):
    cfg = small(f"folder:{small_shapes}", pretrained=False, epochs=3)
    checkpoints = []
    full = fit(cfg, lambda m, state: checkpoints.append(state()))
    resumed = fit(cfg, resume=checkpoints[0])
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == full.history[0]  # kept from the checkpoint
    for a, b in zip(full.history[1:], resumed.history[1:]):
        assert a["error_rate"] == b["error_rate"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_token_model_trains(small_shapes):
    result = fit(small(f"folder:{small_shapes}", model="test_vit", pretrained=False, epochs=1, pool="concat"))
    info = result.info.model
    # concat pool on tokens: the model's own summary and the max over patch tokens, side by side
    assert info.layout == "tokens" and info.pooled_features == 2 * info.num_features
    assert result.model.head[-1].out_features == 6 and 0 < result.history[0]["valid_loss"] < 10


def test_learns_multilabel_shapes_in_three_epochs():
    result = fit(TrialConfig(data="shapes-multilabel", model="test_resnet", pretrained=False, epochs=3))
    # predicting nothing scores f2 = 0; predicting every class scores about 0.71 here
    assert result.history[-1]["f2"] >= 0.72
