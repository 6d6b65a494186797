"""The side-by-side benchmarks against fastai (benchmarks/vs_fastai.py, frozen_epoch.py, first_rung.py): their
statistics and their checks of the setup. fastai itself is a benchmark dependency, not the suite's, so what
runs here is what does not train."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def bench(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # first_rung and frozen_epoch import vs_fastai as a sibling
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_intervals_cover_what_they_estimate():
    """The t interval of a mean, the chi-square interval of an sd and the F interval of a ratio of sds each
    cover the true value about 95% of the time, on normal draws of 10 (the benchmark's seeds)."""
    vf = bench("vs_fastai")
    rng = np.random.default_rng(0)
    hits = {"mean": 0, "sd": 0, "ratio": 0}
    n = 400
    for _ in range(n):
        a, b = list(rng.normal(0.4, 0.02, 10)), list(rng.normal(0.4, 0.01, 10))
        mean, half = vf.t_interval(a)
        hits["mean"] += abs(mean - 0.4) <= half
        _, low, high = vf.sd_interval(a)
        hits["sd"] += low <= 0.02 <= high
        _, low, high = vf.sd_ratio(a, b)
        hits["ratio"] += low <= 2.0 <= high
    for what, k in hits.items():
        assert 0.90 <= k / n <= 0.99, (what, k / n)


def runs(tunekit_sd: float, fastai_sd: float, seeds: int = 10) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"framework": f, "seed": s,
             "epochs": [{"epoch": e + 1, "error_rate": float(0.4 / (e + 1) + rng.normal(0, sd)),
                         "fit_time": 10.0 * (e + 1)} for e in range(3)]}
            for s in range(seeds) for f, sd in (("tunekit", tunekit_sd), ("fastai", fastai_sd))]


def test_table_shows_each_epochs_difference_and_each_frameworks_spread():
    vf = bench("vs_fastai")
    text = vf.table(runs(0.03, 0.01), "lite0")
    assert "(10 seeds: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in text
    rows = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 2  # the errors, then the spread
    ratio = float(rows[1].split("|")[4].split()[0])
    assert 1.5 < ratio < 6, rows[1]  # tunekit's sd 3x fastai's here
    assert "Seed-to-seed" not in vf.table(runs(0.01, 0.01, seeds=2), "x")  # 2 seeds: no spread estimate


def test_data_that_fastai_cannot_read_as_folders_is_one_message(tmp_path):
    vf = bench("vs_fastai")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        vf.check_ready({**vf.SETUP, "data": f"folder:{tmp_path}"})
    assert f"no valid/ in {tmp_path}" in str(e.value)
    with pytest.raises(SystemExit) as e:
        vf.check_ready({**vf.SETUP, "data": "fashion_mnist"})
    assert "give folder:DIR" in str(e.value)


def trials(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for pool in ("avg", "concat"):
        for lr in (0.001, 0.003, 0.01, 0.03):
            quality = rng.uniform(0.2, 0.5)
            rows += [{"config": f"{pool} lr {lr}", "pool": pool, "lr": lr, "seed": s,
                      "epoch1": quality + 0.15 + rng.normal(0, 0.03), "final": quality * 0.6 + rng.normal(0, 0.005)}
                     for s in (0, 1)]
    return pd.DataFrame(rows)


def test_first_rung_ranking_and_a_spread_swapped_in():
    fr = bench("first_rung")
    df = trials()
    configs, e1, final = fr.grid(df.sample(frac=1, random_state=0))  # any row order
    assert configs == sorted(df["config"].unique()) and e1.shape == final.shape == (8, 2)
    assert e1[configs.index("avg lr 0.01"), 1] == df.query("config == 'avg lr 0.01' and seed == 1")["epoch1"].item()
    assert np.allclose(fr.with_spread(e1, 1.0), e1)
    quiet = fr.with_spread(e1, 0.0)  # no seed noise: each trial at its configuration's mean
    assert np.allclose(quiet[:, 0], quiet[:, 1])
    assert fr.per_trial(e1, final) == pytest.approx(df[["epoch1", "final"]].corr("spearman").iloc[0, 1])
    assert fr.per_trial(quiet, final) > fr.per_trial(e1, final)
    low, high = fr.bootstrap(e1, final, fr.per_trial)
    assert -1 <= low <= fr.per_trial(e1, final) <= high <= 1
    assert fr.grid(df.drop(index=3))[1].shape == (7, 2)  # a configuration missing a seed is left out


def test_first_rung_report_reads_the_spread_from_a_vs_fastai_file(tmp_path):
    fr = bench("first_rung")
    path = tmp_path / "vs.json"
    path.write_text(json.dumps({"fine_tune": runs(0.02, 0.01)}))
    ratio, n = fr.spread_ratio(path)
    first = {f: [r["epochs"][0]["error_rate"] for r in runs(0.02, 0.01) if r["framework"] == f]
             for f in ("tunekit", "fastai")}
    assert ratio == pytest.approx(statistics.stdev(first["fastai"]) / statistics.stdev(first["tunekit"]))
    assert n == 10
    text = fr.report(trials(), path)
    assert "Spearman, epoch 1 against the final epoch (16 trials, 8 configurations" in text
    assert "ASHA (grace 1, reduction 3) goes on with 5 of 16 trials" in text
    assert f"sd ratio fastai/tunekit {ratio:.2f}, 10 seeds each" in text
