"""A search that ends early leaves nothing running: stopped because every trial fails alike, or stopped at
once by a second Ctrl-C; with and without W&B (offline), 50 trials each, in a process of its own so that
its Ray and its trackers' processes are counted before and after, as a user's machine would see them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

DRIVER = """
import sys
from tunekit.spec import load_spec
from tunekit.tuner import search
from tunekit.tuner.trainable import FAULT_KEY

spec = load_spec(sys.argv[1])
if sys.argv[3] != "none":
    spec.space[FAULT_KEY] = {"epoch": 0, "error": sys.argv[3]}  # in every trial's setup, every attempt
try:
    result = search(spec, storage_path=sys.argv[2], echo=lambda line: print(line, flush=True))
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(130 if result.interrupted and not result.doomed else 1 if result.failed else 0)
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


def watched_processes() -> dict[int, str]:
    """pid -> command line of every Ray and W&B process on this machine."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(w in cmdline for w in WATCHED):
            out[int(entry.name)] = cmdline.strip()
    return out


def left_behind(before: dict[int, str], grace_s: float = 20.0) -> dict[int, str]:
    """The watched processes that were not there before, once those on their way out have gone."""
    deadline = time.time() + grace_s
    while True:
        new = {p: c for p, c in watched_processes().items() if p not in before}
        if not new or time.time() > deadline:
            return new
        time.sleep(0.5)


def start(tmp_path: Path, fault: str, wandb: bool) -> subprocess.Popen:
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    (tmp_path / "space.py").write_text(textwrap.dedent(SPACE) + ("trackers = {'wandb': {'project': 'stop', "
                                                                 "'mode': 'offline'}}\n" if wandb else ""))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "space.py"),
                             str(tmp_path / "runs"), fault], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=env)


@pytest.mark.parametrize("wandb", [False, True], ids=["no tracker", "wandb offline"])
@pytest.mark.timeout(300)
def test_a_doomed_search_of_50_trials_ends_with_nothing_left_running(tmp_path, wandb):
    before = watched_processes()
    t0 = time.perf_counter()
    proc = start(tmp_path, "config", wandb)
    out = proc.communicate(timeout=240)[0]
    seconds = time.perf_counter() - t0
    print(f"doomed search ({'W&B offline' if wandb else 'no tracker'}) ended in {seconds:.1f}s:\n{out}")
    assert proc.returncode == 1, out
    assert "stopped: the first 2 trial(s) to end all failed with the same error" in out
    results = pd.read_csv(tmp_path / "runs" / "space" / "results.csv")
    assert (results["status"] == "errored").sum() == 2 and len(results) <= 4, results["status"]
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
        if " start " in line or "start    " in line:
            break
    time.sleep(2.0)  # the first trials are training
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.perf_counter()
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    seconds = time.perf_counter() - t0
    print(f"Ctrl-C twice: the search ended {seconds:.1f}s after the first one:\n{out}")
    assert proc.returncode == 130, out
    assert "stopped at once (a second Ctrl-C): results.csv written" in out, out
    run = tmp_path / "runs" / "space"
    assert (run / "results.csv").is_file() and not (run / "report.html").exists()
    assert left_behind(before) == {}
