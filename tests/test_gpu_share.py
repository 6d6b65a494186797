"""gpus_per_trial='auto': shares from peak memory, the keys a space can take, Ray's per-trial resources.

The measurement itself needs a CUDA GPU (benchmarks/RESULTS.md has its figures where one was lent);
here the arithmetic, the plumbing, the measurement stage's loop and the behaviour without a GPU are checked.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from ray import tune

from tunekit.cli import main
from tunekit.errors import TunekitError
from tunekit.gpu_share import AutoShares, share_for
from tunekit.machine import StepKey
from tunekit.spec import build_spec
from tunekit.tuner.assemble import Resources


@pytest.mark.parametrize(("peak", "total", "share"), [
    (1.0, 80.0, 1 / 8),  # a small model: as many as auto packs (8)
    (10.0, 80.0, 1 / 5),  # 10 GiB x 1.15 + 0.6 = 12.1 GiB, in 85% of a 1/5 share (13.6 GiB)
    (20.0, 80.0, 1 / 2),  # 23.6 GiB: three would fit, but not with room for their data on the GPU
    (70.0, 80.0, 1.0),  # does not fit twice (nor, quite, once): a whole GPU
])
def test_share_is_the_smallest_even_split_that_holds_the_peak(peak, total, share):
    from tunekit.gpu_share import PRELOAD_SHARE

    result = share_for(peak, total)
    assert result.gpus == pytest.approx(share)
    assert result.need_gib > peak
    if share < 1:  # it really fits in its share, beside the data a trial may keep on the GPU
        assert result.need_gib <= total * result.gpus * (1 - PRELOAD_SHARE)


def spec(**space):
    return build_spec({"name": "auto", "data": "shapes", "gpus_per_trial": "auto",
                       "space": {"pretrained": False, **space}})


def test_memory_keys_cover_every_trial_and_resources_follow_the_config():
    from tunekit.gpu_share import memory_keys

    s = spec(model=tune.choice(["test_resnet", "test_vit"]), batch_size=tune.grid_search([32, 64]))
    keys = memory_keys(s)
    assert [str(k) for k in keys] == ["test_resnet b32 64px auto", "test_resnet b64 64px auto",
                                      "test_vit b32 64px auto", "test_vit b64 64px auto"]  # shapes are 64px
    shares = {k: share_for(1.0 + i * 20, 80.0) for i, k in enumerate(keys)}
    resources = Resources(AutoShares(shares, "shapes"), cpus=2.0)
    bundle = resources({"model": "test_vit", "batch_size": 32, "pretrained": False}).bundles[0]
    assert bundle == {"CPU": 2.0, "GPU": shares[StepKey("test_vit", 32, 64, "auto")].gpus}
    assert resources({"model": "test_resnet", "batch_size": 32}).bundles[0]["GPU"] == 1 / 8


def test_auto_needs_finite_choices_to_probe():
    from tunekit.gpu_share import memory_keys

    with pytest.raises(TunekitError, match="'batch_size' is sampled from a range"):
        memory_keys(spec(model="test_resnet", batch_size=tune.randint(16, 64)))


def test_auto_without_a_gpu_plans_in_a_dry_run_and_refuses_to_run(tmp_path):
    space = tmp_path / "auto.py"
    space.write_text('gpus_per_trial = "auto"\nspace = {"model": "test_resnet", "pretrained": False}\n')
    dry = CliRunner().invoke(main, ["search", str(space), "--dry-run", "--storage-path", str(tmp_path)])
    assert dry.exit_code == 0, dry.output
    assert "no GPU here: planned for 1 GPU" in dry.output
    assert "gpus_per_trial='auto': each model's share is measured on the GPU when the search starts" in dry.output
    run = CliRunner().invoke(main, ["search", str(space), "--storage-path", str(tmp_path)])
    assert run.exit_code == 2 and "no GPU is available: set gpus_per_trial=0" in run.output
    cli = CliRunner().invoke(main, ["search", str(space), "--gpus-per-trial", "most", "--dry-run"])
    assert cli.exit_code == 2 and "'most' is neither a number nor 'auto'" in cli.output


@pytest.mark.parametrize(("share", "gpus", "at_once", "spread_to"), [
    (1 / 8, 4, 12, 1 / 3),  # 12 trials on 4 GPUs: three each, not eight on GPU 0 and four on GPU 1
    (1 / 8, 4, 32, 1 / 8),  # every slot used: the share stands
    (1 / 8, 4, 4, 1.0),  # four trials (say, CPU-bound): a GPU each
    (1 / 2, 2, 3, 1 / 2),  # 3 trials on 2 GPUs at 1/2: two on one, one on the other
    (1 / 8, 1, 3, 1 / 3),  # one GPU: the three get more room (nothing to spread over)
    (1.0, 4, 2, 1.0), (0.0, 4, 2, 0.0),  # whole GPUs, or none: unchanged
])
def test_shares_spread_the_trials_over_every_gpu(share, gpus, at_once, spread_to):
    from tunekit.gpu_share import spread

    assert spread(share, gpus, at_once) == pytest.approx(spread_to)


def test_shares_are_sized_for_the_smallest_card_of_a_mixed_cluster():
    from tunekit.gpu_share import parse_nvidia_smi, smallest_card

    cards = parse_nvidia_smi("NVIDIA H200, 143771\nNVIDIA A10G, 23028\nbad line\n")
    assert cards == [("NVIDIA H200", pytest.approx(140.4, abs=0.1)), ("NVIDIA A10G", pytest.approx(22.5, abs=0.1))]
    name, gib = smallest_card(cards)
    assert name == "NVIDIA A10G"
    # 4 GiB of peak packs 8 to an H200 but only 3 to the A10G: the A10G's count is the share
    assert share_for(4.0, 140.4).gpus == 1 / 8 and share_for(4.0, gib).gpus == 1 / 3
    with pytest.raises(TunekitError, match="no GPU was found on any node"):
        smallest_card([])


def test_the_plan_spreads_shares_and_caps_trials_at_the_gpus_asked_for(tmp_path):
    from tunekit.tuner.plan import make_plan

    s = build_spec({"name": "p", "data": "shapes", "gpus_per_trial": 0.125, "num_samples": 12,
                    "space": {"model": "test_resnet", "pretrained": False}})
    plan = make_plan(s, tmp_path, total_cpus=64, total_gpus=4, restoring=False)
    assert plan.concurrency == 12 and plan.gpus_per_trial == pytest.approx(1 / 3)
    assert plan.max_concurrent is None  # Ray's count of the GPUs keeps to it
    # --num-gpus 0.5 on a 1-GPU machine: Ray counts whole GPUs, so the plan's 4 at once goes to Ray as a limit
    half = make_plan(s, tmp_path, total_cpus=64, total_gpus=0.5, restoring=False, capped=True)
    assert half.concurrency == 4 and half.max_concurrent == 4
    with pytest.raises(TunekitError, match="gpus_per_trial=1 is more than the 0.5 GPU"):
        make_plan(build_spec({"name": "p", "gpus_per_trial": 1, "space": {"model": "test_resnet"}}), tmp_path,
                  total_cpus=4, total_gpus=0.5, restoring=False, capped=True)


def test_auto_resources_never_go_below_the_spread_share():
    from tunekit.gpu_share import AutoShares

    keys = [StepKey("test_resnet", 32, 64, "auto"), StepKey("test_vit", 32, 64, "auto")]
    shares = AutoShares({keys[0]: share_for(1.0, 80.0), keys[1]: share_for(30.0, 80.0)}, "shapes")
    resources = Resources(shares, cpus=1.0, floor=1 / 3)
    assert resources({"model": "test_resnet", "batch_size": 32}).bundles[0]["GPU"] == pytest.approx(1 / 3)
    assert resources({"model": "test_vit", "batch_size": 32}).bundles[0]["GPU"] == 1.0


def test_a_measurement_that_runs_out_of_memory_keeps_what_was_measured_and_goes_on(tmp_path, monkeypatch):
    """The measurement stage's loop as it runs on a GPU, with the timing written out: each peak goes to the
    machine's book as soon as it is measured (an interrupted stage keeps it), a key the book has is not
    measured again, an out-of-memory key gets a whole GPU, flagged, and the keys after it are still measured."""
    import torch

    from tunekit.device import machine_id
    from tunekit.gpu_share import shares_from
    from tunekit.machine import Book
    from tunekit.measure import Needs, measure_here

    keys = [StepKey("small", 32, 64, "fp32"), StepKey("huge", 4096, 512, "fp32"), StepKey("mid", 32, 64, "fp32")]
    monkeypatch.setattr("tunekit.machine.machines_folder", lambda: tmp_path)  # a book of this test's own
    book = Book(machine_id(torch.device("cpu")))
    book.record(keys[2], by="stage", peak_gib=10.0)  # measured by an earlier search on this machine
    timed = []

    def timer(key, device, frozen):
        timed.append(key.model)
        if key.model == "huge":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return {key: {"peak_gib": 1.0}}, None

    found = measure_here(Needs(tuple(keys), memory=True, device="cpu", size_on_gib=80.0), timer=timer)
    assert timed == ["small", "huge"]  # not the one the book had
    shares = shares_from(found.peaks, found.total_gib)
    assert shares[keys[0]] == share_for(1.0, 80.0) and shares[keys[2]] == share_for(10.0, 80.0)
    assert shares[keys[1]].out_of_memory and shares[keys[1]].gpus == 1.0
    assert book.get(keys[0])["peak_gib"] == 1.0 and book.get(keys[1]) == {}  # kept at once; the OOM not kept
    assert any("huge b4096 512px fp32 ran out of memory on a whole GPU" in line for line in found.lines)


def test_the_plan_says_when_it_spread_the_share(tmp_path):
    from tunekit.tuner.plan import make_plan

    s = build_spec({"name": "p", "gpus_per_trial": 0.125, "num_samples": 12, "space": {"model": "test_resnet"}})
    line = make_plan(s, tmp_path, total_cpus=64, total_gpus=4, restoring=False).lines(s)[4]
    assert "per trial 1 CPU, 1/3 GPU (raised from 1/8: 12 trial(s) at once on 4 GPU(s)); up to 12 at once on " \
           "64 CPU / 4 GPU" in line, line
    # one GPU, two CPUs: two trials at once get half a GPU each, not an eighth
    one = make_plan(s, tmp_path, total_cpus=2, total_gpus=1, restoring=False)
    assert one.gpu_text == "1/2 GPU (raised from 1/8: 2 trial(s) at once on 1 GPU(s))"


def test_packed_trials_keep_to_their_share():
    from tunekit.gpu_share import packed_fraction

    assert packed_fraction(0.125) == 0.125 and packed_fraction(0.5) == 0.5
    assert packed_fraction(1.0) is None and packed_fraction(0.0) is None  # a whole GPU, or none: no limit


def test_the_resident_data_decision_counts_the_share_not_the_whole_gpu():
    from tunekit.gpu_share import PRELOAD_SHARE, keeps_resident

    gpu = 80 * 2**30
    data = int(3 * 2**30)  # 3 GiB of uint8 images
    assert keeps_resident(data, gpu)  # a whole 80 GiB GPU: 3 <= 12 GiB
    assert not keeps_resident(data, gpu // 8)  # one of 8 packed trials: 3 > 1.5 GiB
    assert keeps_resident(int(PRELOAD_SHARE * gpu // 8), gpu // 8)
