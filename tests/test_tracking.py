"""Tracker settings (tunekit.tracking) and the guard that keeps a tracker from holding up a search
(tuner.trackers.Detached): no Ray, no server. The real trackers are tests/test_trackers.py."""

from __future__ import annotations

import socket
import sys
import threading

import pytest
from click.testing import CliRunner

from tunekit.errors import TunekitError
from tunekit.tracking import check_ready, check_trackers, describe, reachability, resolve, with_options


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
    resolved, notes = resolve(merged, "demo", "/runs/demo", "20261202-101500-ab12")
    line = describe(resolved)
    assert "W&B project 'backbones' (group 'pets'" in line and "MLflow http://127.0.0.1:5000 (experiment 'demo'" in line
    assert notes == []


def test_the_defaults_are_set_once_and_wandbs_own_environment_is_respected(monkeypatch):
    """One home for a tracker's defaults: W&B's group is one per search instance (a --restart makes a new one);
    WANDB_MODE gives the mode where the space does not, and 'disabled' turns W&B off with a note; WANDB_DIR is
    where W&B writes, else the run folder."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    settings = {"wandb": {"project": "p"}, "mlflow": {"tracking_uri": "http://h:1"}}
    resolved, _ = resolve(settings, "demo", "/runs/demo", "inst1")
    w = resolved["wandb"]
    assert (w.group, w.mode, w.dir) == ("demo-inst1", "online", "/runs/demo") and resolved["mlflow"].experiment == "demo"
    assert resolve(settings, "demo", "/runs/demo", "inst2")[0]["wandb"].group == "demo-inst2"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", "/elsewhere")
    w = resolve(settings, "demo", "/runs/demo", "inst1")[0]["wandb"]
    assert (w.mode, w.dir) == ("offline", "/elsewhere")
    assert resolve({"wandb": {"project": "p", "mode": "online"}}, "d", "/r", "i")[0]["wandb"].mode == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    resolved, notes = resolve(settings, "demo", "/runs/demo", "inst1")
    assert "wandb" not in resolved and "mlflow" in resolved
    assert notes == ["note     WANDB_MODE=disabled: the search does not log to W&B (unset it to log)"]


def test_a_tracker_that_is_not_installed_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: its import fails
    resolved, _ = resolve({"wandb": {"project": "p", "mode": "offline"}}, "d", "/r", "i")
    with pytest.raises(TunekitError) as e:
        check_ready(resolved)
    assert str(e.value) == ("--wandb: logging to Weights & Biases needs the wandb package, which is not installed: "
                            "pip install 'tunekit[wandb]'")


def test_an_mlflow_uri_that_cannot_be_logged_to_fails_before_the_search_and_not_a_dry_run(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead, _ = resolve({"mlflow": {"tracking_uri": f"http://127.0.0.1:{port}"}}, "d", "/r", "i")
    with pytest.raises(TunekitError, match=rf"--mlflow http://127.0.0.1:{port}: no MLflow server answers there"):
        check_ready(dead, timeout_s=2)
    assert "no MLflow server answers there" in reachability(dead)[0]  # a dry run says so, and goes on
    refused, _ = resolve({"mlflow": {"tracking_uri": "not a uri at all"}}, "d", "/r", "i")
    with pytest.raises(TunekitError, match="--mlflow not a uri at all: MLflow does not take this tracking URI") as e:
        check_ready(refused)
    # one line, its first sentence whole (not cut mid-word), and what MLflow does take
    assert "\n" not in str(e.value) and str(e.value).endswith(
        "); give a server's http(s)://HOST:PORT or a database URI (sqlite:///PATH/mlflow.db)"), str(e.value)
    local, _ = resolve({"mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}}, "d", "/r", "i")
    assert reachability(local) == [f"  note     MLflow: sqlite:///{tmp_path / 'm.db'} is opened, and checked, when "
                                   f"the search starts"]
    assert not (tmp_path / "m.db").exists()  # a dry run writes no database
    check_ready(local)  # a store MLflow takes: nothing to refuse


def test_mlflow_filter_values_are_quoted():
    from tunekit.tuner.trackers import quoted

    assert quoted("run_trial_1") == "'run_trial_1'" and quoted("it's") == '"it\'s"'
    with pytest.raises(ValueError):
        quoted("both ' and " + '"')


def test_the_cli_refuses_a_missing_extra_with_one_line_and_exit_2_before_ray_starts(monkeypatch, tmp_path):
    import ray

    from tunekit.cli import main

    monkeypatch.setitem(sys.modules, "mlflow", None)
    result = CliRunner().invoke(main, ["search", "search_spaces/demo.py", "--mlflow", "http://127.0.0.1:9",
                                       "--storage-path", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == ("Error: --mlflow: logging to MLflow needs the mlflow package, which is "
                                              "not installed: pip install 'tunekit[mlflow]'")
    assert not ray.is_initialized() and not (tmp_path / "demo").exists()


def test_a_dead_server_does_not_block_a_dry_run(tmp_path):
    """--dry-run says where the trials would log and that the server does not answer now, and plans all the same."""
    from tunekit.cli import main

    result = CliRunner().invoke(main, ["search", "search_spaces/demo.py", "--dry-run", "--mlflow", "http://127.0.0.1:9",
                                       "--storage-path", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "trackers MLflow http://127.0.0.1:9 (experiment 'demo'" in result.output
    assert "MLflow: --mlflow http://127.0.0.1:9: no MLflow server answers there" in result.output


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
        self.ended: list[str] = []

    def end_open(self, status: str) -> None:
        self.ended.append(status)

    def abandon(self) -> None:  # turned off: closes what it opened (on a thread other than Ray's)
        self.ended.append(f"abandoned on {threading.current_thread().name}")

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
    threading.Timer(1.5, tracker.release.set).start()  # the server answers again after the search ended
    guard.on_experiment_end([])  # waits for the backlog, in order, and says so
    assert tracker.logged == [1, 2, 3] and len(lines) == 1
    assert lines[0].startswith("MLflow: writing what it has left (") and lines[0].endswith("event(s)), at most 30 s")


def test_a_failing_tracker_warns_once_and_is_left_out():
    lines: list[str] = []
    tracker = Tracker(fail_on=2)
    tracker.release.set()
    guard = detached(tracker, lines)
    for epoch in (1, 2, 3, 4):
        guard.on_trial_result(epoch, [], "trial", {"epoch": epoch})
    guard.on_experiment_end([])
    assert tracker.logged == [1]
    assert tracker.ended == ["abandoned on tunekit-MLflow"]  # the runs it had opened: closed, where it still can
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
    guard.closer.join(5)  # its runs closed on a thread of its own: Ray's loop, which saw the backlog, goes on
    assert tracker.ended == ["abandoned on tunekit-MLflow-close"]
    guard.on_experiment_end([])  # still stuck: the end does not wait past drain_s
    tracker.release.set()
    assert len(lines) == 1


def test_the_end_of_a_search_waits_a_bounded_time_for_a_tracker_and_says_so():
    """The report's upload (or a stop's last call) stuck on a slow server: given drain_s, then the search ends
    without it, said once; a stop's drain that runs out says what is left, not that the search goes on."""
    lines: list[str] = []
    tracker = Tracker()
    guard = detached(tracker, lines, drain_s=0.2)
    guard.close()
    guard.end(lambda: tracker.release.wait(10))
    assert lines == ["warning: MLflow: still busy after 0s; the search ends without it (the run folder has every "
                     "result)"]
    guard.end(lambda: lines.append("a second end"))  # once
    assert len(lines) == 1
    tracker.release.set()
    stopping: list[str] = []
    stuck = Tracker()
    guard = detached(stuck, stopping, drain_s=0.2)
    guard.on_trial_result(1, [], "trial", {"epoch": 1})
    guard.close(stopping=True)
    stuck.release.set()
    assert stopping[-1] == ("warning: MLflow: still busy after 0s at the end of the search; what it has not written "
                            "is left (the run folder has every result)")


class Quiet:
    def setup(self, **info) -> None:
        pass

    def end_open(self, status: str) -> None:
        pass

    def abandon(self) -> None:
        pass


def test_the_guard_pickles_without_its_thread():
    """Ray pickles the Tuner's callbacks (to restore them on a resume)."""
    import pickle

    guard = detached(Quiet(), [])
    copy = pickle.loads(pickle.dumps(guard))
    assert copy.thread is None and copy.calls is None and isinstance(copy.tracker, Quiet)
    guard.close()
