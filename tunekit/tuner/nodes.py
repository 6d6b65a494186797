"""The prepare stage of a search, and the other work a search does on every node through Ray.

``prepare``: data and weights, once per node, before any trial (download, decode-once cache,
pretrained weights). On one machine (``prepare_local``) this runs in the driver before Ray starts,
so bad data or missing weights fail in a second with one message; on a cluster (``prepare_nodes``)
a Ray task on every node does it, and also checks that the run folder is storage all nodes share.
``measure_on_cluster``: the measurement stage's GPU memory (``gpu_share``'s shares) on a cluster's GPU node.
``cluster_nodes``: a cluster's nodes and resources (``tunekit doctor``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import ray

from ..data.spec import GENERATED, DataSpec
from ..errors import TunekitError
from ..gpu_share import gpu_cards, size_for
from ..measure import Found, Needs, measure_here
from ..prepare import DataFacts, check_settings, listed_facts, prepare_here, prepare_jobs
from ..spec import SearchSpec
from .state import Search


def prepare(state: Search) -> None:
    """Every node ready before any trial; ``state.checkpoints`` False where the storage is not shared."""
    if state.options.address is None and not ray.is_initialized():  # this machine alone, Ray not started yet
        state.facts = prepare_local(state.spec, state.echo)
        return
    state.run_dir.mkdir(parents=True, exist_ok=True)  # the shared-storage marker goes in it
    state.checkpoints = prepare_nodes(state.spec, state.run_dir, state.echo)


def check_local_data(spec: SearchSpec) -> None:
    """For a dry run: list and check the files of data on a local path (nothing downloaded or decoded), or
    count generated data's images from its options, and check the settings against them
    (``prepare.check_settings``)."""
    data = DataSpec.parse(spec.data)
    if data.path is not None or data.kind in GENERATED:
        check_settings(spec, listed_facts(spec.data))


def prepare_local(spec: SearchSpec, echo: Callable[[str], None]) -> DataFacts | None:
    jobs = prepare_jobs(spec)
    echo(f"preparing: {spec.data}, {len(jobs['caches'])} resize/size combination(s), "
         f"{len(jobs['weights'])} pretrained model(s)")
    _, notes, facts = prepare_here(spec.data, jobs, None)
    for note in notes:
        echo(f"warning: {note}")
    if facts is not None:
        check_settings(spec, facts)  # what every trial would fail with, before Ray starts
    return facts


def prepare_nodes(spec: SearchSpec, run_dir: Path, echo: Callable[[str], None]) -> bool:
    """On every node, before any trial: download and decode the data once, fetch pretrained weights,
    and check that the run folder is the same storage there. Returns whether checkpoints can be
    used: Ray (since 2.7) moves checkpoints between nodes only through shared storage."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    jobs = prepare_jobs(spec)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    marker = run_dir / f".shared-{os.getpid()}-{time.time_ns()}"
    marker.write_text("")
    echo(f"preparing {len(nodes)} node(s): {spec.data}, {len(jobs['caches'])} resize/size combination(s), "
         f"{len(jobs['weights'])} pretrained model(s)")
    task = ray.remote(num_cpus=0)(prepare_here)
    t0 = time.perf_counter()
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            .remote(spec.data, jobs, str(marker)) for node in nodes]
    try:
        answers = ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(getattr(e, "cause", None), TunekitError) else None
        if cause is not None:
            raise cause from None
        raise
    finally:
        marker.unlink(missing_ok=True)
    echo(f"prepared {len(nodes)} node(s) in {time.perf_counter() - t0:.1f}s")
    for note in dict.fromkeys(note for _, notes, _ in answers for note in notes):  # once, not once per node
        echo(f"warning: {note}")
    facts = [f for _, _, f in answers if f is not None]
    if facts:
        check_settings(spec, min(facts, key=lambda f: (f.n_train, f.n_valid)))  # before any trial
    sees_marker = [seen for seen, _, _ in answers]
    if all(sees_marker):
        return True
    echo(f"warning: {run_dir.parent} is not shared storage for {sees_marker.count(False)} of {len(nodes)} "
         f"node(s): running without checkpoints, so a failed trial restarts from epoch 1 and an "
         f"interrupted search cannot continue its unfinished trials. Use a --storage-path on NFS "
         f"(or s3://, gs://) seen by every node to have both.")
    return False


def measure_on_cluster(needs: Needs, echo: Callable[[str], None]) -> Found:
    """The measurement stage on a cluster (``gpus_per_trial='auto'``: the GPU memory): every GPU node lists its
    cards (a task holding no GPU), then one task holding a whole GPU runs the stage's own function
    (``measure.measure_here``), the shares sized for the smallest card; each task's process exits after it,
    giving its GPU memory back."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0]
    task = ray.remote(num_cpus=0, num_gpus=0, max_calls=1)(gpu_cards)
    cards = [card for found in ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
                                        .remote() for n in nodes]) for card in found]
    echo(f"measuring {needs.what()} of {len(needs.keys)} network(s) on a GPU node")
    gib = size_for(cards, echo)
    remote = ray.remote(num_gpus=1, max_calls=1)(measure_here)
    try:
        found = ray.get(remote.remote(dataclasses.replace(needs, size_on_gib=gib)))
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None) or e
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise TunekitError(f"gpus_per_trial='auto': measuring the GPU memory failed ({type(cause).__name__}: "
                           f"{first[:200]}); set gpus_per_trial to a number to skip it") from None
    for line in found.lines:
        echo(line)
    return found


def cluster_nodes(address: str) -> tuple[list[dict], dict[str, float]]:
    """The alive nodes of the cluster at ``address`` (Ray's node records) and its total resources;
    joined for the question and left after, unless this process was already connected."""
    from .session import RaySession

    session = RaySession(verbose=False)
    try:
        session.join(address, None)
        return [n for n in ray.nodes() if n.get("Alive")], ray.cluster_resources()
    finally:
        session.close()
