"""The scoring report: the study's ranking reproduced exactly, effects, files, bad input."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from tunekit import report as rp
from tunekit.cli import main
from tunekit.errors import TunekitError

MODELS = ["convnext_tiny", "convnext_small", "resnet26d", "resnet18", "vit_small_patch16_224",
          "swinv2_cr_tiny_ns_224", "efficientnetv2_rw_t", "levit_256"]


@pytest.fixture
def study_csv(tmp_path):
    """The study's export format: 8 models x 2 datasets x 3 runs, with config columns."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset in ("pets", "planet"):
        for i, model in enumerate(MODELS):
            for run in (1, 2, 3):
                rows.append({
                    "dataset": dataset, "model_name": model,
                    "error_rate": round(0.03 + 0.01 * i + rng.uniform(0, 0.02), 5),
                    "fit_time": round(40 + 12 * ((i * 7) % 8) + rng.uniform(0, 10), 3),
                    "GPU_mem": round(1 + 0.5 * ((i * 3) % 8) + rng.uniform(0, 0.2), 4),
                    "learning_rate": 0.008, "concat_pool": run % 2 == 0, "resize_method": "squish",
                    "num_experiments": run,
                })
    path = tmp_path / "sweep.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_study_csv_reproduces_the_study_pivot_and_score_exactly(study_csv):
    # the study's own computation, by hand
    df = pd.read_csv(study_csv)
    df["family"] = df.model_name.str.extract(r"^([a-z]+?(?:v2)?)(?:\d|_|$)")
    df.loc[df.family == "swinv2", "family"] = "swin"
    pt_all = df.pivot_table(values=["error_rate", "fit_time", "GPU_mem"], index=["dataset", "family", "model_name"],
                            aggfunc="min").reset_index()
    pt_all["score"] = pt_all.error_rate * (pt_all.fit_time + 80)

    ours = rp.ranking(rp.load_sources([study_csv]))
    for dataset in ("pets", "planet"):
        expected = pt_all[pt_all.dataset == dataset].sort_values("score").reset_index(drop=True)
        got = ours[ours.dataset == dataset].reset_index(drop=True)
        assert got["model"].tolist() == expected["model_name"].tolist()
        assert got["family"].tolist() == expected["family"].tolist()
        for ours_col, study_col in (("error_rate", "error_rate"), ("fit_time", "fit_time"), ("gpu_mem", "GPU_mem"),
                                    ("score", "score")):
            assert got[ours_col].tolist() == expected[study_col].tolist()  # exactly, not approximately
        assert got["rank"].tolist() == list(range(1, len(MODELS) + 1))


@pytest.mark.parametrize(("model", "fam"), [
    ("convnext_tiny", "convnext"), ("convnext_tiny.fb_in22k", "convnext"), ("resnet26d", "resnet"),
    ("efficientnetv2_rw_t", "efficientnetv2"), ("swinv2_cr_tiny_ns_224", "swin"), ("vit_small_patch16_224", "vit"),
    ("levit_256", "levit"), ("regnety_006", "regnety"), ("resnetv2_50", "resnetv2"), ("test_resnet", "test")])
def test_family_rule(model, fam):
    assert rp.family(model) == fam


def test_pareto_front():
    df = pd.DataFrame({"fit_time": [10, 20, 30, 15, 40], "error_rate": [0.5, 0.2, 0.1, 0.6, 0.1]})
    assert rp.pareto(df, "fit_time").tolist() == [True, True, True, False, False]


def test_paired_effects_and_repeats():
    rows = []
    for model, concat_gain in (("resnet18", -0.02), ("convnext_tiny", 0.01)):
        for seed in (0, 1, 2):
            for pool in ("avg", "concat"):
                err = 0.10 + (concat_gain if pool == "concat" else 0.0) + 0.001 * seed
                rows.append({"dataset": "d", "model": model, "pool": pool, "seed": seed, "error_rate": err,
                             "fit_time": 10.0, "gpu_mem": 1.0, "status": "completed", "run": "r"})
    runs = pd.DataFrame(rows)
    fx = rp.effects(runs).set_index("family")
    assert fx.loc["all", "pairs"] == 6 and fx.loc["all", "mean_diff"] == pytest.approx(-0.005)
    assert fx.loc["resnet", "mean_diff"] == pytest.approx(-0.02) and fx.loc["resnet", "to_wins"] == 3
    assert fx.loc["convnext", "mean_diff"] == pytest.approx(0.01) and fx.loc["convnext", "to_wins"] == 0
    assert (fx["from"] == "avg").all() and (fx["to"] == "concat").all()
    repeats = rp.build(runs).sections["d"]["repeats"]
    assert set(repeats["count"]) == {3} and len(repeats) == 4


def test_report_files_from_csv_and_round_trip(study_csv, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["report", str(study_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pets: top 8 by score" in result.output and "planet: top 8 by score" in result.output
    for name in ("report.md", "report.html", "results.csv", "ranking.csv", "error_vs_fit_time_pets.png",
                 "error_vs_gpu_mem_planet.png"):
        assert (out / name).is_file(), name
    ranking = pd.read_csv(out / "ranking.csv")
    assert list(ranking.columns) == ["dataset", "family", "model", "error_rate", "fit_time", "gpu_mem", "score", "rank"]
    for _, part in ranking.groupby("dataset"):
        assert part["score"].is_monotonic_increasing
    md = (out / "report.md").read_text()
    assert "## pets" in md and "## planet" in md and "Do the datasets agree?" in md and "spearman" in md
    # tunekit's own results.csv round-trips to the same ranking
    again = rp.ranking(rp.load_sources([out / "results.csv"]))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), rp.ranking(rp.load_sources([study_csv])))


def test_html_is_self_contained_with_real_images(study_csv, tmp_path):
    rp.write(rp.build(rp.load_sources([study_csv])), tmp_path)
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4 and "<table" in page and 'src="http' not in page
    for data in images:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        assert img.format == "PNG" and img.size[0] > 300


def test_rank_agreement_between_datasets(study_csv):
    rep = rp.build(rp.load_sources([study_csv]))
    (row,) = rep.rank_agreement.to_dict("records")
    assert (row["dataset_a"], row["dataset_b"], row["models"]) == ("pets", "planet", 8)
    assert list(rp.side_by_side(rep.ranking).columns) == ["pets", "planet"]


@pytest.mark.parametrize(("order_b", "rho"), [([0, 1, 2, 3], 1.0), ([3, 2, 1, 0], -1.0), ([1, 0, 3, 2], 0.6)])
def test_rank_agreement_is_spearmans_rho(order_b, rho):
    """Four models ranked on two datasets: the same order, the reverse, and two swaps (1 - 6*4/60)."""
    rows = []
    for dataset, order in (("a", [0, 1, 2, 3]), ("b", order_b)):
        for rank, model in enumerate(order):
            rows.append({"dataset": dataset, "model": f"m{model}", "error_rate": 0.1 * (rank + 1), "fit_time": 10.0,
                         "gpu_mem": 1.0, "status": "completed", "run": "r"})
    (row,) = rp.build(pd.DataFrame(rows)).rank_agreement.to_dict("records")
    assert row["models"] == 4 and row["spearman"] == pytest.approx(rho)


def test_bad_input_gives_a_message(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunekitError, match="holds no trial folders"):
        rp.load_sources([tmp_path / "empty"])
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,model_name,error_rate\npets,resnet18,0.1\n")
    with pytest.raises(TunekitError, match=r"has no column\(s\) \['fit_time'\]"):
        rp.load_sources([bad])
    result = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "nothing to report" in result.output and "Traceback" not in result.output


def test_all_errored_runs_still_report(tmp_path):
    runs = pd.DataFrame([{"dataset": "d", "model": "resnet18", "error_rate": np.nan, "fit_time": np.nan,
                          "gpu_mem": np.nan, "status": "errored", "error": "CUDA out of memory", "run": "r"}])
    rep = rp.build(runs)
    files = rp.write(rep, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Errored and diverged runs" in md and "CUDA out of memory" in md and "Not ranked" in md
    assert (tmp_path / "report.html").is_file() and len(files) >= 4


def test_half_written_run_folder(tmp_path):
    """Trial folders as a killed search leaves them: one with results, one that never reported."""
    run = tmp_path / "half"
    done, empty = run / "run_trial_a_00000", run / "run_trial_a_00001"
    for trial in (done, empty):
        trial.mkdir(parents=True)
        (trial / "params.json").write_text('{"model": "resnet18", "pool": "avg", "epochs": 2, "pretrained": false}')
    (done / "progress.csv").write_text("epoch,error_rate,fit_time,gpu_mem\n1,0.5,10.0,0.0\n2,0.4,20.0,0.0\n")
    (done / "result.json").write_text('{"epoch": 2, "done": true}\n{"epoch": 3, "trunc')  # cut mid-write
    (empty / "progress.csv").write_text("")
    runs = rp.load_sources([run])
    status = dict(zip(runs["trial"], runs["status"]))
    assert status == {"run_trial_a_00000": "completed", "run_trial_a_00001": "not started"}
    rp.write(rp.build(runs), tmp_path / "out")
    assert "resnet18" in (tmp_path / "out" / "ranking.csv").read_text()


def test_a_real_run_folder_reads_back_and_reports(tmp_path):
    """The run folder of a real search (tests/fixtures/real_run): one row per trial, Ray's status."""
    runs = rp.load_sources([Path(__file__).parent / "fixtures" / "real_run"])
    rows = runs.set_index("lr")
    assert rows["status"].to_dict() == {0.02: "completed", 0.002: "completed", 0.0005: "stopped early",
                                        0.01: "errored"}
    assert rows["epochs_run"].to_dict() == {0.02: 2, 0.002: 2, 0.0005: 1, 0.01: 1}
    assert rows.loc[0.01, "error"].startswith("tunekit.tuner.trainable.TrialOutOfMemory")
    assert (runs["dataset"] == "shapes").all() and (runs["model"] == "test_resnet").all()
    rp.write(rp.build(runs), tmp_path)
    results = pd.read_csv(tmp_path / "results.csv")
    assert results.set_index("lr")["status"].to_dict() == rows["status"].to_dict()


def test_effects_under_asha_compare_every_trial_at_the_first_rung(tmp_path):
    """Promoting ASHA completes few trials; at its first rung every trial has trained the same epochs."""
    run = tmp_path / "asha"
    run.mkdir()
    (run / "tunekit_spec.json").write_text(json.dumps({"data": "shapes", "asha": {"grace_period": 1, "reduction_factor": 3}}))
    states = []
    for i, (pool, first, epochs) in enumerate([("avg", 0.40, 3), ("concat", 0.30, 3), ("avg", 0.70, 1),
                                               ("avg", 0.60, 1), ("concat", 0.50, 1), ("concat", 0.55, 1)]):
        trial = run / f"run_trial_c_{i:05d}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"model": "resnet18", "pool": pool, "lr": 0.01 * (i + 1),
                                                       "epochs": 3, "pretrained": False}))
        rows = [f"{e},{first - 0.1 * (e - 1):.2f},{10.0 * e},0.0" for e in range(1, epochs + 1)]
        (trial / "progress.csv").write_text("epoch,error_rate,fit_time,gpu_mem\n" + "\n".join(rows) + "\n")
        states.append([json.dumps({"relative_logdir": trial.name, "status": "TERMINATED"}), "{}"])
    (run / "experiment_state-2026-11-23_00-00-00.json").write_text(json.dumps({"trial_data": states}))
    runs = rp.load_sources([run])
    assert runs["first_rung_error_rate"].tolist() == [0.4, 0.3, 0.7, 0.6, 0.5, 0.55]
    assert (runs["status"] == "completed").sum() == 2
    fx = rp.effects(runs)
    at_rung = fx[(fx["basis"] == "all trials at epoch 1") & (fx["axis"] == "pool") & (fx["family"] == "all")]
    (row,) = at_rung.to_dict("records")  # all six trials: concat (0.30, 0.50, 0.55) against avg (0.40, 0.70, 0.60)
    assert row["method"] == "unpaired means (3 vs 3 runs)" and row["mean_diff"] == pytest.approx(0.45 - 0.5667, abs=1e-3)
    assert set(fx["basis"]) == {"the completed runs", "all trials at epoch 1"}
    assert rp.importance(runs).name == "importance (all trials at epoch 1)"  # 6 trials, not the 2 completed
