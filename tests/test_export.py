"""The winner as a model (export.py, predict.py, evaluation.py): a real search keeps its best trials'
weights; `tunekit export` writes a model folder; `predict` and `evaluate` use it without Ray; each bad
input is one message and exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import tunekit
from tunekit.cli import main
from tunekit.data.shapes import render
from tunekit.export import MANIFEST_FILE, WEIGHTS_FILE


@pytest.fixture(scope="module")
def run(grid_run):
    """conftest's grid search: 4 trials of test_resnet (pool x lr, 3 epochs, ASHA), keep_best 3: completed and
    stopped trials."""
    return grid_run


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_best_trials_keep_their_weights_and_no_checkpoint(run):
    trials = run.trials.sort_values(["error_rate", "trial"]).reset_index(drop=True)
    kept = [(Path(p) / WEIGHTS_FILE).is_file() for p in trials["path"]]
    assert kept == [True, True, True, False]  # the best 3 by the metric at their last epoch
    assert not any(list(Path(p).glob("checkpoint_*")) for p in trials["path"])
    size = (Path(trials["path"][0]) / WEIGHTS_FILE).stat().st_size
    assert 1.5e6 < size < 2.5e6  # test_resnet's ~0.48M float32 parameters, nothing else


def test_export_evaluate_predict(run, tmp_path):
    out = tmp_path / "best"
    result = cli("export", run.path, out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    best = run.trials.sort_values(["error_rate", "trial"]).iloc[0]
    assert manifest["source"]["trial"] == best["trial"] and manifest["source"]["rank"] == 1
    assert (manifest["model"], manifest["img_size"], manifest["resize"]) == ("test_resnet", 32, "crop")
    assert manifest["classes"] == ["circle", "cross", "hexagon", "square", "star", "triangle"]
    assert manifest["format_version"] == 1 and set(manifest["versions"]) == {"tunekit", "timm", "torch"}
    assert (manifest["precision"], manifest["trained_on"]) == ("fp32", "cpu")  # predict keeps to it on a GPU
    # the split training made, through the same preprocessing: the trial's own final error rate
    data = json.loads((run.path / "tunekit_spec.json").read_text())["data"]  # the search's own
    result = cli("evaluate", out, "--data", data, "--split", "valid")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert abs(metrics["error_rate"] - best["error_rate"]) <= 0.005 and metrics["n_images"] == 48  # 20% of 240
    confusion = pd.read_csv(out / "evaluation" / "confusion.csv", index_col=0)
    assert confusion.to_numpy().sum() == 48 and (out / "evaluation" / "confusion.png").is_file()
    # a folder of new images, recursively
    (tmp_path / "pics" / "sub").mkdir(parents=True)
    for i in range(5):
        img, labels = render(i, 99, 40, False)
        img.save(tmp_path / "pics" / ("sub" if i % 2 else "") / f"{labels[0]}_{i}.jpg")
    result = cli("predict", out, tmp_path / "pics", "--top", "2", "--csv", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "p.csv")
    assert len(rows) == 5 and list(rows.columns) == ["path", "label", "probability", "top_1", "p_1", "top_2", "p_2"]
    assert set(rows["label"]) <= set(manifest["classes"]) and (rows["label"] == rows["top_1"]).all()
    assert ((rows["p_1"] >= rows["p_2"]) & (rows["probability"] == rows["p_1"])).all()


def test_python_api_loads_and_predicts_paths_pil_images_and_arrays(run, tmp_path):
    model = run.best_model()
    assert isinstance(model.module, __import__("torch").nn.Module) and model.classes[0] == "circle"
    img, _ = render(3, 5, 40, False)
    img.save(tmp_path / "one.png")
    by_path, by_pil, by_array = model.predict([tmp_path / "one.png", img, np.asarray(img)], top=3)
    assert by_path.labels == by_pil.labels == by_array.labels
    assert by_path.probability == pytest.approx(by_pil.probability, abs=1e-6)
    assert len(by_path.top) == 3 and sum(p for _, p in by_path.top) <= 1.0
    exported = tunekit.load_model(_export(run, tmp_path / "m"))
    assert exported.predict([img])[0].labels == by_pil.labels


def test_unreadable_files_are_listed_skipped_and_exit_1(run, tmp_path):
    model_dir = _export(run, tmp_path / "m")
    (tmp_path / "pics").mkdir()
    render(0, 1, 40, False)[0].save(tmp_path / "pics" / "ok.jpg")
    (tmp_path / "pics" / "broken.jpg").write_text("not an image")
    result = cli("predict", model_dir, tmp_path / "pics")
    assert result.exit_code == 1
    assert "ok.jpg," in result.output and "skipped 1 unreadable image(s)" in result.output
    assert "broken.jpg: not an image" in result.output


def _export(run, out: Path) -> Path:
    if not (out / MANIFEST_FILE).is_file():
        assert cli("export", run.path, out).exit_code == 0
    return out


@pytest.mark.parametrize(("case", "expect"), [
    ("rank-beyond-kept", r"--rank 4: the search kept the weights of 3 trial\(s\) \(keep_best=3\)"),
    ("trial-unknown", r"--trial nope: no finished trial of .* has it in its name"),
    ("no-finished-trial", r"has no finished trial to export"),
    ("format-version", r"is format version 9; this tunekit reads version 1"),
    ("class-count", r"4 class names in its manifest, but the weights' head has 6 outputs"),
    ("predict-empty-folder", r"no images in folder '.*empty'"),
    ("evaluate-unknown-class", r"has class\(es\) \['zebra'\] that the model does not know"),
])
def test_bad_input_is_one_message(run, tmp_path, case, expect):
    import re

    model = _export(run, tmp_path / "m")
    if case == "rank-beyond-kept":
        args = ["export", run.path, tmp_path / "x", "--rank", "4"]
    elif case == "trial-unknown":
        args = ["export", run.path, tmp_path / "x", "--trial", "nope"]
    elif case == "no-finished-trial":
        empty = tmp_path / "run"
        shutil.copytree(run.path, empty)
        for trial in empty.glob("run_trial_*"):
            (trial / "progress.csv").write_text("")  # as a search killed before any epoch leaves them
        args = ["export", empty, tmp_path / "x"]
    elif case in ("format-version", "class-count"):
        manifest = json.loads((model / MANIFEST_FILE).read_text())
        manifest.update({"format_version": 9} if case == "format-version" else {"classes": manifest["classes"][:4]})
        (model / MANIFEST_FILE).write_text(json.dumps(manifest))
        render(0, 1, 40, False)[0].save(tmp_path / "one.jpg")
        args = ["predict", model, tmp_path / "one.jpg"]
    elif case == "predict-empty-folder":
        (tmp_path / "empty").mkdir()
        args = ["predict", model, tmp_path / "empty"]
    else:
        for cls in ("circle", "zebra"):
            (tmp_path / "test" / cls).mkdir(parents=True)
            for i in range(3):
                render(i, 2, 40, False)[0].save(tmp_path / "test" / cls / f"{i}.jpg")
        args = ["evaluate", model, "--data", f"folder:{tmp_path / 'test'}"]
    result = cli(*args)
    assert result.exit_code == 2 and re.search(expect, result.output), result.output
    assert "Traceback" not in result.output
