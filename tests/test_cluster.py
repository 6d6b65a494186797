"""A search over a multi-node Ray cluster on one machine (ray.cluster_utils.Cluster, fake GPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from ray.cluster_utils import Cluster
from runs import epochs_of

from tunekit.data.shapes import write_shapes
from tunekit.tuner import search

BODY = """
epochs = 2
searcher = "grid"
asha = None
gpus_per_trial = 0.5
cpus_per_trial = 1
space = {"model": "test_resnet", "lr": tune.grid_search([0.01, 0.005, 0.002, 0.001]), "pretrained": False,
         "batch_size": 32, "img_size": 32}
"""


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    # a dead node is noticed within ~10 s (Ray's default is tens of seconds); a live one whose raylet is slow to
    # answer on a busy machine (trials importing torch on every core) is not taken for dead
    health = {"health_check_period_ms": 500, "health_check_failure_threshold": 10, "health_check_timeout_ms": 2000}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                      "_system_config": health})
    workers = [c.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]  # each declares 1 GPU it doesn't have
    c.wait_for_nodes()
    yield c, workers
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def test_trials_spread_over_worker_nodes_and_pack_fractional_gpus(cluster, tmp_path):
    from tunekit.spec import load_spec
    from tunekit.tuner.trainable import FAULT_KEY

    c, workers = cluster
    # Trials long enough to outlast a worker's start (~6 s): a trial shorter than that can end before its
    # neighbour's worker is up, and the next trial then reuses its worker (no overlap to see). Each waits 8 s
    # after its first epoch (a slow epoch that takes no CPU: what is checked is Ray's placement, not training).
    data = write_shapes(tmp_path / "data", n=300, size=32, seed=5)
    space = tmp_path / "cluster.py"
    space.write_text(f"from ray import tune\ndata = 'folder:{data}'\n" + textwrap.dedent(BODY))
    spec = load_spec(space)
    spec.space[FAULT_KEY] = {"epoch": 1, "hold_s": 8}
    lines: list[str] = []
    result = search(spec, address=c.address, storage_path=tmp_path / "runs", echo=lines.append)
    assert "up to 4 at once on 4 CPU / 2 GPU" in "\n".join(lines)
    assert (result.trials["status"] == "completed").all() and len(result.trials) == 4
    infos = [json.loads((Path(p) / "tunekit_run.json").read_text()) for p in result.trials["path"]]
    worker_ids = {w.node_id for w in workers}
    assert {i["node"] for i in infos} == worker_ids  # both worker nodes ran trials, the CPU-less head none
    for info in infos:
        assert info["resources"] == {"CPU": 1.0, "GPU": 0.5}  # half a (fake) GPU each
        assert info["device"] == "cpu"  # no CUDA behind the declared GPU: ran on CPU, and says so
    # fractional packing: two trials shared a node's one GPU at the same time, never more than two.
    # A trial's span is its start to start + time_total_s (file times are no use: the run folder is
    # synced at the end). A finished trial's worker may be reused by the next trial, so the split
    # need not be 2 + 2, and trials of one worker process (pid) never overlap.
    spans = []
    for info, path in zip(infos, result.trials["path"]):
        last = pd.read_csv(Path(path) / "progress.csv").iloc[-1]
        spans.append((info["started"], info["started"] + float(last["time_total_s"]), int(last["pid"])))
    shared = 0
    for node in worker_ids:
        mine = [(i, span) for i, span in zip(infos, spans) if i["node"] == node]
        assert {len(i["gpu_ids"]) for i, _ in mine} == {1} and len({tuple(i["gpu_ids"]) for i, _ in mine}) == 1
        for _, (start, _end, pid) in mine:  # worker processes busy when this trial started, its own included
            at_once = 1 + len({p for _, (s, e, p) in mine if p != pid and s <= start < e})
            assert at_once <= 2, mine
            shared += at_once == 2
    assert shared >= 1  # two trials at the same time on one GPU
    os.environ.pop("RAY_ADDRESS", None)


def start_search(tmp_path: Path, name: str, data: Path, body: str, address: str) -> tuple[subprocess.Popen, Path]:
    """`tunekit search NAME.py --address ADDRESS` as a user starts it, in the background; its run folder."""
    space = tmp_path / f"{name}.py"
    space.write_text(f"from ray import tune\ndata = 'folder:{data}'\n" + textwrap.dedent(body))
    proc = subprocess.Popen([sys.executable, "-m", "tunekit.cli", "search", str(space), "--address", address,
                             "--storage-path", str(tmp_path / "runs")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, tmp_path / "runs" / name


JOIN = """
epochs = 2
searcher = "grid"
asha = None
cpus_per_trial = 2
space = {"model": "test_resnet", "lr": tune.grid_search([0.01, 0.005, 0.002]),
         "pretrained": False, "batch_size": 32, "img_size": 32}
"""


def test_a_node_that_joins_mid_search_runs_trials(cluster, tmp_path):
    """`ray start --address` on another machine while a search runs: its trials start there too."""
    c, workers = cluster
    # 2 trials at a time on the 2 workers; the third waits for a slot. The node joins as the first trials
    # start (their workers still importing torch), long before a slot frees: else a finished trial's
    # worker, reused, could take the third trial first.
    data = write_shapes(tmp_path / "data", n=1000, size=32, seed=4)
    proc, run = start_search(tmp_path, "join", data, JOIN, c.address)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(run.glob("run_trial_*")):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate(timeout=60)[0]
    joined = c.add_node(num_cpus=2, num_gpus=1)  # mid-search: the first trials are starting
    c.wait_for_nodes()
    try:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "3 completed" in out, out
        nodes = [json.loads(f.read_text())["node"] for f in run.glob("run_trial_*/tunekit_run.json")]
        assert len(nodes) == 3 and nodes.count(joined.node_id) == 1, (nodes, joined.node_id)
    finally:
        c.remove_node(joined)  # the node leaves again (the lost-node test counts on two workers)


LOST = """
epochs = 6
searcher = "grid"
asha = None
cpus_per_trial = 2
max_failures = 2
space = {"model": "test_resnet", "lr": tune.grid_search([0.01, 0.002]), "pretrained": False,
         "batch_size": 32, "img_size": 48}
"""


def test_lost_node_trials_continue_on_another_node_from_their_checkpoints(cluster, tmp_path):
    """Runs last: it removes a worker node from the module's cluster."""
    c, workers = cluster
    data = write_shapes(tmp_path / "data", n=800, size=48, seed=3)
    proc, run = start_search(tmp_path, "lost", data, LOST, c.address)
    doomed = victim = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and victim is None:
        for trial in run.glob("run_trial_*"):
            info, epochs = trial / "tunekit_run.json", epochs_of(trial)
            if info.is_file() and 1 <= len(epochs) <= 3:  # checkpointed at least once, far from done
                node = json.loads(info.read_text())["node"]
                doomed = next(w for w in workers if w.node_id == node)
                victim = trial
                break
        time.sleep(0.05)
    assert victim is not None, proc.communicate(timeout=60)[0] if proc.poll() is not None else "no trial midway"
    c.remove_node(doomed, allow_graceful=False)  # the machine is gone: raylet, workers, all
    lost_at = time.time()
    before = epochs_of(victim)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "2 completed" in out, out
    survivor = next(w for w in workers if w is not doomed)
    info = json.loads((victim / "tunekit_run.json").read_text())
    assert info["node"] == survivor.node_id and info["started"] > lost_at  # retried on the other node
    epochs = epochs_of(victim)
    assert epochs == list(range(1, 7)), epochs  # every epoch once: continued after its checkpoint
    assert epochs[: len(before)] == before
    assert (victim / "error.txt").is_file()  # what happened is on record


def test_doctor_lists_the_nodes_of_a_cluster(cluster):
    """Every alive node with its resources, and the total (an earlier test may have removed a worker)."""
    import re

    from click.testing import CliRunner

    from tunekit.cli import main

    c, workers = cluster
    result = CliRunner().invoke(main, ["doctor", "--address", c.address])
    assert result.exit_code == 0, result.output
    nodes, cpus, gpus = map(int, re.search(rf"{re.escape(c.address)}: (\d+) node\(s\), (\d+) CPU, (\d+) GPU",
                                           result.output).groups())
    rows = [re.search(r": (\d+) CPU, (\d+) GPU", line).groups() for line in result.output.splitlines()
            if line.strip().startswith("ok    node")]
    assert nodes == len(rows) >= 2 and cpus == sum(int(r[0]) for r in rows) and gpus == sum(int(r[1]) for r in rows)
    assert ("0", "0") in rows and ("2", "1") in rows  # the CPU-less head, a worker with its (fake) GPU
    # --address auto: the cluster started on this machine (ray.cluster_utils leaves its address as `ray start` does)
    assert not ray.is_initialized()  # doctor joins: through tunekit's reading of `auto`
    auto = CliRunner().invoke(main, ["doctor", "--address", "auto"])
    assert auto.exit_code == 0 and f"auto: {nodes} node(s), {cpus} CPU, {gpus} GPU" in auto.output, auto.output
    assert sorted(re.findall(r"ok    node .*", auto.output)) == sorted(re.findall(r"ok    node .*", result.output))
