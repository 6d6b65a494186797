"""Promoting ASHA: the rule (no Ray), then on a real local Ray search."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import ray

from tunekit.data.shapes import write_shapes
from tunekit.tuner import search
from tunekit.tuner.asha import CONTINUE, STOP, WAIT, Ladder


def test_rungs_follow_grace_and_reduction_factor():
    assert Ladder(8, 1, 3, 16).rungs == [1, 3]
    assert Ladder(4, 1, 2, 16).rungs == [1, 2]
    assert Ladder(6, 2, 3, 48).rungs == [2]
    assert Ladder(1, 1, 3, 4).rungs == []


def test_first_trials_wait_instead_of_going_on_unopposed():
    """Ray's ASHA lets the first trial at a rung go on whatever its value; here it waits until
    it ranks in the top 1/rf of what the rung has recorded."""
    ladder = Ladder(max_t=8, grace_period=1, reduction_factor=3, total_trials=9)
    for t in "abc":
        ladder.add(t)
    assert ladder.report("a", 1, 0.50) == WAIT  # alone at the rung: top floor(1/3) = 0
    assert ladder.report("b", 1, 0.70) == WAIT
    assert ladder.report("c", 1, 0.40) == CONTINUE  # 3 recorded: top 1, and it is the best
    assert [t for t, _ in ladder.waiting()] == ["a", "b"]  # best first
    assert not ladder.promotable("a", 1)  # rank 1 of 3: top 1 only


def test_waiting_trial_is_promoted_as_the_rung_fills():
    ladder = Ladder(max_t=8, grace_period=1, reduction_factor=3, total_trials=9)
    for t, value in zip("abcdef", [0.5, 0.7, 0.4, 0.9, 0.8, 0.95]):
        ladder.add(t)
        ladder.report(t, 1, value)
    # 6 recorded: top 2 are c (went on at once) and a (waiting, now promotable)
    assert ladder.promotable("a", 1) and not ladder.promotable("b", 1)
    ladder.promote("a")
    assert ladder.trials["a"].state == "pending" and ladder.waiting() == [("b", 1)]  # b may still make it
    assert ladder.report("a", 2, 0.45) == CONTINUE  # between rungs: it just trains


def test_a_trial_that_can_never_make_the_cut_is_stopped():
    """9 trials, rf 3: at most 3 go past rung 1. With 3 better ones recorded, the 4th is hopeless."""
    ladder = Ladder(max_t=8, grace_period=1, reduction_factor=3, total_trials=9)
    decisions = []
    for t, value in zip("abcd", [0.1, 0.2, 0.3, 0.9]):
        ladder.add(t)
        decisions.append(ladder.report(t, 1, value))
    assert decisions == [WAIT, WAIT, WAIT, STOP]  # 3 recorded: only the best (a) may go on; d never can
    assert ladder.trials["d"].state == "done" and ladder.promotable("a", 1) and not ladder.promotable("c", 1)


def test_when_no_trial_can_reach_a_rung_its_best_goes_on():
    """The end of a search: 2 trials, rf 3 (floor(2/3) = 0): the better one still finishes."""
    ladder = Ladder(max_t=4, grace_period=1, reduction_factor=3, total_trials=2)
    ladder.add("a")
    ladder.add("b")
    assert ladder.report("a", 1, 0.3) == WAIT  # b may still arrive
    assert ladder.report("b", 1, 0.6) == STOP  # nobody else can come: the cut is 1, and a is better
    assert ladder.promotable("a", 1)


def test_ties_go_to_the_earlier_trial_and_non_finite_values_rank_last():
    ladder = Ladder(max_t=4, grace_period=1, reduction_factor=2, total_trials=4)
    for t in "abcd":
        ladder.add(t)
    ladder.report("a", 1, float("nan"))  # diverged
    ladder.report("b", 1, 0.5)
    ladder.report("c", 1, 0.5)
    assert ladder.rank("b", 1) == 0 and ladder.rank("c", 1) == 1 and ladder.rank("a", 1) == 2


def test_max_t_ends_a_trial():
    ladder = Ladder(max_t=3, grace_period=1, reduction_factor=3, total_trials=1)
    ladder.add("a")
    assert ladder.report("a", 1, 0.5) == CONTINUE  # the only trial: the rung is complete
    assert ladder.report("a", 3, 0.4) == STOP


def test_restore_replays_a_killed_search():
    """Ray keeps no scheduler state across a resume: the ladder is rebuilt from trial folders."""
    ladder = Ladder(max_t=8, grace_period=1, reduction_factor=3, total_trials=4)
    ladder.restore("done", {1: 0.2, 2: 0.15, 3: 0.1}, finished=True)  # stopped at rung 3
    ladder.restore("midway", {1: 0.3, 2: 0.25}, finished=False)  # promoted at 1, between rungs
    ladder.restore("waits", {1: 0.6}, finished=False)  # paused at rung 1 when the driver died
    assert ladder.trials["done"].state == "done"
    assert ladder.trials["midway"].state == "pending" and ladder.trials["midway"].epoch == 2  # goes on
    assert ladder.trials["waits"].state == "waiting"
    assert ladder.rank("waits", 1) == 2


# ---- on a real Ray ---------------------------------------------------------------------------------

GRID = """
epochs = 4
searcher = "grid"
asha = {"grace_period": 1, "reduction_factor": 2}
space = {"model": "test_resnet", "lr": tune.grid_search([0.02, 0.01, 1e-7, 1e-8]), "pretrained": False,
         "batch_size": 32, "img_size": 32}
"""


def asha_space(tmp_path) -> str:
    data = write_shapes(tmp_path / "data", n=1200, size=32, seed=4)  # enough steps to tell lrs apart
    space = tmp_path / "asha.py"
    space.write_text(f"from ray import tune\ndata = 'folder:{data}'\n" + textwrap.dedent(GRID))
    return str(space)


def check_promotions(df: pd.DataFrame) -> None:
    """What the rule gives this grid, interrupted or not: two go past epoch 1, one past epoch 2."""
    assert sorted(df["epochs_run"]) == [1, 1, 2, 4], df[["lr", "epochs_run", "status"]]
    assert set(df.loc[df["epochs_run"] == 1, "lr"]) == {1e-7, 1e-8}  # the hopeless ones
    assert (df["status"].str.startswith(("completed", "stopped early"))).all(), df["status"]
    for path in df["path"]:
        epochs = pd.read_csv(f"{path}/progress.csv")["epoch"].tolist()
        assert epochs == list(range(1, len(epochs) + 1))  # a promoted trial continued, not restarted


def test_a_search_stopped_while_trials_wait_resumes_to_the_same_end(tmp_path):
    """4 trials, rungs at epochs 1 and 2, Ctrl-C while a trial waits at a rung (paused), then
    --resume: Ray keeps no scheduler state, so the ladder is rebuilt from the trial folders, and the
    search ends as an uninterrupted one would: two go past epoch 1, one past epoch 2, paused trials
    continue from their checkpoints (every epoch once)."""
    args = [sys.executable, "-m", "tunekit.cli", "search", asha_space(tmp_path), "--storage-path",
            str(tmp_path / "runs"), "--name", "asha"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "waits at epoch" in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "--resume" in out, out
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "unfinished" not in resumed.stdout and "(resuming)" in resumed.stdout
    check_promotions(pd.read_csv(tmp_path / "runs" / "asha" / "results.csv"))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.timeout(300)
def test_max_concurrent_does_not_deadlock_waiting_trials(local_ray, tmp_path):
    """Searchers count a waiting (paused) trial against max_concurrent, so with max_concurrent = 1 no
    rival would ever come: the best waiting trial goes on when nothing else can run."""
    space = asha_space(tmp_path)
    with open(space, "a") as f:
        f.write("max_concurrent = 1\nepochs = 2\n")  # one rung (epoch 1) is enough
    lines: list[str] = []
    result = search(space, storage_path=tmp_path / "runs", echo=lines.append)
    df = result.trials
    assert (df["status"].str.startswith(("completed", "stopped early"))).all(), df["status"]
    assert set(df.loc[df["epochs_run"] == 1, "lr"]) == {1e-7, 1e-8}  # hopeless ones still stop
    # the first trial waits at epoch 1 (three rivals may still come), then goes on: the progress says so
    text = "\n".join(lines)
    assert "#1   waits at epoch 1" in text and "#1   promoted after epoch 1" in text, text


def test_the_indexes_answer_as_a_scan_of_every_trial_would():
    """Rank, promotable, hopeless, arrivals and waiting from the ladder's indexes agree with the rule
    computed by scanning every trial, through a random search of 300 trials."""
    import random

    def scan_rank(ladder, tid, rung):
        me = ladder.trials[tid]
        return sum((e.scores[rung], e.order) < (me.scores[rung], me.order)
                   for e in ladder.trials.values() if rung in e.scores)

    def scan_arrivals(ladder, rung):
        alive = sum(1 for e in ladder.trials.values() if rung not in e.scores and e.state != "done" and e.epoch < rung)
        return max(0, ladder.total - len(ladder.trials)) + alive

    rng = random.Random(0)
    ladder = Ladder(max_t=9, grace_period=1, reduction_factor=3, total_trials=300)
    quality = {}
    for step in range(3000):
        live = [t for t, e in ladder.trials.items() if e.state in ("pending", "running")]
        if len(ladder.trials) < 300 and (not live or rng.random() < 0.3):
            tid = f"t{len(ladder.trials)}"
            ladder.add(tid)
            ladder.start(tid)
            quality[tid] = rng.random()
        elif live:
            tid = rng.choice(live)
            e = ladder.trials[tid]
            if rng.random() < 0.02:
                ladder.finish(tid)  # errored
            else:  # continues, waits at a rung, or stops
                ladder.report(tid, e.epoch + 1, quality[tid] + rng.gauss(0, 0.05))
        for tid, rung in ladder.waiting():
            if ladder.promotable(tid, rung):
                ladder.promote(tid)
                ladder.start(tid)
        if step % 97 == 0:
            for rung in ladder.rungs:
                assert ladder.arrivals(rung) == scan_arrivals(ladder, rung)
                for tid, e in ladder.trials.items():
                    if rung in e.scores:
                        assert ladder.rank(tid, rung) == scan_rank(ladder, tid, rung)
            assert {t for t, _ in ladder.waiting()} == {t for t, e in ladder.trials.items() if e.state == "waiting"}
            assert ladder.idle() == (not any(e.state in ("running", "pending") for e in ladder.trials.values()))
    assert sum(e.state == "done" for e in ladder.trials.values()) > 100
