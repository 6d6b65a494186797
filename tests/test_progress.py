"""A search's progress display (tuner.progress): events.log, the event stream, the live status.

Driven here with stand-ins for Ray's Trial objects (the attributes the callback reads: trial_id,
config, status, last_result, path); a real search's events.log and screen are test_search's."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunekit.tuner.progress import ProgressCallback


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def trial(n: int, lr: float, error_file: Path | None = None) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"t{n}", config={"model": "test_resnet", "lr": lr}, status="RUNNING",
                           last_result={}, path=f"/runs/x/t{n}", error_file=error_file, max_failures=1,
                           run_metadata=SimpleNamespace(num_failures=0))


def drive(cb: ProgressCallback, tmp_path: Path) -> list[SimpleNamespace]:
    """4 trials: one finishes (3 epochs), one stopped by ASHA at 1, one waits at 1, one fails in its
    setup, is retried, and fails again in its first epoch (Ray's error.txt: the failures' tracebacks)."""
    cb.setup()
    error = tmp_path / "error.txt"
    error.write_text("Failure # 1\nTraceback (most recent call last):\n  ...\nRuntimeError: CUDA error: boom\n")
    trials = [trial(i, lr, error if i == 3 else None) for i, lr in enumerate([0.01, 0.02, 0.03, 0.04])]
    for t in trials:
        cb.on_trial_start(0, trials, t)
    for t, err in zip(trials[:3], [0.3, 0.5, 0.4]):
        t.last_result = {"epoch": 1, "error_rate": err}
        cb.on_trial_result(0, trials, t, t.last_result)
    trials[2].status = "PAUSED"  # ASHA: waits at its rung
    cb.on_step_end(0, trials)
    cb.on_trial_complete(0, trials, trials[1])  # stopped early at epoch 1 of 3
    for epoch, err in ((2, 0.25), (3, 0.2)):
        trials[0].last_result = {"epoch": epoch, "error_rate": err}
        cb.on_trial_result(0, trials, trials[0], trials[0].last_result)
    cb.on_trial_complete(0, trials, trials[0])
    trials[3].run_metadata.num_failures = 1
    trials[3].status = "PENDING"
    cb.on_trial_recover(0, trials, trials[3])  # Ray requeues it
    assert "1 failed and to be retried, " in cb.status_lines()[0]
    cb.on_trial_start(0, trials, trials[3])
    trials[3].last_result = {"epoch": 0}  # no epoch reported: it fails again in its first one
    trials[3].run_metadata.num_failures = 2
    trials[3].status = "ERROR"
    cb.on_trial_error(0, trials, trials[3])
    cb.on_step_end(0, trials)
    return trials


def test_events_go_to_the_screen_and_to_events_log(tmp_path):
    lines: list[str] = []
    cb = ProgressCallback(lines.append, "error_rate", "min", max_epochs=3, total=4, searched={"lr"},
                          display="auto", log_path=tmp_path / "events.log")  # 4 trials: auto = events
    drive(cb, tmp_path)
    # Ray pickles a Tuner's callbacks (tuner.pkl): the open events.log is not part of it
    assert pickle.loads(pickle.dumps(cb)).counts == cb.counts
    cb.on_experiment_end([])
    logged = (tmp_path / "events.log").read_text().splitlines()
    assert logged == lines
    text = "\n".join(lines)
    for expected in ("#1   start    test_resnet lr=0.01", "#3   waits at epoch 1 for a place in its rung's top",
                     "#2   stopped early by ASHA at epoch 1", "#1   finished: error_rate 0.2000",
                     "#4   failed in setup: RuntimeError: CUDA error: boom; retried (1 of 1)",
                     "#4   failed in setup: RuntimeError: CUDA error: boom; errored after 1 retry (traceback: "
                     "/runs/x/t3/error.txt)", "3/4 done: 1 finished, 1 stopped early, 1 errored",
                     "epoch 3/3 error_rate 0.2000   best 0.2000 (#1)"):
        assert expected in text


def test_summary_shows_a_status_instead_of_events(tmp_path):
    lines: list[str] = []
    cb = ProgressCallback(lines.append, "error_rate", "min", max_epochs=3, total=60, searched={"lr"},
                          display="auto", log_path=tmp_path / "events.log", every_s=0.0, stream=io.StringIO())
    assert cb.display == "summary"  # more than 50 trials
    drive(cb, tmp_path)
    # no event lines but a failure's, once per error: the retried trial's second failure is counted, not printed
    failures = [line for line in lines if "failed in setup" in line]
    assert len(failures) == 1 and "#4   failed in setup: RuntimeError: CUDA error: boom; retried (1 of 1)" in failures[0]
    assert all(line.startswith("[") and "trials " in line for line in lines if line not in failures)
    last = lines[-1]
    assert "failed attempts: 2 x RuntimeError: CUDA error: boom" in last
    assert "trials 3/60 done (1 finished, 1 stopped early, 1 errored), 0 running, 1 waiting, 56 not started" in last
    assert "epochs 5 run of 180 if every trial ran to the end (3%)" in last
    assert "best error_rate 0.2000: #1 test_resnet lr=0.01" in last
    assert "left (at " in last  # an estimate once trials have ended
    assert "#4   failed in setup" in (tmp_path / "events.log").read_text()  # the events are in the log


def test_in_a_terminal_the_status_is_redrawn_in_place(tmp_path):
    screen = Terminal()

    def echo(line: str) -> None:  # a line printed (a failure) goes to the same terminal, between blocks
        screen.write(line + "\n")

    cb = ProgressCallback(echo, "error_rate", "min", max_epochs=3, total=4, searched={"lr"}, display="summary",
                          stream=screen)
    assert cb.live and cb.every_s == 1.0
    cb.every_s = 0.0
    drive(cb, tmp_path)
    out = screen.getvalue()
    # step 1 draws the block; the failure clears it (up over its 3 lines) and is printed in its place; step 2 draws
    # the block again below it, with the failures counted
    first, rest = out.split("\x1b[3F\x1b[J")
    assert first.count("\n") == 3 and "time left: estimated once a trial has ended" in first
    failure, block = rest.split("\n", 1)
    assert "#4   failed in setup: RuntimeError: CUDA error: boom; retried (1 of 1)" in failure
    assert block.count("\n") == 4 and "left (at " in block and "failed attempts: 2 x RuntimeError" in block


def test_unknown_progress_display_is_refused(tmp_path):
    from tunekit.errors import TunekitError
    from tunekit.tuner import search

    with pytest.raises(TunekitError, match="progress must be one of auto, summary, events"):
        search({"space": {"model": "test_resnet"}}, progress="table", storage_path=tmp_path, dry_run=True)
