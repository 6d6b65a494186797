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
