"""The scoring report: the study's ranking reproduced exactly, effects, files, bad input."""

from __future__ import annotations

import base64
import io
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


def test_html_is_self_contained_with_interactive_charts(study_csv, tmp_path):
    rp.write(rp.build(rp.load_sources([study_csv])), tmp_path)
    page = (tmp_path / "report.html").read_text()
    # error against fit time and GPU memory, and fine-tuning against ImageNet top-1, two datasets
    assert page.count("Plotly.newPlot(") == 6
    assert page.count("plotly.js v") == 1  # plotly.js inlined once, for the page's first chart
    assert "<table" in page
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=[\"']?https?:", page)  # nothing fetched: offline
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)  # charts not interactive
    for data in images:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        assert img.format == "PNG" and img.size[0] > 300
    md = (tmp_path / "report.md").read_text()  # report.md keeps the PNGs
    assert "![pets: error rate against fit time (s)](error_vs_fit_time_pets.png)" in md


def test_rank_agreement_between_datasets(study_csv):
    rep = rp.build(rp.load_sources([study_csv]))
    (row,) = rep.rank_agreement.to_dict("records")
    assert (row["dataset_a"], row["dataset_b"], row["models"]) == ("pets", "planet", 8)
    assert list(rp.side_by_side(rep.ranking).columns) == ["pets", "planet"]


def test_the_reports_spearman_and_quantiles_are_scipy_stats_own():
    """The report computes without importing scipy.stats (0.7 s of every search's end): the same numbers."""
    from scipy import stats

    from tunekit.report.estimates import _t_interval, spearman_interval
    from tunekit.report.transfer import spearman

    rng = np.random.default_rng(0)
    for n in (5, 8, 86):
        for _ in range(50):  # top-1 rounded to tie often, as timm's table's do
            a, b = pd.Series(rng.normal(size=n).round(1)), pd.Series(rng.normal(size=n))
            assert spearman(a, -b) == pytest.approx(stats.spearmanr(a, -b)[0], abs=1e-12)
    assert np.isnan(spearman(pd.Series([1.0, np.nan, 3.0, 4.0]), pd.Series([1.0, 2.0, 3.0, 4.0])))
    low, high = _t_interval(0.5, 0.1, 7)
    assert high - 0.5 == pytest.approx(stats.t.ppf(0.975, 7) * 0.1, rel=1e-12)
    z, se = np.arctanh(0.6), np.sqrt((1 + 0.18) / 17)
    assert spearman_interval(0.6, 20) == pytest.approx(np.tanh([z - stats.norm.ppf(0.975) * se,
                                                                 z + stats.norm.ppf(0.975) * se]), rel=1e-12)


@pytest.mark.parametrize(("order_b", "rho"), [([0, 1, 2, 3, 4], 1.0), ([4, 3, 2, 1, 0], -1.0),
                                              ([1, 0, 3, 2, 4], 0.8), ([0, 1, 2, 3], None)])
def test_rank_agreement_is_spearmans_rho(order_b, rho):
    """Five models ranked on two datasets: the same order, the reverse, two swaps (1 - 6*4/120); with
    four models in common, no estimate."""
    rows = []
    for dataset, order in (("a", [0, 1, 2, 3, 4]), ("b", order_b)):
        for rank, model in enumerate(order):
            rows.append({"dataset": dataset, "model": f"m{model}", "error_rate": 0.1 * (rank + 1), "fit_time": 10.0,
                         "gpu_mem": 1.0, "status": "completed", "run": "r"})
    (row,) = rp.build(pd.DataFrame(rows)).rank_agreement.to_dict("records")
    assert row["models"] == len(order_b)
    if rho is None:
        assert np.isnan(row["spearman"]) and np.isnan(row["ci_low"])
    else:
        assert row["spearman"] == pytest.approx(rho)
        assert row["ci_high"] - row["ci_low"] > 0.3  # five models: never a zero-width interval, even at |rho| = 1
        assert row["ci_low"] <= float(np.clip(rho, -0.9, 0.9)) <= row["ci_high"]


def test_the_spearman_interval_covers_as_it_says():
    """Fisher's z with Bonett and Wright's standard error, a perfect agreement taken one swap short of it:
    simulated on bivariate normals, the 95% interval covers the population Spearman correlation 93-99% of
    the time from 5 models up, where [1, 1] at a perfect agreement covered 87% (n = 5, rho 0.79)."""
    from scipy import stats

    rng = np.random.default_rng(0)
    for rho, n in ((0.79, 5), (0.79, 8), (0.95, 12), (0.5, 20)):
        truth = 6 / np.pi * np.arcsin(rho / 2)  # Spearman's rho of a bivariate normal
        hits = []
        for _ in range(1500):
            x = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
            low, high = rp.analysis.spearman_interval(stats.spearmanr(x[:, 0], x[:, 1])[0], n)
            assert high > low
            hits.append(low <= truth <= high)
        assert 0.93 <= np.mean(hits) <= 0.995, (rho, n, np.mean(hits))


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


def test_repeats_table_counts_the_seeds():
    rows = [{"dataset": "d", "model": m, "pool": p, "seed": seed, "error_rate": 0.1 + 0.001 * seed, "fit_time": 10.0,
             "gpu_mem": 1.0, "status": "completed", "run": "r"}
            for m in ("resnet18", "convnext_tiny") for seed in (0, 1, 2) for p in ("avg", "concat")]
    repeats = rp.build(pd.DataFrame(rows)).sections["d"]["repeats"]
    assert set(repeats["count"]) == {3} and len(repeats) == 4
    assert repeats["mean"].tolist() == pytest.approx([0.101] * 4) and repeats["min"].tolist() == pytest.approx([0.1] * 4)


def test_the_report_answers_whether_imagenet_accuracy_is_reproduced(tmp_path):
    """Study-format rows (older timm names among them) whose fine-tune error falls with ImageNet top-1, but
    for one model that fine-tunes far better than its top-1 predicts: the rank correlation with its interval,
    that model named, the chart in both reports; fewer than 5 models with a top-1: nothing shown."""
    from tunekit.timm_table import load

    names = ["resnet34.tv_in1k", "resnet50.tv_in1k", "densenet121.tv_in1k", "densenet201.tv_in1k",
             "resnet101.tv_in1k", "inception_v3.tv_in1k", "convnext_tiny_in22k", "convnext_tiny_in22ft1k",
             "resnet152.tv_in1k"]
    rows = []
    for name in names:
        row = load().find(name)
        top1 = row.top1 or 82.0
        error = 0.5 - 0.005 * top1 if name != "densenet121.tv_in1k" else 0.01  # densenet121: far better
        fit_time = 1e6 / (row.infer_samples_per_s or 1e4)  # the faster, the sooner
        rows.append({"dataset": "pets", "model": name, "error_rate": error, "fit_time": fit_time, "gpu_mem": 1.0,
                     "status": "completed", "run": "r", "pretrained": True})
    # left out: a model trained from scratch (ImageNet's top-1 is its weights'), the worse of two names of one tag
    extra = [("resnet18", 0.3, False), ("resnet50", 0.5 - 0.005 * 80.382, True), ("resnet50.a1_in1k", 0.4, True)]
    rows += [{"dataset": "pets", "model": m, "error_rate": e, "fit_time": 1e6 / (load().find(m).infer_samples_per_s or 1e4),
              "gpu_mem": 1.0, "status": "completed", "run": "r", "pretrained": p} for m, e, p in extra]
    rep = rp.build(pd.DataFrame(rows))
    t = rep.transfer["pets"]
    assert len(t.models) == 9 and t.ranked == 12  # convnext_tiny.fb_in22k has no ImageNet top-1 in timm's table
    assert sorted(t.left_out) == ["convnext_tiny_in22k (no ImageNet top-1 in timm's table)",
                                  "resnet18 (trained from scratch)",
                                  "resnet50.a1_in1k (timm's resnet50.a1_in1k, as a better-ranked name)"]
    # an older name, read through timm's renames: its tag's top-1
    assert t.models.set_index("model").loc["convnext_tiny_in22ft1k", "tag"] == "convnext_tiny.fb_in22k_ft_in1k"
    assert t.speed is not None and t.speed[0] == pytest.approx(1.0)  # fit times follow the throughput exactly
    rho, low, high = t.accuracy
    assert 0.4 < rho < 1 and low < rho < high
    assert t.models.set_index("model").loc["densenet121.tv_in1k", "verdict"] == "fine-tunes better"
    assert (t.models["verdict"] == "").sum() == 8
    rp.write(rep, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "pets: is ImageNet accuracy reproduced for fine-tuning?" in md and "densenet121.tv_in1k" in md
    assert "Over 9 of the 12 ranked models" in md and "Left out: " in md and "1 - 0.05/9" in md
    assert "![pets: fine-tuning against ImageNet accuracy](imagenet_vs_finetune_pets.png)" in md
    assert "fine-tune error against ImageNet top-1" in (tmp_path / "report.html").read_text()
    few = rp.build(pd.DataFrame(rows[:4]))
    assert few.transfer["pets"] is None
    rp.write(few, tmp_path / "few")
    assert "is ImageNet accuracy reproduced" not in (tmp_path / "few" / "report.md").read_text()  # nothing shown
