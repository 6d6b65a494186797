"""The main job, as a user runs it: `tunekit search search_spaces/demo.py`, the README's first command.

The suite runs it once, as a new user's process (tests/demo_run.py, the ``first_demo`` fixture): the first 8 of
the demo's 16 trials with half its epochs on 2,000 of the shapes; tests/test_readme.py checks the command's output
and exit code among the README's, this test what the search made and promised."""

from __future__ import annotations

import json

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_demo_search_meets_its_promises(first_demo, tmp_path):
    proc, seconds, run = first_demo.proc, first_demo.seconds, first_demo.run
    assert proc.returncode == 0, proc.stdout + proc.stderr
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

    circles = generated_shapes(2000, 64, 0, multilabel=False) / "circle"  # the demo's images (generated alike)
    predict = CliRunner().invoke(main, ["predict", str(tmp_path / "best"), str(circles)])
    assert predict.exit_code == 0, predict.output
    rows = [line.split(",") for line in predict.stdout.splitlines()[1:]]
    assert len(rows) == len(list(circles.glob("*.jpg"))) and sum(r[1] == "circle" for r in rows) > len(rows) / 2
