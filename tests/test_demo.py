"""The main job, as a user runs it: `tunekit search search_spaces/demo.py`.

The test runs the first 8 of the demo's 16 trials (the same configurations: the random search is
seeded) with half its epochs (4: ASHA's rungs stay at 1 and 3) on 2,000 of the shapes instead of
4,500, so that it costs well under a minute; the whole demo's time and best error rate are measured
by benchmarks/asha_efficiency.py and recorded in benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

DEMO = Path(__file__).resolve().parents[1] / "search_spaces" / "demo.py"


def tunekit(*args: str) -> subprocess.CompletedProcess:
    # A shell that still holds some cluster's address (nothing answers there): without --address a
    # search starts a Ray of its own all the same (ray.init alone would try to join it).
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "tunekit.cli", "search", str(DEMO), *args],
                          capture_output=True, text=True, timeout=600, env=env)


def test_demo_search_meets_its_promises(tmp_path):
    start = time.perf_counter()
    proc = tunekit("--storage-path", str(tmp_path), "--name", "demo", "--set", "num_samples=8", "--set", "epochs=4",
                   "--set", "data=shapes?n=2000")
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "demo"
    trials = sorted(run.glob("run_trial_*"))
    assert len(trials) == 8
    finals = []
    for trial in trials:
        acc = EventAccumulator(str(trial))
        acc.Reload()
        errors = acc.Scalars("error_rate")
        assert [e.step for e in errors] == list(range(1, len(errors) + 1))  # one value per epoch
        finals.append(min(e.value for e in errors))
    assert "stopped early by ASHA" in proc.stdout
    assert max(finals) - min(finals) >= 0.10, finals  # the search visibly matters
    print(f"demo: {seconds:.0f}s, {len(trials)} trials, best {min(finals):.3f}, worst {max(finals):.3f}, "
          f"run folder {sum(f.stat().st_size for f in run.rglob('*') if f.is_file()) / 1e6:.1f} MB")

    # the search wrote its report; `tunekit report` writes the same files anywhere
    files = ("report.md", "report.html", "results.csv", "ranking.csv", "effects.csv", "importance.csv",
             "error_vs_fit_time_shapes.png", "slice_lr_shapes.png", "learning_curves.png")
    assert all((run / f).is_file() for f in files), [f for f in files if not (run / f).is_file()]
    # a CPU run measures no GPU memory: a sentence, not a column of dots at 0
    assert not (run / "error_vs_gpu_mem_shapes.png").exists()
    assert "peak GPU memory (GiB) was 0 or missing in every run" in (run / "report.md").read_text()
    # effects only where the runs support them: 3 runs per level at least, lr (sampled) only as a trend

    effects = pd.read_csv(run / "effects.csv")
    estimated = effects[effects["estimate"].notna()]
    assert len(estimated) and (estimated["n_runs"] >= 6).all() and estimated["ci_low"].notna().all()
    assert effects.loc[effects["axis"] == "lr", "contrast"].str.startswith("trend per decade").all()
    # the commands after the search run in this process (their logic; the search above is the real process)
    from click.testing import CliRunner

    from tunekit.cli import main

    report = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "r")])
    assert report.exit_code == 0, report.output
    assert "shapes: top" in report.stdout and all((tmp_path / "r" / f).is_file() for f in files)
    ranking = (tmp_path / "r" / "ranking.csv").read_text().splitlines()
    scores = [float(line.split(",")[6]) for line in ranking[1:]]
    assert scores == sorted(scores)
    # (resuming a finished search starts nothing: tests/test_search.py)

    # the winner as a model: exported, evaluated on its own validation split, put to work on images
    kept = sorted(p.parent.name for p in run.glob("run_trial_*/model.safetensors"))
    assert len(kept) == 3  # keep_best's default
    export = CliRunner().invoke(main, ["export", str(run), str(tmp_path / "best")])
    assert export.exit_code == 0, export.output
    results = pd.read_csv(run / "results.csv").set_index("trial")
    trial = export.stdout.split()[1]
    assert trial in kept and results.loc[trial, "status"] in ("completed", "stopped early")
    evaluate = CliRunner().invoke(main, ["evaluate", str(tmp_path / "best"), "--data", "shapes?n=2000", "--split",
                                         "valid"])
    assert evaluate.exit_code == 0, evaluate.output
    error = json.loads((tmp_path / "best" / "evaluation" / "metrics.json").read_text())["error_rate"]
    assert abs(error - results.loc[trial, "error_rate"]) <= 0.005, (error, results.loc[trial, "error_rate"])
    from tunekit.data.dataset import generated_shapes

    circles = generated_shapes(2000, 64, 0, multilabel=False) / "circle"  # the images the demo trained on
    predict = CliRunner().invoke(main, ["predict", str(tmp_path / "best"), str(circles)])
    assert predict.exit_code == 0, predict.output
    rows = [line.split(",") for line in predict.stdout.splitlines()[1:]]
    assert len(rows) == len(list(circles.glob("*.jpg"))) and sum(r[1] == "circle" for r in rows) > len(rows) / 2
