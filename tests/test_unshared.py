"""fit_time_unshared: the arithmetic (eager, and compiled with its compiles), the measurement stage's timing of
a network's steps on this CPU, a run folder read with its step times, and the report ranking by it (saying
so) when trials shared GPUs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tunekit import report
from tunekit.machine import Book, StepKey
from tunekit.runfolder import RUN_INFO_FILE, STEP_TIMES_FILE
from tunekit.unshared import TIMES, unshared_fit_time

REAL_RUN = Path(__file__).parent / "fixtures" / "real_run"
TIMES_OF = {"train_s": 0.002, "frozen_s": 0.001, "eval_s": 0.0005}


@pytest.mark.parametrize("frozen, epochs, expected", [
    (1, 3, 1000 * (0.001 + 2 * 0.002) + 200 * 3 * 0.0005),  # fine_tune: 1 frozen + 2
    (0, 3, 1000 * 3 * 0.002 + 200 * 3 * 0.0005),  # from scratch
    (1, 1, 1000 * 0.001 + 200 * 0.0005),  # stopped by ASHA after the frozen epoch
    (2, 1, 1000 * 0.001 + 200 * 0.0005),  # frozen epochs beyond those it ran do not count
])
def test_a_trials_work_at_its_networks_speed_alone(frozen, epochs, expected):
    assert unshared_fit_time(TIMES_OF, n_train=1000, n_valid=200, frozen_epochs=frozen, epochs=epochs) == \
        pytest.approx(expected)


def test_a_compiled_trials_unshared_time_holds_the_compiles_it_pays():
    compiled = {**TIMES_OF, "compile_s": 30.0, "compile_frozen_s": 20.0, "compile_eval_s": 5.0}
    eager = unshared_fit_time(compiled, n_train=1000, n_valid=200, frozen_epochs=1, epochs=3)
    assert unshared_fit_time(compiled, 1000, 200, 1, 3, compiled=True) == pytest.approx(eager + 55.0)
    # from scratch: no frozen graph to compile
    assert unshared_fit_time(compiled, 1000, 200, 0, 3, compiled=True) == \
        pytest.approx(unshared_fit_time(compiled, 1000, 200, 0, 3) + 35.0)
    # stopped by ASHA after its frozen epoch: it never unfroze, nor paid the unfrozen graphs' compiles
    assert unshared_fit_time(compiled, 1000, 200, 1, 1, compiled=True) == \
        pytest.approx(unshared_fit_time(compiled, 1000, 200, 1, 1) + 20.0)


def test_the_stage_times_a_networks_three_steps_here_and_keeps_them_per_machine(tmp_path):
    import torch

    from tunekit.measure import time_network

    key = StepKey("test_resnet", 16, 32, "fp32")
    timed, cache = time_network(key, torch.device("cpu"), steps=3, warmup=1)
    assert cache is None and set(timed) == {key, StepKey("test_resnet", 16, 32, "fp32", frozen=True)}
    book = Book("CPU test x2, torch 0", tmp_path)
    for k, values in timed.items():
        book.record(k, by="stage", **values)
    times = book.times(key)
    assert set(TIMES) <= set(times) and all(0 < times[k] < 1 for k in TIMES)
    assert times["eval_s"] < times["train_s"]  # a forward pass costs less than forward, backward and step


def real_run_with_times(tmp_path: Path, shared: float) -> Path:
    """The captured real run, as if its trials had run at ``shared`` of a GPU, with step times for them."""
    run = tmp_path / "run"
    shutil.copytree(REAL_RUN, run)
    for trial in run.glob("run_trial_*"):
        info = json.loads((trial / RUN_INFO_FILE).read_text())
        info["resources"]["GPU"] = shared
        (trial / RUN_INFO_FILE).write_text(json.dumps(info))
    # keyed as the measurement stage keys them: the precision resolved (tunekit_run.json's), eager
    key = StepKey("test_resnet", 32, 32, "fp32").text()
    (run / STEP_TIMES_FILE).write_text(json.dumps({key: TIMES_OF}))
    return run


def test_a_packed_runs_folder_gives_each_trial_its_unshared_time(tmp_path):
    run = real_run_with_times(tmp_path, shared=0.25)
    df = report.load_run(run)
    for row in df.itertuples():
        if row.epochs_run:
            assert row.fit_time_unshared == pytest.approx(unshared_fit_time(TIMES_OF, 192, 48, 0, row.epochs_run))
    # a run folder written before the measurement stage keyed them by the precision the space asked for
    (run / STEP_TIMES_FILE).write_text(json.dumps({json.dumps({"batch_size": 32, "img_size": 32, "model": "test_resnet",
                                                               "precision": "auto"}, sort_keys=True): TIMES_OF}))
    assert report.load_run(run)["fit_time_unshared"].equals(df["fit_time_unshared"])
    # without the step times, a packed trial's unshared time is unknown, a trial alone on its device keeps its own
    (run / STEP_TIMES_FILE).unlink()
    assert report.load_run(run)["fit_time_unshared"].isna().all()
    plain = report.load_run(REAL_RUN)
    assert plain["fit_time_unshared"].equals(plain["fit_time"])


def runs_frame() -> pd.DataFrame:
    """Two models on one dataset: b is faster when measured packed, a when timed alone."""
    return pd.DataFrame({"run": "r", "dataset": "pets", "model": ["a", "a", "b", "b"], "status": "completed",
                         "error_rate": [0.10, 0.11, 0.10, 0.12], "fit_time": [50.0, 52.0, 20.0, 21.0],
                         "fit_time_unshared": [10.0, 11.0, 19.0, 20.0], "gpu_mem": 1.0})


def test_the_report_ranks_by_the_unshared_time_where_trials_shared_gpus_and_says_so(tmp_path):
    built = report.build(runs_frame())
    assert built.time_basis == "fit_time_unshared"
    ranked = built.ranking.set_index("model")
    assert list(built.ranking["model"]) == ["a", "b"]  # by fit_time, b would win: 0.10 * 100 < 0.10 * 130
    assert ranked.loc["a", "score"] == pytest.approx(0.10 * (10.0 + 80))
    assert ranked.loc["a", "fit_time"] == 50.0  # the measured time, shown beside
    report.write(built, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "Score = error_rate * (fit_time_unshared + 80)" in text and "shared GPUs" in text
    assert "fit_time_unshared" in pd.read_csv(tmp_path / "ranking.csv")
    summary = "\n".join(report.terminal_summary(built))
    assert "by score = error_rate * (fit_time_unshared + 80)" in summary


def test_where_every_trial_had_its_device_the_report_ranks_by_fit_time():
    runs = runs_frame().assign(fit_time_unshared=lambda d: d["fit_time"])
    built = report.build(runs)
    assert built.time_basis == "fit_time" and "fit_time_unshared" not in built.ranking
    assert list(built.ranking["model"]) == ["b", "a"]
