"""Read a finished (or interrupted) search's folder into pandas, without Ray.

    python examples/read_results.py ~/ray_results/demo

Each trial folder holds params.json (its config), progress.csv (one row per epoch) and
tunekit_run.json (what it really ran on); ``tunekit.runfolder`` reads them (plain files, no
Ray), and this joins them into one table per epoch and one row per trial. (``tunekit report``
does more of the same: ``tunekit.report.load_run(run)`` gives one row per trial with its status.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from tunekit import runfolder


def load_epochs(run: Path) -> pd.DataFrame:
    """One row per (trial, epoch): the trial's config columns plus that epoch's metrics."""
    frames = []
    for trial in runfolder.trial_dirs(run):
        epochs = runfolder.read_progress(trial)
        if epochs.empty:
            continue  # a trial that never finished an epoch
        config = runfolder.trial_config(trial)
        for key in ("model", "pool", "head", "resize", "lr", "zero_init", "seed"):
            if key in config:
                epochs[key] = config[key]
        epochs["trial"] = trial.name
        frames.append(epochs)
    if not frames:
        raise SystemExit(f"no trial results in {run}")
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder, e.g. ~/ray_results/demo")
    args = parser.parse_args()
    epochs = load_epochs(args.run.expanduser())
    per_trial = epochs.sort_values("epoch").groupby("trial").agg(
        model=("model", "first"), epochs=("epoch", "max"), best_error_rate=("error_rate", "min"),
        fit_time=("fit_time", "max"), gpu_mem=("gpu_mem", "max"))
    print(per_trial.sort_values("best_error_rate").to_string(float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
