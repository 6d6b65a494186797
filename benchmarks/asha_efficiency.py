"""Search efficiency: the demo space with ASHA against every trial run to the end.

    python benchmarks/asha_efficiency.py [--space search_spaces/demo.py] [--storage /tmp/asha-bench] [--set K=V]

Runs the same space twice (same seed, so the same 16 sampled configurations) and prints, for each,
the epochs spent, the trial-seconds (sum of the trials' fit times), the wall time and the best
error rate found. The target: ASHA reaches the full run's best error rate within 0.02 for at most
40% of its epochs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import tunekit
from tunekit.spec import parse_override


def run(space: Path, storage: Path, name: str, asha: bool, sets: dict) -> dict:
    overrides = dict(sets) if asha else {**sets, "asha": None}
    start = time.perf_counter()
    found = tunekit.search(space, storage_path=storage, name=name, overrides=overrides, echo=lambda line: None)
    wall = time.perf_counter() - start
    df = found.trials
    return {"asha": asha, "trials": len(df), "epochs": int(df["epochs_run"].sum()),
            "trial_seconds": float(df["fit_time"].sum()), "wall_s": wall,
            "best_error_rate": float(df["best_error_rate"].min())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=Path(__file__).resolve().parents[1] / "search_spaces" / "demo.py")
    parser.add_argument("--storage", type=Path, default=Path("/tmp/tunekit-asha-bench"))
    parser.add_argument("--json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for both runs, as tunekit search --set")
    args = parser.parse_args()
    sets = dict(parse_override(s) for s in args.set)
    stamp = int(time.time())
    with_asha = run(args.space, args.storage, f"asha-{stamp}", asha=True, sets=sets)
    full = run(args.space, args.storage, f"full-{stamp}", asha=False, sets=sets)
    print(f"{'':8s}{'trials':>8s}{'epochs':>8s}{'trial-s':>10s}{'wall s':>9s}{'best error':>12s}")
    for r in (with_asha, full):
        print(f"{'ASHA' if r['asha'] else 'full':8s}{r['trials']:8d}{r['epochs']:8d}{r['trial_seconds']:10.0f}"
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
