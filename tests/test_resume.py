"""A search killed with SIGKILL midway, then resumed: every trial exactly once, nothing lost."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tunekit.data.shapes import write_shapes

BODY = """
epochs = 3
searcher = "grid"
asha = None
max_concurrent = 1
space = {"model": "test_resnet", "lr": tune.grid_search([0.01, 0.005, 0.002, 0.001]), "pretrained": False,
         "batch_size": 32, "img_size": 48}
"""


def epochs_of(trial: Path) -> list[int]:
    path = trial / "progress.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def tunekit(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tunekit.cli", "search", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_sigkill_then_resume_runs_every_trial_exactly_once(tmp_path):
    data = write_shapes(tmp_path / "data", n=1200, size=48, seed=2)
    space = tmp_path / "kill.py"
    space.write_text(f"from ray import tune\ndata = 'folder:{data}'\n" + textwrap.dedent(BODY))
    run = tmp_path / "runs" / "kill"
    proc = tunekit(str(space), "--storage-path", str(tmp_path / "runs"), "--name", "kill")
    deadline = time.time() + 240
    finished = interrupted = None
    while time.time() < deadline and proc.poll() is None:
        trials = sorted(run.glob("run_trial_*"))
        done = [t for t in trials if epochs_of(t) == [1, 2, 3]]
        mid = [t for t in trials if 1 <= len(epochs_of(t)) < 3]
        if done and mid:
            finished, interrupted = done[0], mid[0]
            break
        time.sleep(0.1)
    assert finished is not None, "the search never reached a state with one trial done and one midway"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started, at once
    proc.wait(timeout=30)
    kept = (finished / "progress.csv").read_bytes()
    epochs_before = epochs_of(interrupted)

    resumed = tunekit(str(space), "--storage-path", str(tmp_path / "runs"), "--name", "kill", "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "(resuming)" in out
    trials = sorted(run.glob("run_trial_*"))
    assert len(trials) == 4  # every trial once: none duplicated, none lost
    assert all(epochs_of(t) == [1, 2, 3] for t in trials), {t.name: epochs_of(t) for t in trials}
    assert (finished / "progress.csv").read_bytes() == kept  # a completed trial is untouched
    # the interrupted trial continued after its checkpointed epoch instead of starting over
    assert epochs_of(interrupted)[: len(epochs_before)] == epochs_before
    assert "4 completed" in out
