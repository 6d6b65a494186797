"""The trackers at scale: a search of many short ASHA trials with no tracker, with W&B offline, and with MLflow (a
real ``mlflow server`` on 127.0.0.1), side by side: wall time, the peak number of W&B processes and of all the
search's processes, the peak memory of the search's processes and of its driver alone, and whether every trial
has one complete tracker run (config, per-epoch history as long as its progress.csv, a final status).

    python benchmarks/trackers_scale.py                  # 200 trials
    python benchmarks/trackers_scale.py --trials 120 --json trackers.json

The search: test_resnet from scratch on ``shapes?n=240`` at 16 px, batch 32, 3 epochs, ASHA grace 1 and
reduction 3 (most trials wait at the first rung, open, before they are stopped or promoted), random lr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = """
from ray import tune
data = "shapes?n=240&size=16"
epochs = 3
num_samples = {trials}
searcher = "random"
asha = {{"grace_period": 1, "reduction_factor": 3}}
space = {{"model": "test_resnet", "pretrained": False, "batch_size": 32, "img_size": 16,
         "lr": tune.loguniform(1e-3, 3e-2)}}
"""


class Sampler(threading.Thread):
    """Twice a second: the processes started since ``before`` (all, and W&B's own: a program named wandb*, not the
    driver whose options name it), their resident memory, and the driver's alone."""

    def __init__(self, before: set[int]) -> None:
        super().__init__(daemon=True)
        self.before, self.done = before, threading.Event()
        self.driver: int | None = None
        self.peak_all = self.peak_wandb = 0
        self.peak_gib = self.peak_driver_gib = 0.0

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self.done.wait(0.5):
            n_all = n_wandb = rss = 0
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) in self.before:
                    continue
                try:
                    program = Path((entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")).name
                    mine = int((entry / "statm").read_text().split()[1]) * page
                except OSError:
                    continue
                n_all += 1
                n_wandb += program.startswith("wandb")
                rss += mine
                if int(entry.name) == self.driver:
                    self.peak_driver_gib = max(self.peak_driver_gib, mine / 2**30)
            self.peak_all, self.peak_wandb = max(self.peak_all, n_all), max(self.peak_wandb, n_wandb)
            self.peak_gib = max(self.peak_gib, rss / 2**30)


def pids() -> set[int]:
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}


def search(space: Path, storage: Path, name: str, *options: str, env: dict | None = None) -> dict:
    sampler = Sampler(pids())
    sampler.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tunekit.cli", "search", str(space), "--storage-path",
                             str(storage), "--name", name, "--progress", "summary", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    sampler.driver = proc.pid
    stdout, stderr = proc.communicate(timeout=3600)
    wall = time.perf_counter() - t0
    sampler.done.set()
    if proc.returncode != 0:
        raise SystemExit(f"the {name} search failed:\n{stdout[-3000:]}{stderr[-3000:]}")
    warned = [line for line in (stdout + stderr).splitlines() if line.startswith("warning:")]
    return {"wall_s": round(wall, 1), "peak_processes": sampler.peak_all, "peak_wandb_processes": sampler.peak_wandb,
            "peak_memory_gib": round(sampler.peak_gib, 2), "peak_driver_gib": round(sampler.peak_driver_gib, 2),
            "warnings": warned}


def trials_of(run: Path) -> dict[str, int]:
    """trial folder -> epochs in its progress.csv."""
    import pandas as pd

    out = {}
    for trial in run.glob("run_trial_*"):
        progress = trial / "progress.csv"
        out[trial.name] = len(pd.read_csv(progress)) if progress.is_file() and progress.stat().st_size else 0
    return out


def check_wandb(run: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from wandb_files import read_runs

    runs = [r for r in read_runs(run / "wandb") if r.job_type != "report"]
    epochs = trials_of(run)
    by_name = {r.name: r for r in runs}
    complete = 0
    for folder, n in epochs.items():
        mine = next((r for name, r in by_name.items() if folder.startswith(name + "_")), None)
        if mine is not None and len(mine.history) == n and mine.exit_code is not None and mine.summary.get("status") \
                and mine.config.get("lr") is not None:
            complete += 1
    return {"trials": len(epochs), "wandb_runs": len(runs), "complete": complete}


def check_mlflow(uri: str, name: str, run: Path) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=5000)
            if r.data.tags.get("tunekit.role") == "trial"]
    epochs = trials_of(run)
    complete = sum(1 for r in runs if r.info.status != "RUNNING" and r.data.tags.get("status")
                   and len(client.get_metric_history(r.info.run_id, "error_rate")) == epochs.get(
                       r.data.tags.get("trial_folder"), -1))
    return {"trials": len(epochs), "mlflow_runs": len(runs), "complete": complete}


def mlflow_server(tmp: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                             "--artifacts-destination", str(tmp / "artifacts")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            return uri, proc
        except OSError:
            time.sleep(0.5)
    raise SystemExit("mlflow server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        space = tmp / "many.py"
        space.write_text(SPACE.format(trials=args.trials))
        record: dict = {"trials": args.trials}
        record["none"] = search(space, tmp / "runs", "none")
        record["wandb"] = search(space, tmp / "runs", "wandb", "--wandb", "scale",
                                 env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
        record["wandb"].update(check_wandb(tmp / "runs" / "wandb"))
        uri, server = mlflow_server(tmp)
        try:
            record["mlflow"] = search(space, tmp / "runs", "mlflow", "--mlflow", uri)
            record["mlflow"].update(check_mlflow(uri, "mlflow", tmp / "runs" / "mlflow"))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
    base = record["none"]["wall_s"]
    print(f"{args.trials} trials, ASHA (grace 1, reduction 3), 3 epochs, tiny models, on this machine")
    print(f"{'':8s}{'wall s':>8s}{'x none':>8s}{'peak procs':>11s}{'W&B procs':>10s}{'peak GiB':>9s}"
          f"{'driver GiB':>11s}  complete runs")
    for name in ("none", "wandb", "mlflow"):
        r = record[name]
        done = f"{r['complete']} of {r['trials']}" if "complete" in r else "-"
        print(f"{name:8s}{r['wall_s']:8.1f}{r['wall_s'] / base:8.2f}{r['peak_processes']:11d}"
              f"{r['peak_wandb_processes']:10d}{r['peak_memory_gib']:9.2f}{r['peak_driver_gib']:11.2f}  {done}")
        for line in r["warnings"]:
            print(f"          {line}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
