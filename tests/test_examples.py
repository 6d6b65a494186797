"""Every script in examples/ runs, on tiny settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_train_folder_example(small_shapes):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_folder.py"), str(small_shapes), "--epochs", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1: error_rate" in proc.stdout
    assert "test_resnet on cpu (fp32), 192 train / 48 valid images, 6 classes" in proc.stdout


def run_example(name: str, *args: str, timeout: int = 400) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_search_folder_then_read_results(small_shapes, tmp_path):
    out = run_example("search_folder.py", str(small_shapes), "--models", "test_resnet", "--epochs", "1",
                      "--img-size", "32", "--storage-path", str(tmp_path))
    assert "best: test_resnet pool=" in out
    table = run_example("read_results.py", str(tmp_path / "folder_search"))
    rows = [line for line in table.splitlines() if line.startswith("run_trial_")]
    assert len(rows) == 2 and "best_error_rate" in table  # model (1) x pool (2) grid, lr sampled
    # the winner of that search, put to work on new images
    out = run_example("use_the_winner.py", str(tmp_path / "folder_search"))
    lines = [line for line in out.splitlines() if line.startswith("<image ")]
    assert len(lines) == 4 and "LoadedModel(test_resnet" in out and "the module: FineTuneModel" in out


def test_zero_init_study_example_on_tiny_settings(small_shapes, tmp_path):
    out = run_example("zero_init_study.py", "--set", f"data=folder:{small_shapes}", "--set", "model=test_resnet",
                      "--set", "epochs=1", "--set", "img_size=32", "--set", "gpus_per_trial=0",
                      "--set", "cpus_per_trial=1", "--set", "seed=0", "--storage-path", str(tmp_path))  # 2 trials
    assert "final error_rate by zero_init" in out and "zero_init on - off:" in out
