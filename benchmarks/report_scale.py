"""The report at the study's scale: `tunekit report` on study-format CSVs of 1,000 and 5,000 runs.

    python benchmarks/report_scale.py                     # 1,000 and 5,000 runs
    python benchmarks/report_scale.py --runs 1020 --keep /tmp/study
    python benchmarks/report_scale.py --runs 1020 --run-folder          # also as a run folder of 1,020 trials

Each CSV is in the study's export format (dataset, model_name, error_rate, fit_time, GPU_mem,
learning_rate, concat_pool, resize_method, num_experiments) over the study's 85 model names
(search_spaces/seed_sweep.py), with a known structure: a per-model error level, concat pooling
better by 0.010, squish better by 0.004, lr 0.008 better than 0.02 by 0.006, noise sd 0.005, and
``num_experiments`` (the seed) pure noise. The time is the whole command in a fresh process (start,
imports, loading, analysis, plots, HTML), as a user waits for it. With ``--run-folder`` the same rows
are also written as a search's run folder (a trial folder each, in Ray's layout: params.json,
progress.csv of 6 epochs, result.json, tunekit_run.json, and Ray's experiment state) and reported from
there, and keep-best is timed: the pass over every ended trial at the end of a search, and the sweep
the driver makes when a trial ends (read Ray's state, rank the ended trials, look at the trial that
ended and at the kept ones).
"""

from __future__ import annotations

import argparse
import itertools
import json
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).parent.parent


def study_csv(path: Path, runs: int, seed: int = 0) -> Path:
    """``runs`` rows of the study's export format: models x pool x lr x resize x seeds x datasets."""
    models = runpy.run_path(str(ROOT / "search_spaces" / "seed_sweep.py"))["MODELS"]
    rng = np.random.default_rng(seed)
    base = {m: 0.04 + 0.10 * rng.random() for m in models}
    time_of = {m: 20 + 200 * rng.random() for m in models}
    mem_of = {m: 1 + 10 * rng.random() for m in models}
    rows = []
    grid = itertools.product(range(1000), ("pets", "planet"), models, (True, False), (0.008, 0.02),
                             ("squish", "crop"))
    for run, dataset, model, concat, lr, resize in grid:
        if len(rows) == runs:
            break
        error = (base[model] - 0.010 * concat - 0.004 * (resize == "squish") + 0.006 * (lr == 0.02)
                 + rng.normal(0, 0.005))
        rows.append({"dataset": dataset, "model_name": model, "error_rate": round(max(error, 0.001), 5),
                     "fit_time": round(time_of[model] * rng.uniform(0.95, 1.05), 2),
                     "GPU_mem": round(mem_of[model] * rng.uniform(0.99, 1.01), 3), "learning_rate": lr,
                     "concat_pool": concat, "resize_method": resize, "num_experiments": run})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run_folder(csv: Path, run: Path) -> Path:
    """The CSV's rows as a finished search's run folder: a trial folder each (one dataset, as a search)."""
    df = pd.read_csv(csv)
    run.mkdir(parents=True)
    (run / "tunekit_spec.json").write_text(json.dumps({"data": "pets", "metric": "error_rate", "mode": "min",
                                                      "asha": None, "keep_best": 3}))
    states = []
    for i, row in df.iterrows():
        name = f"run_trial_00000_{i:05d}"
        trial = run / name
        trial.mkdir()
        config = {"model": row["model_name"], "pool": "concat" if row["concat_pool"] else "avg",
                  "resize": row["resize_method"], "lr": row["learning_rate"], "seed": int(row["num_experiments"]),
                  "pretrained": True, "epochs": 5, "freeze_epochs": 1, "data": "pets"}
        (trial / "params.json").write_text(json.dumps(config))
        error = row["error_rate"]
        epochs = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1 / e, "error_rate": error * (1 + (6 - e) / 6),
                   "accuracy": 1 - row["error_rate"], "fit_time": row["fit_time"] * e / 6, "images_per_s": 500.0,
                   "gpu_mem": row["GPU_mem"], "lr": 1e-3} for e in range(1, 7)]
        pd.DataFrame(epochs).to_csv(trial / "progress.csv", index=False)
        (trial / "result.json").write_text("\n".join(json.dumps({**e, "done": e["epoch"] == 6}) for e in epochs) + "\n")
        (trial / "tunekit_run.json").write_text(json.dumps({"device": "cuda", "img_size": 224, "classes": ["a", "b"],
                                                            "multilabel": False, "model": {"mean": [0.5] * 3,
                                                                                           "std": [0.5] * 3}}))
        states.append([json.dumps({"relative_logdir": name, "status": "TERMINATED", "config": config}), "{}"])
    (run / "experiment_state-2026-11-24_00-00-00.json").write_text(json.dumps({"trial_data": states}))
    return run


def time_sweeps(run: Path) -> tuple[float, float]:
    """Seconds of the end-of-search keep-best pass over every ended trial, and of the driver's sweep when one
    more trial ends (Ray's state read, the ranking, the trial that ended and the kept ones looked at)."""
    from tunekit import runfolder
    from tunekit.export import keep_weights

    states = runfolder.ray_states(run)
    ended = {n for n, s in states.items() if s == "TERMINATED"}
    finals = {n: float(runfolder.last_json_line(run / n / "result.json")["error_rate"]) for n in ended}
    start = time.perf_counter()
    kept = keep_weights(run, finals, "min", 3, ended)
    full = time.perf_counter() - start
    start = time.perf_counter()
    states = runfolder.ray_states(run)
    keep_weights(run, finals, "min", 3, {n for n, s in states.items() if s == "TERMINATED"},
                 candidates={next(iter(ended))} | kept)
    return full, time.perf_counter() - start


def time_report(csv: Path, out: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(["tunekit", "report", str(csv), "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"tunekit report failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--keep", type=Path, help="keep the CSVs and reports here")
    parser.add_argument("--run-folder", action="store_true", help="also report the rows as a run folder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        for runs in args.runs:
            csv = study_csv(where / f"study_{runs}.csv", runs)
            df = pd.read_csv(csv)
            seconds = time_report(csv, where / f"report_{runs}")
            files = sorted(p.name for p in (where / f"report_{runs}").iterdir())
            record = {"runs": runs, "models": int(df["model_name"].nunique()), "datasets": int(df["dataset"].nunique()),
                      "seconds": round(seconds, 2), "files": len(files)}
            if args.run_folder:
                run = run_folder(csv, where / f"run_{runs}")
                record["run_folder_trials"] = len(list(run.glob("run_trial_*")))
                record["run_folder_seconds"] = round(time_report(run, where / f"report_run_{runs}"), 2)
                full, one = time_sweeps(run)
                record["keep_best_full_pass_s"], record["keep_best_sweep_s"] = round(full, 3), round(one, 3)
            records.append(record)
            print(json.dumps(record))
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
