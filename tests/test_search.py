"""Searches on a real local Ray: trials, ASHA, TensorBoard files and server, Optuna, resume. The grid search most
tests read is conftest's ``grid_run`` (test_export exports its winners)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch
from ray import tune
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from tunekit.errors import TunekitError
from tunekit.tuner import search


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_address_auto_joins_a_ray_start_cluster_never_another_processes_local_ray(monkeypatch, tmp_path):
    from ray._private.services import get_ray_address_from_environment

    from tunekit.tuner.session import resolve_auto

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # Ray's temp folder, where `ray start` leaves its address
    # this module's Ray is a private local one, as another search's own is: Ray's own "auto" would join it
    assert get_ray_address_from_environment("auto", None) is not None
    with pytest.raises(TunekitError, match=r"^--address auto: no Ray cluster to join \(no 'ray start' cluster on "
                                           r"this machine\); start one with 'ray start --head'"):
        resolve_auto()
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")  # a cluster since gone
    with pytest.raises(TunekitError, match=r"^--address auto: no Ray cluster to join \(the 'ray start' cluster "
                                           r"last started here, at 127.0.0.1:9, does not answer\)"):
        resolve_auto()
    monkeypatch.setenv("RAY_ADDRESS", "")  # empty: unset, as Ray reads it
    with pytest.raises(TunekitError, match=r"no Ray cluster to join \(the 'ray start' cluster last started"):
        resolve_auto()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # Ray's variable names the cluster, as Ray reads it
    with pytest.raises(TunekitError, match=r"^--address auto: no Ray cluster to join \(RAY_ADDRESS=127.0.0.1:9 does "
                                           r"not answer\)"):
        resolve_auto()
    live = ray.get_runtime_context().gcs_address
    monkeypatch.setenv("RAY_ADDRESS", live)
    assert resolve_auto() == live


def space_file(tmp_path: Path, data: str, body: str, name: str = "small.py") -> Path:
    path = tmp_path / name
    path.write_text(f"from ray import tune\ndata = {data!r}\n" + textwrap.dedent(body))
    return path


def test_search_runs_every_trial_and_summarizes(grid_run):
    # Ray's switches (no automatic loggers, quiet output) held for the search only: a Tuner the caller
    # builds next keeps Ray's defaults
    assert grid_run.environ_after == {}
    # and Ctrl-C as it was: Ray's handler, left in place by a search that ended by itself, would swallow
    # the caller's next Ctrl-C
    assert grid_run.sigint_kept
    df = grid_run.trials
    assert len(df) == 4 and set(df["pool"]) == {"avg", "concat"} and set(df["lr"]) == {0.01, 1e-6}
    assert not (df["status"] == "errored").any()
    assert (df["epochs_run"] >= 1).all() and (df["epochs_run"] <= 3).all()
    assert set(df["device"]) == {"cpu"}
    text = "\n".join(grid_run.lines)
    assert "start    test_resnet" in text and "best 4 by error_rate at each trial's last epoch" in text
    # the table ranks each trial's final error rate, the number the report ranks too
    best = text.split("best 4 by error_rate")[1].splitlines()[2]
    assert best.split()[0] == "1" and f"{df['error_rate'].min():.4g}" in best.split()
    assert f"tensorboard --logdir {grid_run.path}" in text
    run = grid_run.path
    # 4 trials: the event stream on screen (auto), and every event in events.log too
    events = (run / "events.log").read_text().splitlines()
    assert [e for e in events if " start " in e] and sum("done:" in e for e in events) == 4
    assert all(e in grid_run.lines for e in events)
    assert (run / "search_space.py").is_file()
    spec = json.loads((run / "tunekit_spec.json").read_text())
    assert spec["space"]["pool"] == {"grid_search": ["avg", "concat"]}
    for trial in df["path"]:
        assert not list(Path(trial).glob("checkpoint_*"))  # removed when the trial ended
        info = json.loads((Path(trial) / "tunekit_run.json").read_text())
        assert info["device"] == "cpu" and info["resources"]["CPU"] == 1.0
        assert list(info["start_phases"]) == ["setup", "device", "data", "model", "first_step"]
    # where the trials' start went, each phase's median over the trials (the worker's: the driver's view)
    (phases,) = [line for line in grid_run.lines if line.startswith("trial start phases")]
    runs = len(grid_run.start_phases)  # a trial promoted from a rung starts again
    assert runs >= 4 and all(p["worker"] >= 0 for p in grid_run.start_phases)
    assert phases.startswith(f"trial start phases, median s over {runs}: worker ") and "first step" in phases


def test_tensorboard_files_hold_metrics_and_hparams(grid_run):
    for _, row in grid_run.trials.iterrows():
        acc = EventAccumulator(row["path"])
        acc.Reload()
        scalars = acc.Tags()["scalars"]
        assert {"error_rate", "valid_loss", "train_loss", "fit_time", "images_per_s", "lr"} <= set(scalars)
        steps = [e.step for e in acc.Scalars("error_rate")]
        assert steps == list(range(1, row["epochs_run"] + 1))
        assert acc.Scalars("error_rate")[-1].value == pytest.approx(row["error_rate"])
        start = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        hparams = {k: v.string_value or v.number_value for k, v in start.session_start_info.hparams.items()}
        assert hparams["model"] == row["model"] and hparams["lr"] == pytest.approx(row["lr"])
        assert "final/error_rate" in scalars


def test_tensorboard_server_serves_the_scalars(grid_run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(grid_run.path), "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, tags = time.time() + 180, {}
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.loads(r.read())
                if len(tags) >= 4 and all("error_rate" in t for t in tags.values()):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert len(tags) == 4 and all("error_rate" in t for t in tags.values()), tags
        run = next(iter(tags))
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?tag=error_rate&run={urllib.request.quote(run)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            points = json.loads(r.read())
        assert [p[1] for p in points][0] == 1  # (wall_time, step, value) rows, from epoch 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("resume", [False, True])
def test_rerunning_a_finished_search_says_so_and_starts_no_trial(grid_run, resume):
    lines: list[str] = []
    spec = grid_run.path / "search_space.py"
    before = sorted(p.name for p in grid_run.path.glob("run_trial_*"))
    again = search(spec, storage_path=grid_run.path.parent, name=grid_run.path.name, resume=resume,
                   echo=lines.append)
    assert sorted(p.name for p in grid_run.path.glob("run_trial_*")) == before
    assert not any(" start " in line for line in lines)
    assert lines[0].startswith("search 'small' already finished on ") and "4 trial(s)" in lines[0]
    assert lines[-1].startswith("to search again: --name NEW, or --restart")
    pd.testing.assert_series_equal(again.trials.set_index("trial")["error_rate"].sort_index(),
                                   grid_run.trials.set_index("trial")["error_rate"].sort_index())
    plan = search(spec, storage_path=grid_run.path.parent, name=grid_run.path.name, dry_run=True,
                  echo=lines.append)
    assert plan.finished and "(already finished)" in "\n".join(lines)


def test_restart_moves_the_old_search_aside(small_shapes, tmp_path):
    body = """
    epochs = 1
    asha = None
    space = {"model": "test_resnet", "pretrained": False, "batch_size": 32, "img_size": 32}
    """
    space = space_file(tmp_path, f"folder:{small_shapes}", body)
    lines: list[str] = []

    def ctrl_c_once_ray_stopped(line: str) -> None:  # a Ctrl-C between Ray's end and the report: stop now
        lines.append(line)
        if line.startswith("search ended after"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(space, storage_path=tmp_path / "runs", echo=ctrl_c_once_ray_stopped)
    assert any(line.startswith("stopped at once (a second Ctrl-C): results.csv written") for line in lines), lines
    first = pd.read_csv(tmp_path / "runs" / "small" / "results.csv")
    assert not (tmp_path / "runs" / "small" / "report.md").exists()
    lines.clear()
    again = search(space, storage_path=tmp_path / "runs", restart=True, echo=lines.append)
    (old,) = (tmp_path / "runs").glob("small.old-*")
    assert lines[0] == f"moved the previous search aside: {old}"
    assert sorted(p.name for p in old.glob("run_trial_*")) == [Path(p).name for p in first["path"]]
    assert len(again.trials) == 1 and again.trials["status"].tolist() == ["completed"]
    with pytest.raises(TunekitError, match="--resume and --restart contradict each other"):
        search(space, storage_path=tmp_path / "runs", restart=True, resume=True)


def test_resume_refuses_a_different_space_or_a_missing_run(grid_run, tmp_path):
    changed = tmp_path / "changed.py"
    changed.write_text((grid_run.path / "search_space.py").read_text().replace("0.01", "0.02"))
    with pytest.raises(TunekitError, match="made from a different space; use another --name, or --restart"):
        search(changed, storage_path=grid_run.path.parent, name=grid_run.path.name)
    lines: list[str] = []  # a dry run still plans, and says what a real run would do
    plan = search(changed, storage_path=grid_run.path.parent, name=grid_run.path.name, dry_run=True,
                  echo=lines.append)
    assert plan.trials == 4 and not plan.resume
    assert any("a real run under this name is refused" in line for line in lines)
    with pytest.raises(TunekitError, match="there is no search named 'nope'"):
        search(changed, storage_path=tmp_path, name="nope", resume=True)


def test_optuna_searcher(small_shapes, tmp_path):
    body = """
    epochs = 1
    num_samples = 3
    searcher = "optuna"
    asha = None
    space = {"model": "test_resnet", "lr": tune.loguniform(1e-4, 1e-2), "pool": tune.choice(["avg", "concat"]),
             "pretrained": False, "batch_size": 32, "img_size": 32}
    """
    result = search(space_file(tmp_path, f"folder:{small_shapes}", body), storage_path=tmp_path / "runs",
                    echo=lambda line: None)
    assert len(result.trials) == 3 and (result.trials["status"] == "completed").all()
    assert result.trials["lr"].nunique() == 3  # proposed by TPE, all within bounds
    assert result.trials["lr"].between(1e-4, 1e-2).all()


def test_max_concurrent_runs_one_at_a_time_and_compile_auto_decides_on_measured_steps(small_shapes, tmp_path):
    """Two CPUs would fit two trials; max_concurrent = 1 runs them one after the other. With compile = "auto"
    the measurement stage times the network's eager and compiled steps and its compiles on this CPU before the
    trials (in a process of its own, with a trial's threads), each trial decides on those numbers for the work
    it is expected to do and says so, and a trial with the machine to itself records its own steady step."""
    from tunekit.device import machine_id
    from tunekit.machine import Book, StepKey

    body = """
    epochs = 2
    num_samples = 2
    searcher = "random"
    max_concurrent = 1
    asha = None
    space = {"model": "test_resnet", "lr": tune.loguniform(1e-3, 1e-2), "pretrained": False, "batch_size": 16,
             "img_size": 16, "compile": "auto"}
    """
    lines: list[str] = []
    result = search(space_file(tmp_path, f"folder:{small_shapes}", body), storage_path=tmp_path / "runs",
                    echo=lines.append)
    spans = []
    for trial in map(Path, result.trials["path"]):
        started = json.loads((trial / "tunekit_run.json").read_text())["started"]
        last = json.loads((trial / "result.json").read_text().splitlines()[-1])
        spans.append((started, started + last["time_total_s"]))
    (first_start, first_end), (second_start, _) = sorted(spans)
    assert len(spans) == 2 and second_start > first_end - 0.1, spans
    out = "\n".join(lines)
    assert "measuring eager and compiled steps, compiles of 1 network(s) on this machine's CPU" in out, out
    assert re.search(r"compile  test_resnet b16 16px fp32: step [\d.]+ ms eager, [\d.]+ ms compiled; compiles "
                     r"[\d.]+s \(warm cache", out), out
    # 192 training images: 12 steps an epoch, 24 in all; far from paying for a compile
    for why in result.trials["compile_why"]:
        assert re.fullmatch(r"auto: eager \(2 epoch\(s\), 24 train steps: compiled would save -?[\d.]+s against "
                            r"[\d.]+s of compiles, warm cache\)", why), why
    assert "compile=auto: 0 trial(s) compiled, 2 eager" in out
    book = Book(machine_id(torch.device("cpu")))
    assert book.get(StepKey("test_resnet", 16, 16, "fp32", compile=True))["cache"] == "warm"
    assert book.get(StepKey("test_resnet", 16, 16, "fp32"))["run_train_s"] > 0  # the trials had the CPUs alone


def test_failed_trial_is_retried_from_its_checkpoint(small_shapes, tmp_path):
    from tunekit.spec import load_spec
    from tunekit.tuner.trainable import FAULT_KEY

    body = """
    epochs = 3
    asha = None
    space = {"model": "test_resnet", "pretrained": False, "batch_size": 32, "img_size": 32}
    """
    spec = load_spec(space_file(tmp_path, f"folder:{small_shapes}", body))
    marker = tmp_path / "fault-fired"
    spec.space[FAULT_KEY] = {"epoch": 2, "marker": str(marker)}
    result = search(spec, storage_path=tmp_path / "runs", echo=lambda line: None)
    assert marker.is_file()  # the trial really failed once, after epoch 2
    (row,) = result.trials.to_dict("records")
    assert row["status"] == "completed" and row["epochs_run"] == 3
    progress = pd.read_csv(Path(row["path"]) / "progress.csv")
    assert progress["epoch"].tolist() == [1, 2, 3]  # continued after epoch 2, not from scratch


def test_finished_search_writes_its_report(grid_run):
    run = grid_run.path
    for name in ("report.md", "report.html", "results.csv", "ranking.csv", "error_vs_fit_time_single.png",
                 "learning_curves.png"):
        assert (run / name).is_file(), name
    results = pd.read_csv(run / "results.csv")
    assert len(results) == 4 and set(results["status"].str.split(" ").str[0]) <= {"completed", "stopped"}
    ranking = pd.read_csv(run / "ranking.csv")
    assert ranking["model"].tolist() == ["test_resnet"] and ranking["rank"].tolist() == [1]
    acc = EventAccumulator(str(run / "tunekit_report"))
    acc.Reload()
    assert any("error rate against fit time" in tag for tag in acc.Tags()["images"])  # plots in TensorBoard


def test_python_api_can_search_twice(tmp_path, small_shapes):
    """tunekit.search stays the function after the search machinery has been imported."""
    import tunekit

    body = """
    space = {"model": "test_resnet", "pretrained": False, "batch_size": 32, "img_size": 32, "epochs": 1}
    """
    for name in ("one", "two"):
        plan = tunekit.search(space_file(tmp_path, f"folder:{small_shapes}", body), name=name,
                              storage_path=tmp_path, dry_run=True, echo=lambda line: None)
        assert plan.trials == 1
    assert callable(tunekit.search)


def test_out_of_memory_errors_one_trial_with_advice_and_the_search_goes_on(small_shapes, tmp_path):
    from tunekit.spec import load_spec
    from tunekit.tuner.trainable import FAULT_KEY

    body = """
    epochs = 2
    asha = None
    max_failures = 0
    space = {"model": "test_resnet", "pretrained": False, "batch_size": 32, "img_size": 32}
    """
    spec = load_spec(space_file(tmp_path, f"folder:{small_shapes}", body))
    spec.space[FAULT_KEY] = tune.grid_search([None, {"epoch": 1, "error": "oom"}])  # the second runs out
    lines: list[str] = []
    result = search(spec, storage_path=tmp_path / "runs", echo=lines.append)
    rows = result.trials.sort_values("status").to_dict("records")
    assert [r["status"] for r in rows] == ["completed", "errored"]
    error = rows[1]["error"]
    assert error.startswith("tunekit.tuner.trainable.TrialOutOfMemory: out of memory: test_resnet at batch_size 32, "
                            "img_size 32, 0 GPU per trial: lower batch_size, raise gpus_per_trial"), error
    assert "CUDA out of memory" in error  # torch's own words kept
    kept = (Path(rows[1]["path"]) / "error.txt").read_text()
    assert "trainable.py\", line" in kept and "in _maybe_fault" in kept  # the traceback stays in the trial folder
    # said as it happened, with the error (max_failures = 0: no retry)
    assert any("failed in epoch 2: TrialOutOfMemory: out of memory: test_resnet" in line and "; errored (traceback: "
               in line for line in lines), lines
    report = (result.path / "report.md").read_text()
    assert "out of memory: test_resnet at batch_size 32" in report


def test_a_search_whose_trials_all_fail_says_why_without_a_traceback(small_shapes, tmp_path, capfd, monkeypatch):
    """Every trial fails at its setup (an error in the user's model code, which no up-front check can see):
    one summary naming the error and the folder of its traceback, results.csv still written, exit code 1; a
    re-run says the same."""
    from click.testing import CliRunner

    import tunekit.tuner.validate as validate
    from tunekit.cli import main
    from tunekit.tuner.trainable import FAULT_KEY

    load_spec = validate.load_spec

    def with_fault(*args, **kwargs):  # the space as its file says, with a fault in every trial's setup
        spec = load_spec(*args, **kwargs)
        spec.space[FAULT_KEY] = {"epoch": 0, "error": "runtime"}
        return spec

    monkeypatch.setattr(validate, "load_spec", with_fault)
    body = """
    epochs = 2
    max_failures = 0
    space = {"model": "test_resnet", "pretrained": False, "batch_size": 32, "img_size": 32,
             "lr": tune.grid_search([0.01, 0.02])}
    """
    space = space_file(tmp_path, f"folder:{small_shapes}", body, name="failing.py")
    args = ["search", str(space), "--storage-path", str(tmp_path / "runs")]
    for attempt in ("first", "re-run"):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (attempt, result.output)
        logged = capfd.readouterr().err  # Ray's own log of each failure too
        assert "Traceback" not in result.output + logged and "KeyError" not in result.output, (attempt, result.output)
        assert "2 of 2 trial(s) failed:" in result.output, (attempt, result.output)
        assert "2 x RuntimeError: injected fault after epoch 0" in result.output, result.output
        shown = result.output.split("full traceback: ")[1].split()[0]
        assert Path(shown).name == "error.txt" and 'trainable.py", line' in Path(shown).read_text()
    print(result.output)
    results = pd.read_csv(tmp_path / "runs" / "failing" / "results.csv")
    assert len(results) == 2 and set(results["status"]) == {"errored"}


def test_a_search_that_cannot_succeed_stops_after_its_first_failures(small_shapes, tmp_path):
    """Every trial fails in its setup with tunekit's own configuration error: not retried (the same in every
    attempt), each failure said as it happens, and the search stops once its first slot-full (2 trials) has
    failed alike, leaving the rest unstarted; the grouped summary and exit code 1, as when all fail."""
    from tunekit.spec import load_spec
    from tunekit.tuner.trainable import FAULT_KEY

    body = """
    epochs = 2
    num_samples = 12
    searcher = "random"
    space = {"model": "test_resnet", "pretrained": False, "batch_size": 32, "img_size": 32,
             "lr": tune.loguniform(1e-3, 1e-2)}
    """
    spec = load_spec(space_file(tmp_path, f"folder:{small_shapes}", body, name="doomed.py"))
    spec.space[FAULT_KEY] = {"epoch": 0, "error": "config"}  # in every trial's setup, every attempt
    lines: list[str] = []
    result = search(spec, storage_path=tmp_path / "runs", echo=lines.append)
    statuses = result.trials["status"].value_counts().to_dict()
    assert statuses.get("errored") == 2 and result.not_started == 10, statuses  # the searcher made no more
    assert result.doomed and result.failed
    text = "\n".join(lines)
    assert text.count("failed in setup: TunekitError: injected configuration error after epoch 0; not retried") == 2
    assert "retried (1 of 1)" not in text  # max_failures = 1, yet a configuration error is not retried
    assert "stopped: the first 2 trial(s) to end all failed with the same error" in text, text
    assert "--resume" not in text.split("stopped: ")[1]  # continuing would fail alike
    events = (result.path / "events.log").read_text()
    assert events.count("failed in setup") == 2
    # run again, it says what happened (the same spec: the injected fault is not in the file); --resume is
    # refused, since the rest was never made and would fail alike
    lines.clear()
    again = search(spec, storage_path=tmp_path / "runs", echo=lines.append)
    assert again.failed and "was stopped on" in lines[0] and "--restart" in lines[-1], lines
    with pytest.raises(TunekitError, match="stopped because its first trials all failed with 'tunekit.errors"):
        search(spec, storage_path=tmp_path / "runs", echo=lines.append, resume=True)
