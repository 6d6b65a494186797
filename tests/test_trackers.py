"""A search logs to the real trackers, offline: a real MLflow tracking server on 127.0.0.1 (SQLite store in a
temp folder), read back with ``mlflow.MlflowClient``; W&B in offline mode, its run files read back with
W&B's own record type (tests/wandb_files.py). One ASHA search feeds both, through the CLI, as a user runs it;
restarted (once the tests that read it have), it gets new tracker runs, and stopped by two Ctrl-C's leaves
none running; then the server goes away in the middle of a last search (the module's last test: the server is
shared), which ends as if nothing happened. The tests run in the file's order."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from runs import ctrl_c
from wandb_files import read_runs

from tunekit.data.shapes import write_shapes

pytest.importorskip("mlflow", reason="the trackers' extras: pip install -e '.[test]' installs them")

ASHA = """
searcher = "grid"
asha = {"grace_period": 1, "reduction_factor": 2}
space = {"model": "test_resnet", "lr": tune.grid_search(LRS), "pretrained": False, "batch_size": 32, "img_size": 32}
"""
WANDB = """trackers = {"wandb": {"project": "from-the-file", "group": "pets", "mode": "offline"}}\n"""
REPORT = {"report.html", "report.md", "ranking.csv", "effects.csv", "results.csv"}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free port of 127.0.0.1 with a SQLite store; yields (uri, process)."""
    tmp = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                             "--artifacts-destination", str(tmp / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            # MLflow 3's server also starts 8 job-runner processes (~2 GB) a tracking test never uses
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start: " + (tmp / "server.log").read_text()[-2000:]) from None
            time.sleep(0.5)
    yield uri, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    log.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_shapes(tmp_path_factory.mktemp("data") / "shapes", n=600, size=32, seed=4)


def run_search(tmp: Path, data: Path, *options: str, env: dict | None = None, epochs: int = 4,
               wandb: bool = True, lrs: tuple = (0.02, 0.01, 1e-7, 1e-8)) -> subprocess.Popen:
    space = tmp / "asha.py"
    space.write_text(f"from ray import tune\ndata = 'folder:{data}'\nepochs = {epochs}\n"
                     + textwrap.dedent(ASHA).replace("LRS", repr(list(lrs))) + (WANDB if wandb else ""))
    args = [sys.executable, "-m", "tunekit.cli", "search", str(space), "--storage-path", str(tmp / "runs"),
            "--progress", "events", *options]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tracked(mlflow_server, data, tmp_path_factory):
    """The 4-trial ASHA search (one trial waits at a rung and is promoted) with --mlflow and --wandb. The restart
    test moves it aside (and adds parents to its experiment): the tests that read it come first in the file."""
    uri, _ = mlflow_server
    tmp = tmp_path_factory.mktemp("tracked")
    proc = run_search(tmp, data, "--mlflow", uri, "--wandb", "backbones")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    run = tmp / "runs" / "asha"
    return run, out, pd.read_csv(run / "results.csv"), uri


def expected_status(row) -> str:
    return f"{row.status} at epoch {row.epochs_run}" if row.status == "stopped early" else row.status


def params_of(trial: Path) -> dict:
    return json.loads((trial / "params.json").read_text())


def test_every_trial_is_one_mlflow_run_with_its_params_history_and_status(tracked):
    from mlflow import MlflowClient

    run, out, results, uri = tracked
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("asha")  # the search's name
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("tunekit.role") == "search"]
    trials = [r for r in runs if r.data.tags.get("tunekit.role") == "trial"]
    assert "promoted after epoch 1" in out  # a trial paused at the rung and went on: still one run
    assert sorted(r.data.tags["trial_folder"] for r in trials) == sorted(results["trial"])
    for row in results.itertuples():
        (mine,) = [r for r in trials if r.data.tags["trial_folder"] == row.trial]
        assert mine.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert mine.data.tags["status"] == expected_status(row) and mine.info.status == "FINISHED"
        assert mine.data.params == {k: str(v) for k, v in params_of(Path(row.path)).items()}
        progress = pd.read_csv(Path(row.path) / "progress.csv")
        history = client.get_metric_history(mine.info.run_id, "error_rate")
        assert [m.step for m in history] == progress["epoch"].tolist() == list(range(1, row.epochs_run + 1))
        assert [m.value for m in history] == pytest.approx(progress["error_rate"].tolist(), rel=1e-12)
        assert mine.data.metrics["fit_time"] == pytest.approx(row.fit_time, rel=1e-9)
    # the report, as artifacts of the search's run
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == REPORT
    best = results.loc[results["error_rate"].idxmin()]
    assert parent.data.metrics["best_error_rate"] == pytest.approx(best["error_rate"])
    assert parent.data.tags["best_trial"] == best["trial"] and parent.info.status == "FINISHED"
    assert f"tracked: MLflow {uri}/#/experiments/{experiment.experiment_id}" in out
    assert "View run" not in out  # MLflow's own line per run, kept off the search's output


def test_every_trial_is_one_wandb_run_grouped_under_the_search(tracked):
    run, out, results, _ = tracked
    runs = read_runs(run / "wandb")
    trials = [r for r in runs if r.job_type != "report"]
    (report,) = [r for r in runs if r.job_type == "report"]
    assert {r.project for r in runs} == {"backbones"}  # --wandb's project over the file's
    assert {r.group for r in runs} == {"pets"}  # the file's group
    assert len(trials) == len(results) == len({r.run_id for r in trials})  # the promoted trial: one run
    for row in results.itertuples():
        (mine,) = [r for r in trials if r.name.startswith("run_trial_") and row.trial.startswith(r.name + "_")]
        params = params_of(Path(row.path))
        assert {k: mine.config[k] for k in params} == params
        progress = pd.read_csv(Path(row.path) / "progress.csv")
        assert [h["epoch"] for h in mine.history] == progress["epoch"].tolist()
        assert [h["error_rate"] for h in mine.history] == pytest.approx(progress["error_rate"].tolist(), rel=1e-12)
        assert mine.tags == (expected_status(row),) and mine.summary["status"] == expected_status(row)
        assert mine.exit_code == 0  # finished, not left running
    assert {Path(p).name for p in report.artifacts} == REPORT
    assert report.summary["best_error_rate"] == pytest.approx(results["error_rate"].min())
    assert f"upload: wandb sync {run / 'wandb'}/offline-run-*" in out


class Trial:
    """What MlflowTracker reads of a Ray trial: its name, config, folder and last result."""

    def __init__(self, name: str, folder: Path, epoch: int) -> None:
        self.name, self.local_path = name, str(folder)
        self.config = {"model": "test_resnet", "lr": 0.01, "epochs": 3, "pretrained": False}
        self.last_result = {"epoch": epoch, "error_rate": 0.5}

    def __str__(self) -> str:
        return self.name


def test_a_resumed_search_goes_on_in_its_mlflow_runs(mlflow_server, tmp_path):
    """A search stopped and resumed (a new driver, new callbacks) logs into the runs it had: one parent, one
    run per trial, its metric history continued."""
    from mlflow import MlflowClient

    from tunekit.tracking import MlflowSettings
    from tunekit.tuner.trackers import MlflowTracker

    uri, _ = mlflow_server
    run_dir = tmp_path / "runs" / "resumed"
    trial = Trial("run_trial_abc12_00000", run_dir / "run_trial_abc12_00000_0_lr=0.01", epoch=1)
    settings = MlflowSettings(uri, "resumed")
    first = MlflowTracker(settings, "resumed", run_dir, "inst-1")
    first.setup()
    first.log_trial_start(trial)
    first.log_trial_result(1, trial, {"epoch": 1, "error_rate": 0.5})
    first.on_experiment_end([trial])  # stopped: the run is marked unfinished
    trial.last_result = {"epoch": 3, "error_rate": 0.3}
    second = MlflowTracker(settings, "resumed", run_dir, "inst-1")  # the same instance: --resume
    second.setup()
    second.log_trial_start(trial)
    for epoch, error in ((2, 0.4), (3, 0.3)):
        second.log_trial_result(epoch, trial, {"epoch": epoch, "error_rate": error})
    second.log_trial_end(trial)
    assert second.parent == first.parent
    client = MlflowClient(uri)
    runs = client.search_runs([second.experiment_id])
    (mine,) = [r for r in runs if r.data.tags.get("trial_name") == str(trial)]
    assert [(m.step, m.value) for m in client.get_metric_history(mine.info.run_id, "error_rate")] == [
        (1, 0.5), (2, 0.4), (3, 0.3)]
    assert mine.data.tags["status"] == "completed" and mine.info.status == "FINISHED"


def test_a_tracker_turned_off_mid_search_closes_its_runs_and_the_searchs_own(mlflow_server, tmp_path):
    """A tracker hook that fails (here: a result for a trial it never saw) turns the tracker off; what it had
    opened is closed on the server: the trial's run KILLED as unfinished, the search's parent run FAILED."""
    from mlflow import MlflowClient

    from tunekit.tracking import MlflowSettings
    from tunekit.tuner.trackers import Detached, MlflowTracker

    uri, _ = mlflow_server
    run_dir = tmp_path / "runs" / "off"
    seen, unseen = (Trial(f"run_trial_off_0000{i}", run_dir / f"run_trial_off_0000{i}_{i}", epoch=1) for i in (0, 1))
    lines: list[str] = []
    guard = Detached(MlflowTracker(MlflowSettings(uri, "off"), "off", run_dir, "inst-off"), "MLflow", lines.append)
    guard.setup()
    guard.on_trial_start(0, [], seen)
    guard.on_trial_result(1, [], unseen, {"epoch": 1, "error_rate": 0.5})
    guard.on_trial_result(1, [], seen, {"epoch": 1, "error_rate": 0.5})  # the tracker is off: not logged
    guard.close()
    assert len(lines) == 1 and lines[0].startswith("warning: MLflow: KeyError"), lines
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("off").experiment_id])
    states = {r.data.tags["tunekit.role"]: (r.info.status, r.data.tags.get("status")) for r in runs}
    assert states == {"search": ("FAILED", None), "trial": ("KILLED", "unfinished")}, states
    assert not client.get_metric_history([r for r in runs if r.data.tags["tunekit.role"] == "trial"][0].info.run_id,
                                         "error_rate")


def test_a_restarted_search_gets_a_new_parent_and_group_and_no_run_is_left_running(tracked, data):
    """The tracked search (to the end: the module's earlier tests read it first) again with --restart, stopped by
    one Ctrl-C; again, stopped at once by two: each search its own MLflow parent run (the old ones stay as they
    were) and W&B group, and every MLflow and W&B run of all three closed, none left RUNNING."""
    from mlflow import MlflowClient

    run, _, results, uri = tracked
    tmp = run.parent.parent  # the tracked search's space file and storage
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    args = ("--mlflow", uri, "--wandb", "again", "--name", run.name)

    def stopped(restart: tuple, signals: int) -> str:
        proc = run_search(tmp, data, *args, *restart, env=env, epochs=5, wandb=False, lrs=(0.02, 0.01))
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "epoch 1/5" in line:  # 4 epochs to go: the search is still running when the signals land
                ctrl_c(proc, seen, signals)
                break
        out = "".join(seen) + proc.communicate(timeout=180)[0]
        assert proc.returncode == 130, out
        return out

    stopped(("--restart",), 1)
    assert "stopped at once (a second Ctrl-C)" in stopped(("--restart",), 2)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(run.name)
    runs = client.search_runs([experiment.experiment_id])
    parents = sorted((r for r in runs if r.data.tags.get("tunekit.role") == "search"), key=lambda r: r.info.start_time)
    assert [r.info.status for r in parents] == ["FINISHED", "KILLED", "KILLED"]  # one per search, as it ended
    for parent in parents:  # each search's trial runs under its own parent, of its own instance
        mine = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert mine and {r.data.tags["tunekit.instance"] for r in mine} == {parent.data.tags["tunekit.instance"]}
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]) == len(results)
    assert not [r for r in runs if r.info.status == "RUNNING"], [(r.info.run_name, r.info.status) for r in runs]
    folders = [run, *sorted(run.parent.glob(f"{run.name}.old-*"))]
    groups = [{r.group for r in read_runs(f / "wandb")} for f in folders]
    assert len(folders) == 3 and all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3  # a group each
    # the last search's folder, then the moved-aside ones oldest first: the tracked search's group is its file's
    assert groups[1] == {"pets"} and "pets" not in groups[0] | groups[2]
    for folder in folders:
        wandb_runs = read_runs(folder / "wandb")
        assert wandb_runs and all(r.exit_code is not None for r in wandb_runs), [(r.name, r.exit_code) for r in wandb_runs]
    # --restart with a server that does not answer: refused before the old search is moved aside
    from click.testing import CliRunner

    from tunekit.cli import main

    refused = CliRunner().invoke(main, ["search", str(tmp / "asha.py"), "--storage-path", str(run.parent),
                                        "--name", run.name, "--restart", "--mlflow", "http://127.0.0.1:9"])
    assert refused.exit_code == 2 and "no MLflow server answers there" in refused.output, refused.output
    assert [run, *sorted(run.parent.glob(f"{run.name}.old-*"))] == folders


def test_a_tracker_server_that_goes_away_mid_search_warns_once_and_the_search_ends(mlflow_server, data, tmp_path,
                                                                                  monkeypatch):
    """Kill the MLflow server after the first epoch of two trials: one warning, both still end, exit 0."""
    uri, server = mlflow_server
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    proc = run_search(tmp_path, data, "--mlflow", uri, "--name", "gone", env=quick, epochs=2, wandb=False,
                      lrs=(0.02, 0.01))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "epoch 1/2" in line:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
            break
    out = "".join(seen) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("warning: MLflow")]
    assert len(warnings) == 1 and "the search goes on without it" in warnings[0], out
    results = pd.read_csv(tmp_path / "runs" / "gone" / "results.csv")
    assert len(results) == 2 and results["status"].isin(["completed", "stopped early"]).all()
    # seeing a finished search's results needs no tracker: with its server gone, it is reported all the same (the
    # command in this process: what it decides, not a fresh process, is checked)
    from click.testing import CliRunner

    from tunekit.cli import main

    for key, value in quick.items():
        monkeypatch.setenv(key, value)
    again = CliRunner().invoke(main, ["search", str(tmp_path / "asha.py"), "--storage-path", str(tmp_path / "runs"),
                                      "--progress", "events", "--mlflow", uri, "--name", "gone"])
    out = again.output
    assert again.exit_code == 0 and "already finished" in out and "no MLflow server" not in out, out
