"""gpus_per_trial='auto': shares from peak memory, the keys a space can take, Ray's per-trial resources.

The probe itself needs a CUDA GPU (benchmarks/RESULTS.md has its figures where one was lent);
here the arithmetic, the plumbing and the behaviour without a GPU are checked.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from ray import tune

from tunekit.cli import main
from tunekit.errors import TunekitError
from tunekit.gpu_share import MemoryKey, share_for
from tunekit.spec import build_spec
from tunekit.tuner.assemble import Resources


@pytest.mark.parametrize(("peak", "total", "share"), [
    (1.0, 80.0, 1 / 8),  # a small model: as many as auto packs (8)
    (10.0, 80.0, 1 / 5),  # 10 GiB x 1.15 + 0.6 = 12.1 GiB, in 85% of a 1/5 share (13.6 GiB)
    (20.0, 80.0, 1 / 2),  # 23.6 GiB: three would fit, but not with room for their data on the GPU
    (70.0, 80.0, 1.0),  # does not fit twice (nor, quite, once): a whole GPU
])
def test_share_is_the_smallest_even_split_that_holds_the_peak(peak, total, share):
    from tunekit.data.batches import PRELOAD_SHARE

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
    resources = Resources(shares, cpus=2.0, data="shapes")
    bundle = resources({"model": "test_vit", "batch_size": 32, "pretrained": False}).bundles[0]
    assert bundle == {"CPU": 2.0, "GPU": shares[MemoryKey("test_vit", 32, 64, "auto")].gpus}
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
    assert "gpus_per_trial='auto': each model's share is probed on the GPU when the search starts" in dry.output
    run = CliRunner().invoke(main, ["search", str(space), "--storage-path", str(tmp_path)])
    assert run.exit_code == 2 and "no GPU is available: set gpus_per_trial=0" in run.output
    cli = CliRunner().invoke(main, ["search", str(space), "--gpus-per-trial", "most", "--dry-run"])
    assert cli.exit_code == 2 and "'most' is neither a number nor 'auto'" in cli.output
