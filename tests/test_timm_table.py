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
    big = table.find("convnext_tiny.in12k_ft_in1k_384")  # the arch was benchmarked at 224 only: left blank
    assert big.img_size == 384 and big.infer_samples_per_s is None and big.train_samples_per_s is None
    assert table.find("convnext_tiny.in12k_ft_in1k").infer_samples_per_s > 0


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
    assert out.exit_code == 0 and rows and set(COLUMNS) | {"pareto", "installed_timm"} == set(rows[0])
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
    (results / "model_metadata-in1k.csv").write_text("model,pretrain\nresnet50,in1k\n")
    (results / "benchmark-infer-amp-nchw-pt0-cu0-gpu.csv").write_text(
        "model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count,infer_gmacs,"
        "infer_macts\nresnet50,224,3000,1,256,25.56,4.1,11\nconvnext_tiny,224,4800,1,256,28.59,4.5,13\n")
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
