"""Tracker settings (tunekit.tracking) and the guard that keeps a tracker from holding up a search
(tuner.trackers.Detached): no Ray, no server. The real trackers are tests/test_trackers.py."""

from __future__ import annotations

import socket
import sys
import threading

import pytest
from click.testing import CliRunner

from tunekit.errors import TunekitError
from tunekit.tracking import check_ready, check_trackers, describe, wandb_mode, with_options


@pytest.mark.parametrize("value, message", [
    ("backbones", "trackers must be a dict"),
    ({"tensorboard": {}}, "unknown tracker 'tensorboard'"),
    ({"wandbb": {"project": "p"}}, "did you mean 'wandb'"),
    ({"wandb": "p"}, "trackers['wandb'] must be a dict such as {'project': ...}"),
    ({"wandb": {"projet": "p"}}, "unknown wandb key 'projet' (did you mean 'project'?)"),
    ({"wandb": {"project": ""}}, "trackers['wandb']['project'] must be a non-empty text"),
    ({"wandb": {"project": "p", "mode": "later"}}, "must be 'online' or 'offline', got 'later'"),
    ({"wandb": {"group": "g"}}, "trackers['wandb'] needs 'project' (or give it with --wandb)"),
    ({"mlflow": {"experiment": "e"}}, "trackers['mlflow'] needs 'tracking_uri' (or give it with --mlflow)"),
    ({"mlflow": {"tracking_uri": 5000}}, "trackers['mlflow']['tracking_uri'] must be a non-empty text"),
])
def test_bad_tracker_settings_are_named(value, message):
    with pytest.raises(TunekitError, match=None) as e:
        check_trackers(value, "space.py")
    assert message in str(e.value) and str(e.value).startswith("space.py: ")


def test_options_add_to_the_space_files_trackers():
    file = check_trackers({"wandb": {"project": "old", "group": "pets"}}, "s")
    merged = with_options(file, wandb="backbones", mlflow="http://127.0.0.1:5000")
    assert merged == {"wandb": {"project": "backbones", "group": "pets"},
                      "mlflow": {"tracking_uri": "http://127.0.0.1:5000"}}
    assert file["wandb"]["project"] == "old"  # not changed in place
    assert with_options(file, wandb=None, mlflow=None) == file
    line = describe(merged, "demo")
    assert "W&B project 'backbones' (group 'pets'" in line and "MLflow http://127.0.0.1:5000 (experiment 'demo'" in line


def test_wandb_mode_follows_the_setting_then_wandbs_own_variable(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode({}) == "online" and wandb_mode({"mode": "offline"}) == "offline"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode({}) == "offline" and wandb_mode({"mode": "online"}) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode({}) == "offline"


def test_a_tracker_that_is_not_installed_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: its import fails
    with pytest.raises(TunekitError) as e:
        check_ready({"wandb": {"project": "p"}})
    assert str(e.value) == ("--wandb: logging to Weights & Biases needs the wandb package, which is not installed: "
                            "pip install 'tunekit[wandb]'")


def test_an_mlflow_server_that_does_not_answer_fails_before_the_search():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TunekitError, match=rf"--mlflow http://127.0.0.1:{port}: no MLflow server answers there"):
        check_ready({"mlflow": {"tracking_uri": f"http://127.0.0.1:{port}"}}, timeout_s=2)
    check_ready({"mlflow": {"tracking_uri": "file:///tmp/mlruns"}})  # a local store: nothing to ask


def test_the_cli_refuses_a_missing_extra_with_one_line_and_exit_2_before_ray_starts(monkeypatch, tmp_path):
    import ray

    from tunekit.cli import main

    monkeypatch.setitem(sys.modules, "mlflow", None)
    result = CliRunner().invoke(main, ["search", "search_spaces/demo.py", "--mlflow", "http://127.0.0.1:9",
                                       "--storage-path", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["Error: --mlflow: logging to MLflow needs the mlflow package, which is not installed: "
                     "pip install 'tunekit[mlflow]'"]
    assert not ray.is_initialized() and not (tmp_path / "demo").exists()


def test_a_space_files_trackers_are_checked_with_the_file(tmp_path):
    from tunekit.spec import load_spec

    path = tmp_path / "s.py"
    path.write_text("space = {'model': 'test_resnet'}\ntrackers = {'mlflow': {'uri': 'http://x'}}\n")
    with pytest.raises(TunekitError, match=r"s.py: unknown mlflow key 'uri'"):
        load_spec(path)
    path.write_text("space = {'model': 'test_resnet'}\ntrackers = {'mlflow': {'tracking_uri': 'http://x'}}\n")
    assert load_spec(path).trackers == {"mlflow": {"tracking_uri": "http://x"}}
    assert load_spec(path).fingerprint() == load_spec(path, {"trackers": {}}).fingerprint()  # not what trials are


# ---- the guard ----------------------------------------------------------------------------------------


class Tracker:
    """A tracker callback whose results block until released (a slow server), or fail."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.release, self.logged, self.fail_on = threading.Event(), [], fail_on

    def setup(self, **info) -> None:
        pass

    def on_trial_result(self, iteration, trials, trial, result) -> None:
        if self.fail_on is not None and result["epoch"] == self.fail_on:
            raise ConnectionError("server gone")
        self.release.wait()
        self.logged.append(result["epoch"])

    def on_experiment_end(self, trials) -> None:
        pass


def detached(tracker: Tracker, lines: list[str], **kwargs):
    from tunekit.tuner.trackers import Detached

    guard = Detached(tracker, "MLflow", lines.append, **kwargs)
    guard.setup()
    return guard


def test_a_slow_tracker_does_not_hold_up_the_search():
    lines: list[str] = []
    tracker = Tracker()
    guard = detached(tracker, lines)
    for epoch in (1, 2, 3):  # each returns at once, though the tracker is stuck on the first
        guard.on_trial_result(epoch, [], "trial", {"epoch": epoch})
    assert tracker.logged == [] and not tracker.release.is_set()
    tracker.release.set()
    guard.on_experiment_end([])  # waits for the backlog, in order
    assert tracker.logged == [1, 2, 3] and lines == []


def test_a_failing_tracker_warns_once_and_is_left_out():
    lines: list[str] = []
    tracker = Tracker(fail_on=2)
    tracker.release.set()
    guard = detached(tracker, lines)
    for epoch in (1, 2, 3, 4):
        guard.on_trial_result(epoch, [], "trial", {"epoch": epoch})
    guard.on_experiment_end([])
    assert tracker.logged == [1]
    assert lines == ["warning: MLflow: ConnectionError: server gone; the search goes on without it (the run folder "
                     "has every result)"]


def test_a_backlog_too_long_or_a_drain_too_slow_turns_the_tracker_off():
    lines: list[str] = []
    tracker = Tracker()
    guard = detached(tracker, lines, backlog=2, drain_s=0.2)
    for epoch in (1, 2, 3, 4):
        guard.on_trial_result(epoch, [], "trial", {"epoch": epoch})
    assert lines == ["warning: MLflow: 2 events behind; the search goes on without it (the run folder has every "
                     "result)"]
    guard.on_experiment_end([])  # still stuck: the end does not wait past drain_s
    tracker.release.set()
    assert len(lines) == 1


class Quiet:
    def setup(self, **info) -> None:
        pass


def test_the_guard_pickles_without_its_thread():
    """Ray pickles the Tuner's callbacks (to restore them on a resume)."""
    import pickle

    guard = detached(Quiet(), [])
    copy = pickle.loads(pickle.dumps(guard))
    assert copy.thread is None and copy.calls is None and isinstance(copy.tracker, Quiet)
    guard.close()
