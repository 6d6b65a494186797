"""Search efficiency: the demo space with ASHA against every trial run to the end.

    python benchmarks/asha_efficiency.py [--space search_spaces/demo.py] [--storage /tmp/asha-bench] [--set K=V]
    python benchmarks/asha_efficiency.py --limit 2      # ASHA with max_concurrent=2 against ASHA without
    python benchmarks/asha_efficiency.py --cluster 2    # --num-gpus 2 against none, on 2 simulated GPU nodes

Runs the same space twice (same seed, so the same 16 sampled configurations) and prints, for each,
the epochs spent, the trial-seconds (sum of the trials' fit times), the wall time and the best
error rate found. The target: ASHA reaches the full run's best error rate within 0.02 for at most
40% of its epochs. With ``--limit N`` the two runs are ASHA without a limit and ASHA with
``max_concurrent=N`` (as ``--num-gpus`` caps a search): a trial waiting at a rung must hold no slot, so
the limited search should spend the same epochs (target: within 1.1x) for the same best error rate.
With ``--cluster K`` the two runs join a ``ray.cluster_utils.Cluster`` of K nodes with 1 CPU and 1 (fake) GPU
each, trials at half of each (the trainable runs on the CPU): without ``--num-gpus``, and with ``--num-gpus K``,
which caps the trials at once at the same 2K, the mission's own command (before, any --num-gpus made Ray's
limiter count waiting trials).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import tunekit
from tunekit.spec import parse_override


def run(space: Path, storage: Path, name: str, asha: bool, sets: dict, label: str = "", **options) -> dict:
    overrides = dict(sets) if asha else {**sets, "asha": None}
    start = time.perf_counter()
    found = tunekit.search(space, storage_path=storage, name=name, overrides=overrides, echo=lambda line: None,
                           **options)
    wall = time.perf_counter() - start
    df = found.trials
    return {"asha": asha, "label": label or ("ASHA" if asha else "full"), "trials": len(df),
            "epochs": int(df["epochs_run"].sum()),
            "trial_seconds": float(df["fit_time"].sum()), "wall_s": wall,
            "best_error_rate": float(df["best_error_rate"].min())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=Path(__file__).resolve().parents[1] / "search_spaces" / "demo.py")
    parser.add_argument("--storage", type=Path, default=Path("/tmp/tunekit-asha-bench"))
    parser.add_argument("--json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for both runs, as tunekit search --set")
    parser.add_argument("--limit", type=int, help="compare ASHA with max_concurrent=N against ASHA without")
    parser.add_argument("--cluster", type=int, metavar="K",
                        help="compare --num-gpus K against none on a simulated cluster of K GPU nodes")
    args = parser.parse_args()
    sets = dict(parse_override(s) for s in args.set)
    stamp = int(time.time())
    header = f"{'':12s}{'trials':>8s}{'epochs':>8s}{'trial-s':>10s}{'wall s':>9s}{'best error':>12s}"
    if args.cluster:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(args.cluster):
            cluster.add_node(num_cpus=1, num_gpus=1)
        cluster.wait_for_nodes()
        both = {**sets, "gpus_per_trial": 0.5, "cpus_per_trial": 0.5}
        try:
            free = run(args.space, args.storage, f"free-{stamp}", asha=True, sets=both, label="no --num-gpus",
                       address=cluster.address)
            capped = run(args.space, args.storage, f"capped-{stamp}", asha=True, sets=both,
                         label=f"--num-gpus {args.cluster}", address=cluster.address, num_gpus=args.cluster)
        finally:
            import ray

            ray.shutdown()
            cluster.shutdown()
        args.limit = args.cluster  # printed as below
    elif args.limit:
        free = run(args.space, args.storage, f"free-{stamp}", asha=True, sets=sets, label="no limit")
        capped = run(args.space, args.storage, f"capped-{stamp}", asha=True,
                     sets={**sets, "max_concurrent": args.limit}, label=f"limit {args.limit}")
    if args.limit:
        print(header)
        for r in (free, capped):
            print(f"{r['label']:12s}{r['trials']:8d}{r['epochs']:8d}{r['trial_seconds']:10.0f}{r['wall_s']:9.0f}"
                  f"{r['best_error_rate']:12.4f}")
        print(f"{capped['label']}: {capped['epochs'] / free['epochs']:.2f}x the epochs of {free['label']}, best "
              f"error rate {capped['best_error_rate'] - free['best_error_rate']:+.4f} (target: <= 1.1x, same best)")
        if args.json:
            Path(args.json).write_text(json.dumps({"free": free, "capped": capped}, indent=2))
        return
    with_asha = run(args.space, args.storage, f"asha-{stamp}", asha=True, sets=sets)
    full = run(args.space, args.storage, f"full-{stamp}", asha=False, sets=sets)
    print(header)
    for r in (with_asha, full):
        print(f"{r['label']:12s}{r['trials']:8d}{r['epochs']:8d}{r['trial_seconds']:10.0f}"
              f"{r['wall_s']:9.0f}{r['best_error_rate']:12.4f}")
    share = with_asha["epochs"] / full["epochs"]
    gap = with_asha["best_error_rate"] - full["best_error_rate"]
    print(f"ASHA used {share:.0%} of the epochs; best error rate {gap:+.4f} against the full run "
          f"(target: <= 40% of epochs, within 0.02)")
    if args.json:
        Path(args.json).write_text(json.dumps({"asha": with_asha, "full": full, "epoch_share": share,
                                               "best_gap": gap}, indent=2))


if __name__ == "__main__":
    main()
