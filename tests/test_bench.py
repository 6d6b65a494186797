"""`tunekit bench` measures and records; speed itself is never asserted."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tunekit.cli import main


def test_bench_prints_and_records(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--models", "test_resnet", "--img-size", "32", "--batch-size", "32",
                                       "--n-images", "128", "--rounds", "1", "--device", "cpu", "--trial-start", "3",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "loop/ceiling" in result.output and "decode-once cache" in result.output
    (record,) = json.loads(out.read_text())
    assert set(record) == {"model", "device", "batch_size", "img_size", "precision", "ceiling_images_per_s",
                           "loop_images_per_s", "loop_ratio", "peak_mem_gib", "data_cache_images_per_s_per_core",
                           "data_pil_images_per_s_per_core", "packing", "trial_start_s", "compiled_images_per_s",
                           "loop_compiled_images_per_s", "compile_s"}
    assert record["compile_s"] is None  # measured with --compile (tests/test_compiled.py)
    assert record["model"] == "test_resnet" and record["device"] == "cpu" and record["precision"] == "fp32"
    for key in ("ceiling_images_per_s", "loop_images_per_s", "data_cache_images_per_s_per_core",
                "data_pil_images_per_s_per_core"):
        assert record[key] > 0
    # the table a user reads says what the record holds
    row = next(line for line in result.output.splitlines() if line.startswith("test_resnet "))
    assert row.split()[1:] == [f"{record['ceiling_images_per_s']:.0f}", f"{record['loop_images_per_s']:.0f}",
                               f"{record['loop_ratio']:.2f}", f"{record['peak_mem_gib']:.2f}"]
    assert record["packing"] is None  # --pack: tests/test_gpu_check.py (its bench step packs 1 and 2 trials)
    assert record["trial_start_s"] > 0 and "from a free trial slot to the trial's first training step" in result.output


def test_bench_rejects_unknown_models():
    result = CliRunner().invoke(main, ["bench", "--models", "test_resnett"])
    assert result.exit_code == 2 and "did you mean 'test_resnet'" in result.output
