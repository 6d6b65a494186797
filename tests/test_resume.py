"""A search stopped with Ctrl-C, resumed, killed with SIGKILL, resumed: every trial exactly once, nothing lost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
from runs import epochs_of

from tunekit import runfolder
from tunekit.data.shapes import write_shapes

BODY = """
epochs = 4
searcher = "grid"
asha = None
max_concurrent = 1
space = {"model": "test_resnet", "lr": tune.grid_search([0.01, 0.005, 0.002]), "pretrained": False,
         "batch_size": 32, "img_size": 32}
"""


def tunekit(*args: str) -> subprocess.Popen:
    # Ray saves the experiment's state (which trials exist) every step here, not every 10 s or more: a trial
    # started since Ray's last save is not in it, and a search killed then runs that trial again from the start
    # in a new folder (benchmarks/RESULTS.md). The SIGKILL below lands once the save has the midway trial.
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    return subprocess.Popen([sys.executable, "-m", "tunekit.cli", "search", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)


def wait_for_progress(proc: subprocess.Popen, run: Path, done_at_least: int) -> tuple[list[Path], Path]:
    """Poll the run folder until ``done_at_least`` trials have every epoch and another is midway, in Ray's saved
    state."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        trials = sorted(run.glob("run_trial_*"))
        done = [t for t in trials if epochs_of(t) == [1, 2, 3, 4]]
        # 2 epochs or more to go when the signal lands
        mid = [t for t in trials if 1 <= len(epochs_of(t)) <= 2]
        if len(done) >= done_at_least and mid and mid[0].name in (runfolder.listed_trials(run) or ()):
            return done, mid[0]
        time.sleep(0.1)
    out = proc.communicate(timeout=60)[0] if proc.poll() is not None else "(still running)"
    raise AssertionError(f"the search never had {done_at_least} trial(s) done and one midway:\n{out}")


def test_ctrl_c_then_sigkill_then_resume_runs_every_trial_exactly_once(tmp_path):
    data = write_shapes(tmp_path / "data", n=600, size=32, seed=2)
    space = tmp_path / "kill.py"
    space.write_text(f"from ray import tune\ndata = 'folder:{data}'\n" + textwrap.dedent(BODY))
    run = tmp_path / "runs" / "kill"
    args = [str(space), "--storage-path", str(tmp_path / "runs"), "--name", "kill"]

    # 1. Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it)
    proc = tunekit(*args)
    (finished,), interrupted = wait_for_progress(proc, run, done_at_least=1)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 130, out
    assert "interrupted: " in out and "--name kill --resume" in out, out  # how to continue
    results = pd.read_csv(run / "results.csv")  # the report, written for what finished
    status = dict(zip(results["path"].map(lambda p: Path(p).name), results["status"]))
    assert status[finished.name] == "completed"
    assert status[interrupted.name].startswith("unfinished"), status
    assert (run / "report.md").is_file()
    assert list(interrupted.glob("checkpoint_*")), "the interrupted trial keeps its last checkpoint"
    kept = (finished / "progress.csv").read_bytes()
    epochs_before = epochs_of(interrupted)

    # 2. resumed, then SIGKILL of the driver and the local Ray it started, at once
    proc = tunekit(*args, "--resume")
    done, second = wait_for_progress(proc, run, done_at_least=2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert epochs_of(interrupted)[: len(epochs_before)] == epochs_before  # continued, not restarted
    epochs_second = epochs_of(second)
    # what a kill within Ray's save period leaves: a trial folder its saved state does not list (Ray runs that trial
    # again, in a new folder); the resume sets it aside instead of counting it a second time
    orphan = run / (second.name.rsplit("_", 2)[0] + "_2000-01-01_00-00-00")  # named as Ray names a trial's folder
    shutil.copytree(second, orphan)

    # 3. resumed to the end
    proc = tunekit(*args, "--resume")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "(resuming)" in out
    assert f"{orphan.name} is not in Ray's saved state of the search" in out, out
    assert not orphan.exists() and (run / "orphaned" / orphan.name / "params.json").is_file()
    assert not list((run / "orphaned" / orphan.name).glob("checkpoint_*"))  # never resumed: no disk kept for it
    trials = sorted(run.glob("run_trial_*"))
    assert len(trials) == 3  # every trial once: none duplicated, none lost
    assert all(epochs_of(t) == [1, 2, 3, 4] for t in trials), {t.name: epochs_of(t) for t in trials}
    report = pd.read_csv(run / "results.csv")  # the same set of trials as an uninterrupted search
    assert sorted(report["lr"]) == [0.002, 0.005, 0.01] and (report["status"] == "completed").all()
    assert (finished / "progress.csv").read_bytes() == kept  # a completed trial is untouched
    assert epochs_of(second)[: len(epochs_second)] == epochs_second
    assert "3 completed" in out
