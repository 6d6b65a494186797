"""timm's published tables in the package (tunekit.timm_table), the script that builds them, `tunekit models`,
the prior's check against the transferability benchmark, and the dry run's cost estimate."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tunekit.cli import main
from tunekit.timm_table import COLUMNS, ModelRow, load, pareto, source

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_has_a_row_per_tag_and_finds_names_as_timm_does():
    table = load()
    assert len(table) == source()["rows"] == len({r.model for r in table.rows})  # one row per tag, no repeats
    assert source()["commit"] and "Apache-2.0" in source()["licence"]
    row = table.find("resnet50.tv_in1k")
    assert row.top1 == pytest.approx(76.156) and row.img_size == 224 and row.pretrain == "in1k"
    assert table.find("convnext_tiny").default and table.find("convnext_tiny").arch == "convnext_tiny"
    assert table.find("convnext_tiny_in22k").model == "convnext_tiny.fb_in22k"  # a name timm renamed
    assert table.find("my_own_net") is None
    big = table.find("convnext_tiny.in12k_ft_in1k_384")  # inference was measured at 384 too, training at 224 only
    assert big.img_size == 384 and big.infer_samples_per_s < table.find("convnext_tiny").infer_samples_per_s
    assert big.train_samples_per_s is None  # blank, not the 224 px figure
    odd = table.find("convnext_tiny.eupe_lvd1689m")  # 256 px: a size timm benchmarked convnext_tiny at in neither
    assert odd.img_size == 256 and odd.infer_samples_per_s is None and odd.train_samples_per_s is None


def test_the_pareto_front_is_every_row_nothing_beats_on_both():
    rows = load().select(img_size=224, max_params=30)
    front = pareto(rows)
    known = [r for r in rows if r.top1 is not None and r.infer_samples_per_s is not None]
    beaten = {r.model for r in known for o in known if o.top1 >= r.top1 and o.infer_samples_per_s
              >= r.infer_samples_per_s and (o.top1, o.infer_samples_per_s) != (r.top1, r.infer_samples_per_s)}
    assert {r.model for r in front} == {r.model for r in known} - beaten and len(front) >= 5


def test_tunekit_models_lists_filters_and_writes_a_space_the_dry_run_plans(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["models", "--pareto", "--img-size", "224", "--max-params", "30"])
    assert out.exit_code == 0, out.output
    listed = [line.split()[1] for line in out.output.splitlines() if line.startswith("* ")]
    assert listed and all(load().find(m).img_size == 224 and load().find(m).params_m <= 30 for m in listed)
    out = runner.invoke(main, ["models", "--name", "*convnext_tiny*", "--csv"])
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert out.exit_code == 0 and rows and set(COLUMNS) | {"pareto", "installed_timm", "in_installed_timm"} == set(rows[0])
    from importlib import metadata

    assert {r["installed_timm"] for r in rows} == {metadata.version("timm")}  # the timm the user has, whatever it is
    assert {r["in_installed_timm"] for r in rows} <= {"True", "False"}
    assert all("convnext_tiny" in r["model"] for r in rows)
    out = runner.invoke(main, ["models", "--pretrain", "in22k", "--top", "3", "--json"])
    assert [r["pretrain"].split("-")[0] for r in json.loads(out.stdout)] == ["in22k"] * 3
    space = tmp_path / "front.py"
    out = runner.invoke(main, ["models", "--pareto", "--img-size", "224", "--max-params", "30", "--space", str(space),
                               "--data", "planet"])
    assert out.exit_code == 0 and space.is_file(), out.output
    planned = runner.invoke(main, ["search", str(space), "--dry-run", "--storage-path", str(tmp_path / "runs")])
    assert planned.exit_code == 0, planned.output
    assert f"{4 * len(listed)} trial(s), searcher grid" in planned.output and "cost     about" in planned.output
    bad = runner.invoke(main, ["models", "--name", "no_such_model_anywhere"])
    assert bad.exit_code == 2 and "no pretrained tag passes these filters" in bad.output


def test_tunekit_models_answers_without_torch_or_pandas():
    code = ("import sys, time; t = time.perf_counter(); from tunekit.cli import main; "
            "main(['models', '--pareto', '--img-size', '224'], standalone_mode=False); "
            "print('heavy', [m for m in ('torch', 'timm', 'pandas', 'ray') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "heavy []" in out.stdout, out.stdout + out.stderr


def test_the_builder_leaves_blank_what_timm_tables_lack(tmp_path):
    """tools/build_timm_table.py on a folder of four small tables in timm's layouts: values where they are,
    blank where not, timm's older names mapped, a benchmark of another size not taken."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "results-imagenet.csv").write_text(
        "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
        "resnet50.tv_in1k,224,76.156,23.844,92.862,7.138,25.56,0.875,bilinear\n"
        "convnext_tiny.fb_in22k_ft_in1k,288,84.0,16.0,97.0,3.0,28.59,1.0,bicubic\n"
        "convnext_tiny.fb_in22k_ft_in1k,224,82.9,17.1,96.6,3.4,28.59,0.875,bicubic\n")
    (results / "model_metadata-in1k.csv").write_text(  # swin_small's bare name: its ms_in22k_ft_in1k weights
        "model,pretrain\nresnet50,in1k\nswin_small_patch4_window7_224,in1k\n")
    (results / "benchmark-infer-amp-nchw-pt0-cu0-gpu.csv").write_text(  # resnet50 at two sizes, the small one first
        "model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count,infer_gmacs,"
        "infer_macts\nresnet50,160,6000,1,256,25.56,2.1,5\nresnet50,224,3000,1,256,25.56,4.1,11\n"
        "convnext_tiny,224,4800,1,256,28.59,4.5,13\n")
    (results / "benchmark-train-amp-nchw-pt0-cu0-gpu.csv").write_text(
        "model,train_samples_per_sec,train_step_time,train_batch_size,train_img_size,param_count\n"
        "convnext_tiny_in22ft1k,800,1,256,224,28.59\n")  # timm's older name of convnext_tiny.fb_in22k_ft_in1k
    spec = importlib.util.spec_from_file_location("build_timm_table", ROOT / "tools" / "build_timm_table.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    rows, src = builder.build(results, "abc123")
    by = {r["model"]: r for r in rows}
    assert src["commit"] == "abc123" and src["rows"] == len(rows) > 1000
    r50 = by["resnet50.tv_in1k"]
    assert (r50["top1"], r50["infer_samples_per_s"], r50["pretrain_source"]) == (76.156, 3000.0, "tag")
    assert r50["train_samples_per_s"] is None  # not in the training table: blank, not inferred
    tiny = by["convnext_tiny.fb_in22k_ft_in1k"]
    assert tiny["top1"] == 82.9 and tiny["top1_img_size"] == 224  # the row at its own size
    assert tiny["train_samples_per_s"] == 800.0  # through timm's renames
    assert by["convnext_tiny.fb_in22k_ft_in1k_384"]["infer_samples_per_s"] is None  # benchmarked at 224
    assert by["convnext_tiny.fb_in22k"]["top1"] is None and by["convnext_tiny.fb_in22k"]["pretrain"] == "in22k"
    assert by["resnet50.a1_in1k"]["infer_samples_per_s"] == 3000.0  # the row at its own size, of two
    assert by["coatnet_2_rw_224.sw_in12k_ft_in1k"]["pretrain"] == "in12k"  # 'sw' is a recipe, not a dataset
    swin = by["swin_small_patch4_window7_224.ms_in22k_ft_in1k"]  # the bare name's metadata said in1k: not these
    assert (swin["pretrain"], swin["pretrain_source"]) == ("in22k", "tag")
    assert by["vit_base_patch16_224.augreg_in21k"]["pretrain"] == "in22k"  # in21k is in22k, one dataset
    assert ModelRow(**{k: None for k in COLUMNS}) is not None  # every column a field


def test_the_prior_on_the_transferability_benchmark():
    """benchmarks/prior_check.py --sfda: ranking the 11 models by ImageNet top-1 alone agrees with their
    fine-tuned accuracy on the 11 datasets better than LogME's published mean (0.51)."""
    spec = importlib.util.spec_from_file_location("prior_check", ROOT / "benchmarks" / "prior_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    out = check.sfda(ROOT / "benchmarks" / "data" / "sfda_group1_finetune_top1.csv")
    assert out["models"] == 11 and len(out["per_dataset"]) == 11
    assert out["mean"]["prior"] > check.PUBLISHED["LogME"]
    assert out["mean"]["prior"] == pytest.approx(0.598, abs=0.01)  # benchmarks/RESULTS.md


def test_the_cost_estimate_adds_up(tmp_path):
    """seed_sweep's estimate by hand from the table: each model's trials x (training images x 5 unfrozen epochs /
    its training throughput + (training images x 1 frozen epoch + validation images x 6) / inference throughput),
    at 224 px (the table's size for these)."""
    from tunekit.estimate import estimate
    from tunekit.spec import load_spec

    spec = load_spec(ROOT / "search_spaces" / "seed_sweep.py")
    cost = estimate(spec)
    n_train, n_valid = cost.images
    assert (n_train, n_valid) == (5912, 1478)  # pets: 7,390 images, valid_pct 0.2
    by_hand, table = 0.0, load()
    for model in spec.values_of("model"):
        row = table.find(model)
        scale = lambda per_s, size: per_s * (size / 224) ** 2  # noqa: E731 - the table's size to the trials'
        infer = scale(row.infer_samples_per_s, row.infer_img_size)
        train = scale(row.train_samples_per_s, row.train_img_size) if row.train_samples_per_s else infer * cost.ratio
        by_hand += 12 * (n_train * 5 / train + (n_train * 1 + n_valid * 6) / infer)
    assert cost.gpu_hours == pytest.approx(by_hand / 3600, rel=1e-9) and cost.estimated == 1020
    assert "about 15.6 GPU-hours" in cost.line()
