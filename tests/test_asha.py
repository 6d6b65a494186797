"""Promoting ASHA: the rule (no Ray), then on a real local Ray search."""

from __future__ import annotations

import json
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
    assert Ladder(40, 1, 2.5, 16).rungs == [1, 3, 7, 16]  # ceil(2.5**k), as Ray rounds: no drift from compounding
    assert Ladder(10, 1, 3, 16).rungs == [1, 3]  # no rung at 9 of 10: max_t is the paper's top rung there
    assert Ladder(16, 1, 4, 64).rungs == [1, 4]  # 16 would be max_t itself
    assert Ladder(9, 1, 3, 27).rungs == [1, 3]


def test_a_free_slot_goes_first_to_the_waiting_trial_that_earned_it():
    """The paper's get_job: a trial at a rung that is in the top 1/rf goes on only if no waiting trial comes
    before it (a higher rung, or a better one at this rung); otherwise it waits for the next slot."""
    ladder = Ladder(max_t=9, grace_period=1, reduction_factor=3, total_trials=30)
    decisions = {}
    for t, value in zip("abcdefgh", [0.1, 0.2, 0.05, 0.5, 0.6, 0.7, 0.8, 0.9]):
        ladder.add(t)
        decisions[t] = ladder.report(t, 1, value)
    assert decisions["c"] == CONTINUE and ladder.next_promotion() == ("a", 1)  # 6 recorded: a earned the top 2
    ladder.add("i")
    assert ladder.report("i", 1, 0.15) == WAIT  # 9 recorded: top 3 holds i too, but a is first in line
    ladder.promote("a")
    assert ladder.next_promotion() == ("i", 1)  # the next free slot is i's
    ladder.add("z")
    ladder.report("a", 3, 0.04)  # a at rung 3 waits alone there until the rung fills
    assert ladder.trials["a"].state == "waiting" and ladder.next_promotion() == ("i", 1)
    for t in "cd":
        ladder.trials[t].passed = 1
        ladder._set(t, "running")
        ladder.report(t, 3, 0.3)  # 3 recorded at rung 3: a is its best, and rung 3 comes before rung 1
    assert ladder.next_promotion() == ("a", 3)
    assert ladder.report("z", 1, 0.01) == WAIT  # the best at rung 1, yet a's promotion takes its slot
    assert ladder.next_promotion() == ("a", 3)


def test_has_room_counts_running_trials_and_gives_earned_promotions_the_slot():
    from tunekit.tuner.asha import PromotingASHA

    asha = PromotingASHA(max_t=8, grace_period=1, reduction_factor=3, total_trials=9, max_running=2)
    ladder = asha.ladder
    for t in "ab":
        ladder.add(t)
        ladder.start(t)
    assert not asha.has_room()  # two running on two slots
    assert ladder.report("a", 1, 0.5) == WAIT
    assert ladder.occupied() == 1 and asha.has_room()  # a waiting trial holds no slot
    for t, value in zip("cd", [0.7, 0.8]):
        ladder.add(t)
        ladder.report(t, 1, value)  # a is now the best of 3: earned a promotion
    assert ladder.next_promotion() == ("a", 1) and not asha.has_room()  # its slot, not a new trial's
    assert PromotingASHA(max_t=8, grace_period=1, reduction_factor=3, total_trials=9).has_room()  # no limit


def test_a_retried_trial_keeps_its_place():
    """Ray requeues a failed trial as on_trial_error then on_trial_add: it comes before the trials made
    after it, and one that was promoted before every trial not promoted."""
    ladder = Ladder(max_t=8, grace_period=1, reduction_factor=3, total_trials=20)
    for t in "abcdefg":
        ladder.add(t)
    for t, value in zip("abc", [0.1, 0.5, 0.6]):
        ladder.start(t)
        ladder.report(t, 1, value)
    assert ladder.next_promotion() == ("a", 1)  # the best of 3: promoted
    ladder.promote("a")
    ladder.start("a")
    ladder.report("a", 2, 0.1)
    ladder.start("d")
    ladder.finish("d")  # d fails before its first epoch ...
    ladder.add("d")  # ... and Ray retries it
    ladder.finish("a")  # a fails at epoch 2 ...
    ladder.add("a")
    assert ladder.pending() == ["a", "d", "e", "f", "g"]  # promoted first, then by age


def test_a_trial_that_fails_while_waiting_still_waits():
    ladder = Ladder(max_t=8, grace_period=1, reduction_factor=3, total_trials=9)
    ladder.add("a")
    assert ladder.report("a", 1, 0.5) == WAIT
    ladder.finish("a")  # it failed saving its pause checkpoint ...
    ladder.add("a")  # ... and is retried
    assert ladder.trials["a"].state == "waiting" and "a" not in ladder.pending()
    # Started anyway (from the checkpoint before the rung), it repeats epoch 1: judged again, not let through
    assert ladder.report("a", 1, 0.1) == WAIT and ladder.trials["a"].scores == {1: 0.5}  # the first value kept
    for t, value in zip("bc", [0.7, 0.8]):
        ladder.add(t)
        ladder.report(t, 1, value)
    ladder.promote("a")
    ladder.finish("a")  # promoted, it fails again before its next report ...
    ladder.add("a")
    assert ladder.trials["a"].state == "pending"  # ... and keeps its promotion
    assert ladder.report("a", 1, 0.4) == CONTINUE  # the repeated rung epoch: it was let past


def test_a_resumed_search_keeps_its_promotions(tmp_path):
    """Ray keeps no scheduler state: the run folder's record of promotions comes back with the histories."""
    from tunekit.runfolder import append_promotions, read_promotions

    record = tmp_path / "asha_promotions.jsonl"
    append_promotions(record, [("a", 1), ("b", 1)])
    append_promotions(record, [("a", 3)])
    with open(record, "a") as f:
        f.write('{"trial": "c", "ru')  # a line cut short by a killed driver
    assert read_promotions(record) == {"a": 3, "b": 1}
    ladder = Ladder(max_t=8, grace_period=1, reduction_factor=3, total_trials=9)
    ladder.restore("a", {1: 0.1, 2: 0.1, 3: 0.1}, finished=False, passed=3)  # promoted at 3, killed before epoch 4
    ladder.restore("b", {1: 0.2}, finished=False, passed=1)
    ladder.restore("w", {1: 0.3}, finished=False)
    assert [ladder.trials[t].state for t in "abw"] == ["pending", "pending", "waiting"]
    assert ladder.report("a", 4, 0.1) == CONTINUE


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


# ---- Ray's trials through the scheduler's hooks, in the order Ray calls them --------------------------


class Controller:
    """What PromotingASHA calls on Ray's TuneController: its set of PENDING trials and its status setter."""

    def __init__(self):
        self._pending_trials = set()

    def _set_trial_status(self, trial, status):
        (self._pending_trials.add if status == "PENDING" else self._pending_trials.discard)(trial)
        trial.set_status(status)

    def stop_trial(self, trial):
        self._set_trial_status(trial, "TERMINATED")

    def add(self, asha, trial):  # TuneController.add_trial: the scheduler's hook, then filed by status
        asha.on_trial_add(self, trial)
        if trial.status == "PENDING":
            self._pending_trials.add(trial)

    def requeue(self, asha, trial):  # TuneController._requeue_trial after a failure
        asha.on_trial_error(self, trial)
        self._set_trial_status(trial, "PENDING")
        asha.on_trial_add(self, trial)

    def run(self, asha, trial, epoch, value):  # a result; PAUSE files the trial as paused
        self._set_trial_status(trial, "RUNNING")
        decision = asha.on_trial_result(self, trial, {"epoch": epoch, "error_rate": value})
        if decision == "PAUSE":
            self._set_trial_status(trial, "PAUSED")
        return decision


def scheduler(tmp_path, total=9, max_running=None):
    from tunekit.tuner.asha import PromotingASHA

    asha = PromotingASHA(max_t=8, grace_period=1, reduction_factor=3, total_trials=total, max_running=max_running,
                         record=tmp_path / "asha_promotions.jsonl")
    asha.set_search_properties("error_rate", "min")
    return asha


def test_faults_keep_the_decisions_on_rays_trials(tmp_path):
    """Ray's own Trial objects through the hooks: a retried trial is chosen before newer ones; one that failed
    while waiting is filed PAUSED (Ray would start a PENDING trial itself) and not chosen until promoted."""
    from ray.tune.experiment import Trial

    asha, ctrl = scheduler(tmp_path), Controller()
    trials = [Trial("__fake", stub=True) for _ in range(5)]
    for t in trials:
        ctrl.add(asha, t)
    a, b, c, d, e = trials
    assert asha.choose_trial_to_run(ctrl) is a
    assert ctrl.run(asha, a, 1, 0.5) == "PAUSE"  # alone at the rung
    ctrl.requeue(asha, a)  # it failed saving its pause checkpoint
    assert a.status == Trial.PAUSED and a not in ctrl._pending_trials
    ctrl._set_trial_status(b, "RUNNING")
    ctrl.requeue(asha, b)  # b failed in its first epoch: retried before c, d, e
    assert b.status == Trial.PENDING
    assert asha.choose_trial_to_run(ctrl) is b  # not a: it has not earned a promotion
    assert ctrl.run(asha, b, 1, 0.7) == "PAUSE"
    assert asha.choose_trial_to_run(ctrl) is c and ctrl.run(asha, c, 1, 0.9) == "PAUSE"
    assert asha.choose_trial_to_run(ctrl) is a  # 3 recorded: a is the best, promoted
    assert asha.ladder.trials[a.trial_id].passed == 1


def test_a_resume_keeps_a_promotion_made_before_the_kill(tmp_path):
    """A trial promoted at a rung and killed with the driver before its next report comes back pending
    (Ray's history alone would have it waiting again, to be judged anew); an errored trial without a
    history comes back ended."""
    from ray.tune.experiment import Trial

    asha, ctrl = scheduler(tmp_path), Controller()
    trials = [Trial("__fake", stub=True) for _ in range(4)]
    for t in trials:
        ctrl.add(asha, t)
    for t, value in zip(trials[:3], [0.5, 0.7, 0.9]):
        asha.choose_trial_to_run(ctrl)
        ctrl.run(asha, t, 1, value)
    assert asha.choose_trial_to_run(ctrl) is trials[0]  # promoted ... and the driver dies
    trials[3].set_status(Trial.ERROR)
    resumed, ctrl = scheduler(tmp_path), Controller()
    histories = {trials[0].trial_id: {1: 0.5}, trials[1].trial_id: {1: 0.7}, trials[2].trial_id: {1: 0.9}}
    resumed._history = lambda trial: histories.get(trial.trial_id, {})  # what each progress.csv holds
    for t in trials:
        t.set_status(Trial.PENDING if t.status != Trial.ERROR else Trial.ERROR)
        ctrl.add(resumed, t)
    assert [resumed.ladder.trials[t.trial_id].state for t in trials] == ["pending", "waiting", "waiting", "done"]
    assert trials[1].status == Trial.PAUSED and resumed.choose_trial_to_run(ctrl) is trials[0]


def test_the_simulator_small():
    """benchmarks/asha_sim.py, small: under a limit equal to the slots the epochs stay within 1.1x of no limit
    (Ray's own count of the limit spends far more), and the promotions equal the reference's, with and
    without faults (retries, crashes while waiting, a driver kill and resume)."""
    import importlib.util
    import random
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "asha_sim.py"
    spec = importlib.util.spec_from_file_location("asha_sim", path)
    sim = importlib.util.module_from_spec(spec)
    sys.modules["asha_sim"] = sim  # dataclasses look their module up
    spec.loader.exec_module(sim)
    for setup in sim.SETUPS:
        def curves(rng: random.Random, s=setup):
            return sim.synthetic_curves(s.trials, s.max_t, rng)

        clean = sim.compare(setup, 8, None, curves)
        assert clean["tunekit"]["epochs"] <= 1.1 * clean["none"]["epochs"], (setup, clean)
        assert clean["ray"]["epochs"] >= 1.3 * clean["none"]["epochs"], (setup, clean)
        assert clean["tunekit"]["differ"] == clean["none"]["differ"] == 0, (setup, clean)
        faulty = sim.compare(setup, 8, sim.Faults(error=0.1, crash_waiting=0.2, kill_at=0.5), curves,
                             policies=("none", "tunekit"))
        assert faulty["tunekit"]["differ"] == faulty["none"]["differ"] == 0, (setup, faulty)


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
def test_a_trial_waiting_at_a_rung_holds_no_slot(local_ray, tmp_path):
    """max_concurrent = 1 (as --num-gpus caps a search): Ray's limiters would count a waiting (paused) trial
    as running, so nothing new could start and the fallback would let the waiting trial go on unranked.
    Here its slot runs the next trial, and it is promoted as the rung fills, as without a limit. A promoted
    trial that then fails is retried through Ray's own requeue and keeps its promotion."""
    from tunekit.spec import load_spec
    from tunekit.tuner.trainable import FAULT_KEY

    space = asha_space(tmp_path)
    with open(space, "a") as f:
        f.write("max_concurrent = 1\nepochs = 3\n")  # rungs at epochs 1 and 2
    spec = load_spec(space)
    marker = tmp_path / "fault-fired"
    spec.space[FAULT_KEY] = {"epoch": 2, "marker": str(marker)}  # the first trial past epoch 2: promoted twice
    lines: list[str] = []
    result = search(spec, storage_path=tmp_path / "runs", echo=lines.append)
    df = result.trials
    assert (df["status"].str.startswith(("completed", "stopped early"))).all(), df["status"]
    assert set(df.loc[df["epochs_run"] == 1, "lr"]) == {1e-7, 1e-8}  # hopeless ones still stop
    # rungs 1 and 2 (rf 2): two past rung 1, one past rung 2, as without a limit: 3 + 2 + 1 + 1 epochs
    assert sorted(df["epochs_run"]) == [1, 1, 2, 3], (df[["lr", "epochs_run", "status"]], "\n".join(lines))
    text = "\n".join(lines)
    waits, second = text.index("#1   waits at epoch 1"), text.index("#2   start")
    assert waits < second < text.index("#1   promoted after epoch 1"), text  # #2 took the slot #1 left
    assert marker.is_file() and "failed in epoch 3: RuntimeError: injected fault after epoch 2; retried (1 of 1)" \
        in text, text
    for path in df.loc[df["epochs_run"] == 3, "path"]:
        assert pd.read_csv(f"{path}/progress.csv")["epoch"].tolist() == [1, 2, 3]  # the retry went on from epoch 2
    promoted = [json.loads(line) for line in (result.path / "asha_promotions.jsonl").read_text().splitlines()]
    assert sorted(p["rung"] for p in promoted) == [1, 1, 2]  # past rung 1 twice, rung 2 once: kept for a resume


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
