"""The report at the study's scale: `tunekit report` on study-format CSVs of 1,000 and 5,000 runs.

    python benchmarks/report_scale.py                     # 1,000 and 5,000 runs
    python benchmarks/report_scale.py --runs 1020 --keep /tmp/study

Each CSV is in the study's export format (dataset, model_name, error_rate, fit_time, GPU_mem,
learning_rate, concat_pool, resize_method, num_experiments) over the study's 85 model names
(search_spaces/seed_sweep.py), with a known structure: a per-model error level, concat pooling
better by 0.010, squish better by 0.004, lr 0.008 better than 0.02 by 0.006, noise sd 0.005, and
``num_experiments`` (the seed) pure noise. The time is the whole command in a fresh process (start,
imports, loading, analysis, plots, HTML), as a user waits for it.
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
            records.append(record)
            print(json.dumps(record))
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
