"""A study-scale search on a simulated cluster: tunekit's cost over bare Ray Tune, per trial.

    python benchmarks/scale.py --trials 100 --nodes 16
    python benchmarks/scale.py --trials 1000 --nodes 16 --json scale-1000.json --profile

A ``ray.cluster_utils.Cluster`` on this machine: a head with no CPUs and K worker nodes, each
declaring 1 CPU and 1 (fake) GPU; trials take half of each (two per node, 2K at once). N real
trials that cost little: test_resnet from scratch on 150 generated 16 px images, 3 epochs, ASHA
(rungs at epochs 1 and 3). Run twice on the same cluster and data:

* ``tunekit``: ``tunekit.search`` with ``--address``: node preparation, the searcher, promoting ASHA,
  TensorBoard, progress (events.log), checkpoint cleanup and keep-best, and the report at the end;
* ``bare``: ``tune.Tuner`` over the same trainable and param space, Ray's ``ASHAScheduler`` with the
  same rungs, Ray's default loggers and checkpoint settings (every checkpoint kept), no tunekit callbacks.

Printed and written (``--json``): trials, nodes, tunekit_wall_s, bare_wall_s, tunekit_driver_cpu_s,
bare_driver_cpu_s (CPU time of this process: the driver, not Ray's own processes or the trials),
tunekit_trials_driver_cpu_s (tunekit's driver CPU while the trials ran: node preparation and the report
left out, which bare Ray Tune does not do; tunekit_before/after_trials_driver_cpu_s are those two),
overhead_s_per_trial ((tunekit_wall_s - bare_wall_s) / trials); also each run's epochs_run (the two
ASHA rules stop different trials) and tunekit_phases, its wall time split by what it printed: node
preparation, the trials (tuner.fit), and after them (keep-best, report). ``--profile`` adds where tunekit's
driver CPU goes (cProfile on CPU time, by tunekit module, Ray package and library). Both runs join the
cluster with the trials' output left on the nodes (``log_to_driver=False``), and leave it at the end: each
run's driver CPU counts its ``ray.init`` and ``ray.shutdown``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import tunekit  # noqa: F401  - first: the torchvision import workaround, before timm

# isort: split
import ray
from ray import tune
from ray.cluster_utils import Cluster
from ray.tune.schedulers import ASHAScheduler

from tunekit import data as tkdata
from tunekit.spec import build_spec
from tunekit.tuner import search
from tunekit.tuner.trainable import CHECKPOINTS_KEY, run_trial

EPOCHS, GRACE, REDUCTION = 3, 1, 3


def spec_values(trials: int, data: str) -> dict:
    return {
        "name": "scale", "data": data, "epochs": EPOCHS, "searcher": "random", "num_samples": trials,
        "asha": {"grace_period": GRACE, "reduction_factor": REDUCTION}, "cpus_per_trial": 0.5, "gpus_per_trial": 0.5,
        "space": {"model": "test_resnet", "pretrained": False, "lr": tune.loguniform(1e-3, 3e-2),
                  "pool": tune.choice(["avg", "concat"]), "batch_size": 32, "img_size": 16},
        "keep_best": 3,
    }


def run_tunekit(address: str, storage: Path, trials: int, data: str, profile: bool) -> dict:
    spec = build_spec(spec_values(trials, data))
    profiler = cProfile.Profile(time.process_time) if profile else None  # CPU time: waiting is not cost
    cpu0, t0 = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    marks: list[tuple[float, str]] = []  # (seconds since the start, line): where the wall time goes
    cpu_at: dict[str, float] = {}  # the driver's CPU seconds when the trials started and ended

    def echo(line: str) -> None:
        marks.append((time.perf_counter() - t0, line))
        if line.startswith("prepared "):
            cpu_at["trials_start"] = time.process_time() - cpu0
        elif line.startswith("search ended after"):
            cpu_at["trials_end"] = time.process_time() - cpu0

    result = search(spec, address=address, storage_path=storage, progress="summary", echo=echo)
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    trials_cpu = cpu_at.get("trials_end", cpu) - cpu_at.get("trials_start", 0.0)
    out = {"wall_s": wall, "cpu_s": cpu, "trials_cpu_s": trials_cpu,
           "before_trials_cpu_s": cpu_at.get("trials_start", 0.0),
           "after_trials_cpu_s": cpu - cpu_at.get("trials_end", cpu),
           "completed": int(result.trials["status"].isin(["completed", "stopped early"]).sum()),
           "epochs_run": int(result.trials["epochs_run"].sum()), "phases": phases(marks, wall)}
    if profiler:
        out["profile"] = by_module(profiler)
    return out


def run_bare(address: str, storage: Path, trials: int, data: str) -> dict:
    spec = build_spec(spec_values(trials, data))
    param_space = {**spec.param_space(), "threads": 1, CHECKPOINTS_KEY: True}
    scheduler = ASHAScheduler(time_attr="epoch", max_t=EPOCHS, grace_period=GRACE, reduction_factor=REDUCTION)
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="error_rate", mode="min", scheduler=scheduler, num_samples=trials,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="bare", storage_path=str(storage), verbose=0),  # Ray's checkpoint defaults
    )
    cpu0, t0 = time.process_time(), time.perf_counter()
    # joined, fitted and left, as tunekit's search joins the cluster and leaves it: the same connection costs
    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    try:
        grid = tuner.fit()
    finally:
        ray.shutdown()
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
            "completed": sum(r.error is None for r in grid), "epochs_run": epochs_in(storage / "bare")}


def epochs_in(run: Path) -> int:
    """Epochs reported by every trial of a run folder: the lines of their result.json (Ray's
    ResultGrid.get_dataframe came back without columns once, after a 1,000-trial run)."""
    return sum(sum(1 for line in f.open() if line.strip()) for f in run.glob("*/result.json"))


def phases(marks: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """The tunekit run's wall time split by what it printed: before the trials (planning, node
    preparation, the Tuner), the trials (tuner.fit) and after them (keep-best, report, summary)."""
    def line(prefix: str) -> tuple[float, float]:  # (when it was printed, the seconds it ends with)
        t, text = next(((t, text) for t, text in marks if text.startswith(prefix)), (wall, "0s"))
        return t, float(text.split()[-1].rstrip("s"))

    ended, fit_s = line("search ended after")
    return {"before_trials_s": round(ended - fit_s, 1), "preparing_nodes_s": line("prepared ")[1],
            "trials_s": round(fit_s, 1), "after_trials_s": round(wall - ended, 1)}


def by_module(profiler: cProfile.Profile, top: int = 15) -> list[dict]:
    """The driver's own CPU time (tottime) per tunekit module, per Ray package, per other library,
    largest first."""
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        if "/tunekit/" in filename:
            key = "tunekit/" + filename.split("/tunekit/")[-1]
        elif "/ray/" in filename:
            key = "ray/" + filename.split("/ray/")[-1].split("/")[0]
        elif "site-packages/" in filename:
            key = filename.split("site-packages/")[-1].split("/")[0]
        else:
            key = "other (stdlib, builtins)"
        totals[key] = totals.get(key, 0.0) + tottime
    return [{"module": k, "seconds": round(v, 3)} for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--nodes", type=int, default=16)
    p.add_argument("--which", choices=["both", "tunekit", "bare"], default="both")
    p.add_argument("--profile", action="store_true", help="where tunekit's driver time goes, by module")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.trials < 1 or args.nodes < 1:
        sys.exit("error: --trials and --nodes must be at least 1")
    os.environ.setdefault("TUNEKIT_DATA", tempfile.mkdtemp(prefix="tunekit-scale-data-"))
    data = "shapes?n=150&size=16"
    tkdata.load(data, "crop", 16)  # made and decoded once, before either run (the nodes share this machine's disk)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    record: dict = {"trials": args.trials, "nodes": args.nodes}
    try:
        with tempfile.TemporaryDirectory() as storage:
            if args.which in ("both", "tunekit"):
                t = run_tunekit(cluster.address, Path(storage), args.trials, data, args.profile)
                record.update(tunekit_wall_s=round(t["wall_s"], 1), tunekit_driver_cpu_s=round(t["cpu_s"], 1),
                              tunekit_trials_driver_cpu_s=round(t["trials_cpu_s"], 1),
                              tunekit_before_trials_driver_cpu_s=round(t["before_trials_cpu_s"], 1),
                              tunekit_after_trials_driver_cpu_s=round(t["after_trials_cpu_s"], 1),
                              tunekit_trials_ended=t["completed"], tunekit_epochs_run=t["epochs_run"],
                              tunekit_phases=t["phases"])
                if "profile" in t:
                    record["tunekit_profile"] = t["profile"]
                if args.json:  # kept even if the bare run then fails
                    args.json.write_text(json.dumps(record, indent=1))
            if args.which in ("both", "bare"):
                if ray.is_initialized():  # (tunekit's search leaves the cluster when it ends)
                    ray.shutdown()
                b = run_bare(cluster.address, Path(storage), args.trials, data)
                record.update(bare_wall_s=round(b["wall_s"], 1), bare_driver_cpu_s=round(b["cpu_s"], 1),
                              bare_trials_ended=b["completed"], bare_epochs_run=b["epochs_run"])
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    if "tunekit_wall_s" in record and "bare_wall_s" in record:
        record["overhead_s_per_trial"] = round((record["tunekit_wall_s"] - record["bare_wall_s"]) / args.trials, 3)
        record["driver_cpu_ratio"] = round(record["tunekit_driver_cpu_s"] / max(record["bare_driver_cpu_s"], 1e-9), 2)
        # while the trials run (tunekit's node preparation and report aside; bare Ray Tune has neither)
        record["trials_driver_cpu_ratio"] = round(record["tunekit_trials_driver_cpu_s"]
                                                  / max(record["bare_driver_cpu_s"], 1e-9), 2)
    print(json.dumps(record, indent=1))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
