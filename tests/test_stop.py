"""A search that ends early leaves nothing running: stopped because every trial fails alike, or stopped at
once by a second Ctrl-C; with and without W&B (offline), 50 trials each, in a process of its own so that
its Ray and its trackers' processes are counted before and after, as a user's machine would see them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from runs import ctrl_c
from wandb_files import read_runs

DRIVER = """
import sys

import tunekit.tuner.validate as validate
from tunekit.cli import main
from tunekit.tuner.trainable import FAULT_KEY

space, storage, fault = sys.argv[1:4]
load_spec = validate.load_spec


def with_fault(*args, **kwargs):  # the space as its file says, with a fault in every trial's setup
    spec = load_spec(*args, **kwargs)
    if fault != "none":
        spec.space[FAULT_KEY] = {"epoch": 0, "error": fault}
    return spec


validate.load_spec = with_fault
main(["search", space, "--storage-path", storage])  # the command, with its exit codes
"""

SPACE = """
from ray import tune
data = "shapes?n=120&size=16"
epochs = 3
num_samples = 50
searcher = "random"
space = {"model": "test_resnet", "pretrained": False, "batch_size": 16, "img_size": 16,
         "lr": tune.loguniform(1e-3, 1e-2)}
"""

WATCHED = ("ray::", "raylet", "gcs_server", "wandb", "dashboard", "log_monitor")


# every process the test's search starts inherits this (Ray's services and workers, W&B's service): a Ray or W&B
# of another job on the machine (a busy machine, a second suite) is not counted as the test's
MARK = f"TUNEKIT_TEST_STOP={uuid.uuid4().hex}".encode()


def watched_processes() -> dict[int, str]:
    """pid -> command line of every Ray and W&B process of this test's searches."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not any(w in cmdline for w in WATCHED) or MARK not in (entry / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        out[int(entry.name)] = cmdline.strip()
    return out


class PeakMemory(threading.Thread):
    """The largest resident memory (GiB) the processes not in ``before`` held at once, sampled twice a second:
    the search's driver, its Ray and its trackers."""

    def __init__(self, before: dict[int, str]) -> None:
        super().__init__(daemon=True)
        self.before, self.peak_gib, self.done = before, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            total = 0
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and int(entry.name) not in self.before:
                    try:
                        fields = (entry / "statm").read_text().split()
                        cmd = (entry / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if b"python" in cmd or any(w.encode() in cmd for w in WATCHED):
                        total += int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
            self.peak_gib = max(self.peak_gib, total / 2**30)


def left_behind(before: dict[int, str], grace_s: float = 20.0) -> dict[int, str]:
    """The watched processes that were not there before, once those on their way out have gone."""
    deadline = time.time() + grace_s
    while True:
        new = {p: c for p, c in watched_processes().items() if p not in before}
        if not new or time.time() > deadline:
            return new
        time.sleep(0.5)


def start(tmp_path: Path, fault: str, wandb: bool, asha: bool = True) -> subprocess.Popen:
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    (tmp_path / "space.py").write_text(textwrap.dedent(SPACE) + ("trackers = {'wandb': {'project': 'stop', "
                                                                 "'mode': 'offline'}}\n" if wandb else "")
                                       + ("" if asha else "asha = None\n"))
    key, value = MARK.decode().split("=")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", key: value}
    return subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "space.py"),
                             str(tmp_path / "runs"), fault], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=env)


@pytest.mark.parametrize(("wandb", "fault"), [(False, "runtime"), (True, "config")],
                         ids=["a user's error, retried, ASHA", "a configuration error, W&B offline, no ASHA"])
@pytest.mark.timeout(300)
def test_a_doomed_search_of_50_trials_ends_with_nothing_left_running(tmp_path, wandb, fault):
    """Every trial fails in its setup: a RuntimeError (a user's model that cannot be built: retried once, then
    final) under ASHA, or tunekit's own configuration error (not retried) under the plain FIFO scheduler; the
    search stops after its first slot-full (2 trials), the retries first."""
    before = watched_processes()
    memory = PeakMemory({int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()})
    memory.start()
    t0 = time.perf_counter()
    proc = start(tmp_path, fault, wandb, asha=not wandb)
    out = proc.communicate(timeout=240)[0]
    seconds = time.perf_counter() - t0
    memory.done.set()
    print(f"doomed search ({'W&B offline' if wandb else 'no tracker'}) ended in {seconds:.1f}s, peak memory of its "
          f"processes {memory.peak_gib:.2f} GiB:\n{out}")
    assert proc.returncode == 1, out
    assert "stopped: the first 2 trial(s) to end all failed with the same error" in out
    assert out.count("retried (1 of 1)") == (2 if fault == "runtime" else 0), out
    results = pd.read_csv(tmp_path / "runs" / "space" / "results.csv")
    assert (results["status"] == "errored").sum() == 2 and len(results) == 2, results["status"]  # none more made
    if wandb:  # the failed trials' W&B runs: closed, as errored
        trials = [r for r in read_runs(tmp_path / "runs" / "space" / "wandb") if r.job_type != "report"]
        assert len(trials) == 2 and all(r.exit_code == 1 and r.summary["status"] == "errored" for r in trials)
    assert left_behind(before) == {}


@pytest.mark.timeout(300)
def test_ctrl_c_twice_stops_at_once_with_nothing_left_running(tmp_path):
    """A second Ctrl-C stops now: results.csv, no report and no upload; the exit code 130; Ray's and W&B's
    processes gone. How long it took is printed (benchmarks/RESULTS.md has the figure)."""
    before = watched_processes()
    proc = start(tmp_path, "none", wandb=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if " epoch 1/" in line:  # the first trials are training (their W&B runs open)
            break
    t0 = time.perf_counter()
    ctrl_c(proc, seen, 2, group=True)
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    seconds = time.perf_counter() - t0
    print(f"Ctrl-C twice: the search ended {seconds:.1f}s after the first one:\n{out}")
    assert proc.returncode == 130, out
    assert "stopped at once (a second Ctrl-C): results.csv written" in out, out
    run = tmp_path / "runs" / "space"
    assert (run / "results.csv").is_file() and not (run / "report.html").exists()
    wandb_runs = read_runs(run / "wandb")  # the open trials' W&B runs: closed, as unfinished
    assert wandb_runs and all(r.exit_code is not None for r in wandb_runs), [(r.name, r.exit_code) for r in wandb_runs]
    assert left_behind(before) == {}
