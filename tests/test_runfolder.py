"""The run folder's format (runfolder.py), read from a real Ray run (tests/fixtures/real_run, made by
tests/fixtures/make_real_run.py): Ray's experiment state, configs, progress, status."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunekit import runfolder
from tunekit.runfolder import Status

REAL_RUN = Path(__file__).parent / "fixtures" / "real_run"
# lr -> (status, epochs run): what the captured search did (2 epochs, ASHA grace 1, reduction 2)
EXPECTED = {0.02: (Status.COMPLETED, 2), 0.002: (Status.COMPLETED, 2), 0.0005: (Status.STOPPED, 1),
            0.01: (Status.ERRORED, 1)}


def by_lr(run: Path) -> dict[float, Path]:
    return {runfolder.trial_config(t)["lr"]: t for t in runfolder.trial_dirs(run)}


def test_ray_experiment_state_names_every_trial_folder_with_its_status():
    trials = runfolder.ray_trials(REAL_RUN)
    assert set(trials) == {t.name for t in runfolder.trial_dirs(REAL_RUN)}
    states = runfolder.ray_states(REAL_RUN)
    for lr, trial in by_lr(REAL_RUN).items():
        assert states[trial.name] == ("ERROR" if lr == 0.01 else "TERMINATED")
        assert trials[trial.name]["config"]["lr"] == lr


def test_status_of_each_trial_folder():
    states = runfolder.ray_states(REAL_RUN)
    for lr, trial in by_lr(REAL_RUN).items():
        history = runfolder.history(trial, "error_rate")
        status, error = runfolder.trial_status(trial, states[trial.name], max(history), 2, diverged=False)
        assert (status, max(history)) == EXPECTED[lr]
        assert (error is not None) == (status is Status.ERRORED)
    errored = by_lr(REAL_RUN)[0.01]
    status, error = runfolder.trial_status(errored, "ERROR", 1, 2, diverged=False)
    assert error.startswith("tunekit.tuner.trainable.TrialOutOfMemory: out of memory: test_resnet")


def test_progress_follows_the_metric_contract():
    from tunekit.config import METRICS

    for trial in runfolder.trial_dirs(REAL_RUN):
        df = runfolder.read_progress(trial)
        assert set(METRICS) - {"f2"} <= set(df.columns)  # single-label data: no f2
        assert df["epoch"].tolist() == list(range(1, len(df) + 1))
        assert runfolder.history(trial, "error_rate") == dict(zip(df["epoch"], df["error_rate"]))


def test_config_comes_from_the_experiment_state_when_params_json_is_empty(tmp_path):
    """Ray truncates params.json before writing it: a driver killed in between leaves it empty."""
    run = shutil.copytree(REAL_RUN, tmp_path / "run")
    trial = by_lr(run)[0.002]
    (trial / runfolder.PARAMS_FILE).write_text("")
    ray_trial = runfolder.ray_trials(run)[trial.name]
    assert runfolder.trial_config(trial, ray_trial)["lr"] == 0.002  # from Ray's saved state
    assert runfolder.trial_config(trial)["lr"] == 0.002  # else from the results it reported


@pytest.mark.parametrize(("text", "status"), [
    ("completed", Status.COMPLETED), ("stopped early", Status.STOPPED), ("stopped early (epoch 3)", Status.STOPPED),
    ("unfinished (epoch 2)", Status.UNFINISHED), ("not started", Status.NOT_STARTED), ("errored", Status.ERRORED)])
def test_status_parses_current_and_older_results_csv(text, status):
    assert Status.parse(text) is status


def test_ended_status():
    assert runfolder.ended_status(3, 3, diverged=False) is Status.COMPLETED
    assert runfolder.ended_status(1, 3, diverged=False) is Status.STOPPED
    assert runfolder.ended_status(1, 3, diverged=True) is Status.DIVERGED
    with pytest.raises(ValueError, match="unknown trial status 'done'"):
        Status.parse("done")


def test_remove_checkpoints_keeps_the_rest(tmp_path):
    trial = tmp_path / "trial"
    (trial / "checkpoint_000001").mkdir(parents=True)
    (trial / "checkpoint_000001" / runfolder.CHECKPOINT_FILE).write_bytes(b"x")
    (trial / runfolder.PROGRESS_FILE).write_text("epoch\n1\n")
    runfolder.remove_checkpoints(trial)
    assert sorted(p.name for p in trial.iterdir()) == [runfolder.PROGRESS_FILE]
