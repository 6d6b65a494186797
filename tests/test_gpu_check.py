"""benchmarks/gpu_check.py, the GPU acceptance run, in its CPU mode: every step a user's command, tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "gc"
    # --jobs 2: the search's lane beside the other steps (the CPU mode's figures are not what is checked)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--out",
                           str(out), "--jobs", "2"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in record["steps"]}
    assert list(steps) == ["doctor", "train_cnn", "train_vit", "search", "bench", "study_fit", "sweep", "rank",
                           "export", "predict", "evaluate"]
    assert {s["status"] for s in steps.values()} == {"ok"}, {n: s["status"] for n, s in steps.items()}
    assert steps["train_cnn"]["figures"]["device"] == "cpu" and steps["train_vit"]["figures"]["epochs"] == 2
    search = steps["search"]["figures"]
    assert search["trials"] == 4 and search["devices"] == ["cpu"] and "errored" not in search["statuses"]
    assert set(search["start_phases"]) == {"worker", "setup", "device", "data", "model", "first_step"}
    # benchmarks/gpu_sweep.py's tiny mode: 4 trials (1 backbone x pool x lr) through tunekit search, and the same
    # 4 bare, timed
    sweep = steps["sweep"]["figures"]
    assert sweep["trials"] == 4 and sweep["tunekit_s"] > 0 and sweep["bare_sum_s"] > 0
    # the figures are each rounded to 2 decimals before they are stored: the ratio agrees with the stored times
    # within what that rounding can move it (0.005 of its own, and 0.005 s in each time), on any machine's speed
    t, b = sweep["tunekit_s"], sweep["bare_sum_s"]
    assert abs(sweep["ratio"] - t / b) <= 0.005 + 0.005 * (1 + t / b) / b + 1e-9, sweep
    assert steps["bench"]["figures"]["test_resnet"]["loop_over_ceiling"] > 0
    # `tunekit bench --pack 1,2`: two trials trained at once, in their own processes, each measured
    packing = steps["bench"]["figures"]["packing"]
    assert set(packing) == {"1", "2"} and all(row["images_per_s"] > 0 for row in packing.values())
    assert "packing 2 x test_resnet" in (out / "bench.log").read_text()
    assert steps["export"]["figures"]["trained_on"] == "cpu" and steps["predict"]["figures"]["images"] == 40
    assert 0 <= steps["evaluate"]["figures"]["error_rate"] <= 1
    assert set(steps["rank"]["figures"]) == {"test_resnet", "test_vit"}  # rank --method logme: both scored
    assert record["machine"]["torch"] and "11 of 11 steps ok" in done.stdout
