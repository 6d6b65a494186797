"""ASHA in an event simulator: learning curves replayed through tunekit's own scheduler (``PromotingASHA``
and its ``Ladder``, driven through Ray's hooks as Ray drives them) beside an independent reference of the
paper's rule (Li et al., MLSys 2020, Algorithm 2).

    python benchmarks/asha_sim.py                      # the issue's setups, synthetic curves, 100 runs each
    python benchmarks/asha_sim.py --faults             # + retries, crashes while waiting, a driver kill + resume
    python benchmarks/asha_sim.py --curves benchmarks/data/curves_demo_full.csv   # curves a real search recorded
    python benchmarks/asha_sim.py --export ~/ray_results/demo-full benchmarks/data/curves_demo_full.csv

A run: ``trials`` trials, each a learning curve (a loss per epoch up to ``max_t``), on ``slots`` slots
(Ray's resources); each epoch takes a random time (a speed per trial, a jitter per epoch). A free slot
goes to what the scheduler chooses (``choose_trial_to_run``: with ``reuse_actors`` a freed worker is
the scheduler's to give), else to the oldest trial Ray has pending. The searcher adds a trial as each
real limit lets it:

- ``none``: no limit but the slots (Ray's resources): the searcher adds trials as Ray asks;
- ``tunekit``: a limit of the slots on resources for twice as many, kept through ``PromotingASHA.has_room``
  (``tuner.slots``): a trial waiting at a rung holds no slot, and a free slot goes first to a waiting trial
  that has earned it (the simulator fails if more trials than the limit ever run at once);
- ``ray``: the same limit as Ray's own limiters count (every trial made and not ended, a waiting one
  included) with the fallback tunekit had before: when nothing runs, the best waiting goes on.

The reference is the paper's ``get_job`` on every free slot (promote the best trial of the highest rung
that is in its rung's top 1/rf and not promoted yet, else start a new trial), with tunekit's documented
end rule (once no trial can still reach a rung, its best goes on at least) and its handling of faults:
a failed trial is retried from its last checkpoint before any new trial (promoted ones first, then by
age), a crash while waiting leaves it waiting, a driver kill loses the epochs in flight and nothing else.

Printed per setup: epochs used as a share of running every trial to max_t, trials that reach max_t,
how often the best final trial (by its curve at max_t) was among them, and how often the set of
(trial, rung) promotions differs from the reference's.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from tunekit.tuner.asha import PromotingASHA

# ---- curves -------------------------------------------------------------------------------------------


def synthetic_curves(n: int, max_t: int, rng: random.Random, noise: float = 0.02) -> list[list[float]]:
    """Learning curves of three shapes: exponential approach (fast learners with poor ends cross slow ones
    with good ends), linear descent to a plateau, and early plateaus; each epoch's value with Gaussian
    noise of ``noise`` (the frozen epoch's error varies by about 2 points from seed to seed)."""
    curves = []
    for _ in range(n):
        final, start = rng.uniform(0.05, 0.5), rng.uniform(0.6, 0.95)
        shape = rng.choice(("exponential", "plateau", "early"))
        rate = rng.uniform(0.15, 1.5)
        out = []
        for e in range(1, max_t + 1):
            if shape == "exponential":
                v = final + (start - final) * math.exp(-rate * (e - 1))
            elif shape == "plateau":
                v = max(final, start - rate * 0.15 * (e - 1))
            else:
                v = final + (start - final) * (0.5 if e == 1 else 0.05)
            out.append(v + rng.gauss(0, noise))
        curves.append(out)
    return curves


def export_curves(run: Path, out: Path, metric: str = "error_rate") -> int:
    """A run folder's per-epoch curves (each trial's progress.csv) as the CSV ``read_curves`` takes: only
    trials that ran every epoch (a search with ``asha = None``). Returns how many."""
    import pandas as pd

    from tunekit.runfolder import read_progress

    frames = []
    for i, trial in enumerate(sorted(p for p in run.glob("*/") if (p / "progress.csv").is_file())):
        df = read_progress(trial)
        frames.append(pd.DataFrame({"trial": i, "epoch": df["epoch"], "value": df[metric]}))
    longest = max(len(f) for f in frames)
    full = [f for f in frames if len(f) == longest]
    pd.concat(full).to_csv(out, index=False)
    return len(full)


def read_curves(path: Path) -> list[list[float]]:
    """Curves a real search recorded with every trial run to the end: a CSV of trial, epoch, value."""
    import pandas as pd

    df = pd.read_csv(path)
    return [g.sort_values("epoch")["value"].tolist() for _, g in df.groupby("trial", sort=True)]


@dataclass
class Setup:
    trials: int
    slots: int
    rf: float
    max_t: int
    grace: int = 1

    def __str__(self) -> str:
        return f"{self.trials}/{self.slots}/{self.rf:g}/{self.max_t}"


@dataclass
class Faults:
    """Faults drawn per (trial, epoch, attempt) from the run's seed, so every policy meets the same ones."""

    error: float = 0.0  # a trial fails during an epoch (retried once from its last checkpoint)
    crash_waiting: float = 0.0  # a trial fails while saving its pause checkpoint at a rung
    kill_at: float | None = None  # the driver is killed at this time (then resumed): see compare()
    seed: int = 0

    def draw(self, *key: object) -> float:
        return _rng(self.seed, *key).random()


def _rng(*key: object) -> random.Random:
    """A generator seeded by ``key`` alone (a string seed: the same in every process, unlike hash())."""
    return random.Random(":".join(map(str, key)))


@dataclass
class Outcome:
    wall: float  # when its last epoch ended
    epochs: int
    finished: set[int]  # trials that reached max_t
    promotions: set[tuple[int, int]]  # (trial, rung) let past


# ---- Ray's side, as PromotingASHA meets it ------------------------------------------------------------


class SimTrial:
    """What PromotingASHA reads of Ray's Trial."""

    def __init__(self, index: int) -> None:
        self.index, self.trial_id = index, f"t{index:04d}"
        self.status = "PENDING"
        self.is_saving = False
        self.history: dict[int, float] = {}  # what its progress.csv holds
        self.checkpoint = 0  # the epoch of its latest checkpoint
        self.failures = 0
        self.error_file = None  # no traceback to read: not a configuration error, so retried
        self.run_metadata = SimpleNamespace(num_failures=0)

    @property
    def has_reported_at_least_once(self) -> bool:
        return bool(self.history)

    def set_status(self, status: str) -> None:
        self.status = status


class SimController:
    """What PromotingASHA calls on Ray's TuneController."""

    def __init__(self) -> None:
        self._pending_trials: set[SimTrial] = set()

    def _set_trial_status(self, trial: SimTrial, status: str) -> None:
        (self._pending_trials.add if status == "PENDING" else self._pending_trials.discard)(trial)
        trial.status = status

    def stop_trial(self, trial: SimTrial) -> None:
        self._set_trial_status(trial, "TERMINATED")


class SimASHA(PromotingASHA):
    """The real scheduler; only a trial's history comes from the simulation instead of its progress.csv."""

    def _history(self, trial: SimTrial) -> dict[int, float]:  # type: ignore[override]
        return dict(trial.history)


def run_tunekit(curves: list[list[float]], speed: list[float], setup: Setup, policy: str, faults: Faults,
                seed: int, trace: list | None = None) -> Outcome:
    """One search through PromotingASHA (policy: none | tunekit | ray, as the module docstring says)."""
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "asha_promotions.jsonl"

        def scheduler() -> SimASHA:
            s = SimASHA(max_t=setup.max_t, grace_period=setup.grace, reduction_factor=setup.rf,
                        total_trials=setup.trials, max_running=setup.slots if policy == "tunekit" else None,
                        record=record)
            s.set_search_properties("loss", "min")
            return s

        sched, ctrl = scheduler(), SimController()
        trials: list[SimTrial] = []
        events: list[tuple[float, int, str, SimTrial]] = []
        running: set[SimTrial] = set()
        clock, seq, epochs, killed = 0.0, 0, 0, False
        promotions: set[tuple[int, int]] = set()

        def may_add() -> bool:
            if len(trials) >= setup.trials:
                return False
            if policy == "ray":  # Ray's count: every trial made and not ended
                return sum(t.status not in ("TERMINATED", "ERROR") for t in trials) < setup.slots
            return sched.has_room()

        def start(trial: SimTrial) -> None:
            nonlocal seq
            ctrl._set_trial_status(trial, "RUNNING")
            running.add(trial)
            epoch = trial.checkpoint + 1
            dt = speed[trial.index] * math.exp(_rng(seed, trial.index, epoch, trial.failures).gauss(0, 0.1))
            fails = faults.error and faults.draw("error", trial.index, epoch, trial.failures) < faults.error
            seq += 1
            heapq.heappush(events, (clock + dt * (0.5 if fails else 1.0), seq, "error" if fails else "epoch", trial))

        def fail(trial: SimTrial) -> None:
            running.discard(trial)
            trial.failures += 1
            trial.run_metadata.num_failures = trial.failures
            if trial.failures <= 1:  # max_failures = 1: Ray requeues it (on_trial_error, then on_trial_add)
                sched.on_trial_error(ctrl, trial)
                ctrl._set_trial_status(trial, "PENDING")
                sched.on_trial_add(ctrl, trial)
            else:
                sched.on_trial_error(ctrl, trial)
                ctrl._set_trial_status(trial, "ERROR")

        # A limit is what keeps the trials at once: Ray's resources would fit twice as many (as --num-gpus 4 on a
        # machine of 8 GPUs); with no limit the resources are the slots.
        capacity = setup.slots * 2 if policy in ("tunekit", "ray") else setup.slots

        def step() -> None:
            """Ray's controller step: the searcher adds trials, then free slots are filled."""
            while may_add():
                trial = SimTrial(len(trials))
                trials.append(trial)
                ctrl._set_trial_status(trial, "PENDING")
                sched.on_trial_add(ctrl, trial)
            while len(running) < capacity:
                trial = sched.choose_trial_to_run(ctrl)
                if trial is None:
                    trial = next((t for t in trials if t.status == "PENDING"), None)  # Ray's own FIFO start
                if trial is None and policy == "ray" and sched.ladder.idle() and sched.ladder.waiting():
                    trial = sched._trials[sched.ladder.waiting()[0][0]]  # the old fallback: best waiting goes on
                    sched.ladder.promote(trial.trial_id)
                    sched.ladder.start(trial.trial_id)
                if trial is None:
                    break
                start(trial)
            if len(running) > setup.slots:
                raise AssertionError(f"{policy}: {len(running)} trials at once, over the limit of {setup.slots}")

        def kill_and_resume() -> None:
            """The driver dies: epochs in flight are lost; Ray restores its trials (RUNNING and PAUSED ones
            as PENDING) into a new scheduler, which rebuilds its ladder from histories and the record."""
            nonlocal sched, ctrl
            events.clear()
            running.clear()
            sched, ctrl = scheduler(), SimController()
            for t in trials:
                t.is_saving = False
                if t.status in ("RUNNING", "PAUSED"):
                    t.status = "PENDING"
                sched.on_trial_add(ctrl, t)
                if t.status == "PENDING":
                    ctrl._pending_trials.add(t)

        step()
        while events:
            clock, _, kind, trial = heapq.heappop(events)
            if kind == "error":
                fail(trial)
            else:
                epoch = trial.checkpoint + 1
                epochs += 1
                value = curves[trial.index][epoch - 1]
                trial.history.setdefault(epoch, value)  # a repeated epoch: the ladder keeps the first value
                decision = sched.on_trial_result(ctrl, trial, {"epoch": epoch, "loss": value})
                if trace is not None:
                    trace.append((round(clock, 6), trial.index, epoch, decision))
                if decision == "CONTINUE":
                    trial.checkpoint = epoch
                    running.discard(trial)
                    start(trial)
                elif decision == "PAUSE":
                    running.discard(trial)
                    if faults.crash_waiting and faults.draw("crash", trial.index, epoch) < faults.crash_waiting:
                        fail(trial)  # the pause checkpoint is lost: it repeats this epoch when it goes on
                    else:
                        trial.checkpoint = epoch
                        ctrl._set_trial_status(trial, "PAUSED")
                else:
                    running.discard(trial)
                    sched.on_trial_complete(ctrl, trial, {})
                    ctrl._set_trial_status(trial, "TERMINATED")
            if faults.kill_at is not None and not killed and clock >= faults.kill_at:
                killed = True
                kill_and_resume()
            step()
        from tunekit.runfolder import read_promotions

        promoted = read_promotions(record)
        for tid, rung in promoted.items():
            promotions.update((int(tid[1:]), r) for r in sched.ladder.rungs if r <= rung)
        finished = {t.index for t in trials if max(t.history, default=0) >= setup.max_t}
        return Outcome(clock, epochs, finished, promotions)


# ---- the reference ------------------------------------------------------------------------------------


@dataclass
class _Ref:
    index: int
    epoch: int = 0  # last epoch completed
    checkpoint: int = 0
    scores: dict[int, float] = field(default_factory=dict)
    promoted: set[int] = field(default_factory=set)
    state: str = "queued"  # queued (to run: new, retried, promoted) | running | waiting | done
    failures: int = 0


def run_reference(curves: list[list[float]], speed: list[float], setup: Setup, faults: Faults,
                  seed: int, trace: list | None = None) -> Outcome:
    """The paper's get_job on every free slot, written apart from tunekit's code (see the docstring)."""
    rf, max_t = setup.rf, setup.max_t
    rungs, k = [], 0
    while math.ceil(setup.grace * rf ** k - 1e-9) < max_t:
        r = math.ceil(setup.grace * rf ** k - 1e-9)
        if r not in rungs:
            rungs.append(r)
        k += 1
    if rungs and max_t < rungs[-1] * math.sqrt(rf):
        rungs = rungs[:-1]
    trials: list[_Ref] = []
    events: list[tuple[float, int, str, _Ref]] = []
    clock, seq, epochs, killed = 0.0, 0, 0, False
    running: set[int] = set()

    def ranked(rung: int) -> list[_Ref]:
        return sorted((t for t in trials if rung in t.scores), key=lambda t: (t.scores[rung], t.index))

    def hopeless(t: _Ref) -> bool:  # waiting at its rung and can never be in the top 1/rf of it
        rung = t.epoch
        order = ranked(rung)
        most = len(order) + can_arrive(rung)
        return order.index(t) >= max(1, math.floor(most / rf))

    def can_arrive(rung: int) -> int:
        alive = [t for t in trials if t.state != "done" and t.epoch < rung and rung not in t.scores]
        alive = [t for t in alive if not (t.state == "waiting" and hopeless(t))]
        return setup.trials - len(trials) + len(alive)

    def promotable(rung: int) -> _Ref | None:
        order = ranked(rung)
        top = math.floor(len(order) / rf)
        if can_arrive(rung) == 0:
            top = max(1, top)
        return next((t for t in order[:top] if rung not in t.promoted and t.state == "waiting"), None)

    def get_job() -> _Ref | None:
        for rung in reversed(rungs):
            t = promotable(rung)
            if t is not None:
                t.promoted.add(rung)
                return t
        queued = [t for t in trials if t.state == "queued"]
        if queued:  # a retry or a resumed trial: promoted ones first, then by age
            return min(queued, key=lambda t: (not t.promoted, t.index))
        if len(trials) < setup.trials:
            trials.append(_Ref(len(trials)))
            return trials[-1]
        return None

    def start(t: _Ref) -> None:
        nonlocal seq
        t.state = "running"
        running.add(t.index)
        epoch = t.checkpoint + 1
        dt = speed[t.index] * math.exp(_rng(seed, t.index, epoch, t.failures).gauss(0, 0.1))
        fails = faults.error and faults.draw("error", t.index, epoch, t.failures) < faults.error
        seq += 1
        heapq.heappush(events, (clock + dt * (0.5 if fails else 1.0), seq, "error" if fails else "epoch", t))

    def fill() -> None:
        while len(running) < setup.slots and (t := get_job()) is not None:
            start(t)

    def fail(t: _Ref) -> None:
        running.discard(t.index)
        t.failures += 1
        t.state = "done" if t.failures > 1 else ("waiting" if t.epoch in t.scores and t.epoch not in t.promoted
                                                 else "queued")

    fill()
    while events:
        clock, _, kind, t = heapq.heappop(events)
        if kind == "error":
            fail(t)
        else:
            epoch = t.checkpoint + 1
            epochs += 1
            t.epoch = epoch
            running.discard(t.index)
            if trace is not None:
                trace.append((round(clock, 6), t.index, epoch))
            if epoch >= max_t:
                t.state = "done"
            elif epoch in rungs and epoch not in t.promoted:
                t.scores.setdefault(epoch, curves[t.index][epoch - 1])
                t.state, t.checkpoint = "waiting", epoch
                job = get_job()  # its slot is free: the paper's next job, which may be this trial
                crash = faults.crash_waiting and faults.draw("crash", t.index, epoch) < faults.crash_waiting
                if job is not t and crash:
                    t.checkpoint = epoch - 1
                    fail(t)  # it failed saving its pause checkpoint: still waiting, without that epoch
                if job is not None:
                    start(job)
                # a hopeless one never goes on (tunekit stops it: the same for the promotions)
            else:  # between rungs, or a repeated epoch it was promoted past: it goes on in its slot
                t.checkpoint = epoch
                start(t)
        if faults.kill_at is not None and not killed and clock >= faults.kill_at:
            killed = True
            events.clear()
            for i in list(running):
                trials[i].state = "queued"
            running.clear()
        fill()
    promotions = {(t.index, r) for t in trials for r in t.promoted}
    return Outcome(clock, epochs, {t.index for t in trials if t.epoch >= max_t}, promotions)


# ---- the comparison -----------------------------------------------------------------------------------


def compare(setup: Setup, runs: int, faults: Faults | None, curve_source: Callable[[random.Random], list],
            policies: tuple[str, ...] = ("none", "tunekit", "ray")) -> dict:
    """``runs`` simulated searches of ``setup``: per policy the mean epoch share, trials at max_t, the best
    kept, and the runs whose promotions differ from the reference's."""
    out: dict[str, dict[str, float]] = {p: {"epochs": 0.0, "finished": 0.0, "best_kept": 0, "differ": 0}
                                        for p in (*policies, "reference")}
    for run in range(runs):
        rng = random.Random(run)
        curves = curve_source(rng)
        speed = [math.exp(rng.gauss(0, 0.5)) for _ in curves]
        best = min(range(len(curves)), key=lambda i: (curves[i][setup.max_t - 1], i))
        f = Faults(seed=run)
        if faults is not None:  # the kill: at this share of the wall time of the search without faults
            kill = None if faults.kill_at is None else faults.kill_at * run_reference(curves, speed, setup, f, run).wall
            f = Faults(faults.error, faults.crash_waiting, kill, seed=run)
        ref = run_reference(curves, speed, setup, f, seed=run)
        results = {p: run_tunekit(curves, speed, setup, p, f, seed=run) for p in policies}
        results["reference"] = ref
        for p, r in results.items():
            out[p]["epochs"] += r.epochs / (setup.trials * setup.max_t) / runs
            out[p]["finished"] += len(r.finished) / runs
            out[p]["best_kept"] += best in r.finished
            out[p]["differ"] += r.promotions != ref.promotions
    return out


SETUPS = (Setup(27, 3, 3, 9), Setup(16, 2, 3, 8), Setup(64, 4, 4, 16))


def survivor_bias(sims: int = 400, trials: int = 48, effect: float = -0.02, keep: float = 1 / 3,
                  seed: int = 0) -> dict[str, dict[str, float]]:
    """The report's effect estimates (``report.estimates.effects``) when a rung keeps the best third: a
    random search of ``pool`` over backbones of differing quality, concat ``effect`` better at the rung and
    at the end; per basis the mean estimate and how often its 95% interval covers the truth."""
    import numpy as np
    import pandas as pd

    from tunekit.report.estimates import SURVIVORS_BASIS, effects

    rng = np.random.default_rng(seed)
    models = [f"model{i}" for i in range(6)]
    out: dict[str, list[tuple[float, bool]]] = {}
    for _ in range(sims):
        quality = dict(zip(models, rng.normal(0.3, 0.05, len(models))))
        model = rng.choice(models, trials)
        pool = rng.choice(["avg", "concat"], trials)
        base = np.array([quality[m] for m in model]) + effect * (pool == "avg") * -1 + rng.normal(0, 0.03, trials)
        rung = base + 0.1 + rng.normal(0, 0.02, trials)  # the first rung: worse, and noisier than the end
        final = base + rng.normal(0, 0.01, trials)
        kept = rung <= np.quantile(rung, keep)
        runs = pd.DataFrame({"dataset": "d", "model": model, "pool": pool, "status": np.where(kept, "completed",
                             "stopped early"), "error_rate": np.where(kept, final, rung),
                             "first_rung_error_rate": rung, "first_rung_epoch": 1})
        fx = effects(runs)
        for row in fx[(fx["axis"] == "pool") & (fx["family"] == "all")].itertuples():
            if np.isfinite(row.estimate):
                name = "survivors" if row.basis == SURVIVORS_BASIS else "first rung"
                # concat vs avg: the estimate is error(concat) - error(avg) = effect
                out.setdefault(name, []).append((row.estimate, row.ci_low <= effect <= row.ci_high))
    return {k: {"estimate": float(np.mean([e for e, _ in v])), "coverage": float(np.mean([c for _, c in v])),
                "sims": len(v)} for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--faults", action="store_true",
                        help="retries (10%% of epochs fail once), crashes while waiting (20%%), a kill at half")
    parser.add_argument("--curves", type=Path, help="a CSV of trial, epoch, value (every trial to the end)")
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--effects", action="store_true", help="the report's effect estimates on ASHA's survivors")
    parser.add_argument("--export", nargs=2, type=Path, metavar=("RUN_DIR", "OUT_CSV"),
                        help="write a finished search's curves (every trial to the end) for --curves")
    args = parser.parse_args(argv)
    if args.export:
        print(f"{export_curves(*args.export)} curves written to {args.export[1]}")
        return
    if args.effects:
        for trials in (48, 150, 600):
            for basis, r in survivor_bias(sims=200, trials=trials).items():
                print(f"{trials:4d} trials, {basis:>10s}: mean estimate {r['estimate']:+.4f} (truth -0.0200), "
                      f"95% intervals cover the truth {r['coverage']:.0%} of {r['sims']} simulated searches")
        return
    faults = Faults(error=0.1, crash_waiting=0.2, kill_at=0.5) if args.faults else None
    if args.curves:
        recorded = read_curves(args.curves)
        max_t = min(len(c) for c in recorded)
        setups = [Setup(len(recorded), 2, 3, max_t), Setup(4 * len(recorded), 4, 3, max_t)]

        def source_for(setup: Setup) -> Callable[[random.Random], list]:
            # the recorded curves, resampled with the frozen epoch's noise on top (ties are not the question)
            return lambda rng: [[v + rng.gauss(0, args.noise / 2) for v in rng.choice(recorded)[:max_t]]
                                for _ in range(setup.trials)]
    else:
        setups = list(SETUPS)

        def source_for(setup: Setup) -> Callable[[random.Random], list]:
            return lambda rng: synthetic_curves(setup.trials, setup.max_t, rng, args.noise)
    print(f"{args.runs} runs per setup (trials/slots/reduction/max_t), "
          f"{'with faults' if faults else 'no faults'}; epochs as a share of every trial to max_t")
    print(f"{'setup':>12s} {'policy':>10s} {'epochs':>7s} {'at max_t':>9s} {'best kept':>10s} {'differ':>7s}")
    for setup in setups:
        res = compare(setup, args.runs, faults, source_for(setup))
        for policy, r in res.items():
            print(f"{str(setup):>12s} {policy:>10s} {r['epochs']:7.1%} {r['finished']:9.1f} "
                  f"{r['best_kept']:>6.0f}/{args.runs:<3d} {r['differ']:>3.0f}/{args.runs}")
        ratio = res["tunekit"]["epochs"] / res["none"]["epochs"]
        print(f"{'':>12s} limit = slots through tunekit: {ratio:.2f}x the epochs of no limit "
              f"(Ray's count: {res['ray']['epochs'] / res['none']['epochs']:.2f}x)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
