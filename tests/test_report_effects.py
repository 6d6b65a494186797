"""Effects and importance (report/estimates.py): estimates only where the runs support them, with their
intervals and counts; a noise setting ranked last; bounded with many backbones."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pandas as pd
import pytest

from tunekit.report import estimates as fx
from tunekit.report import load_sources


def runs_from(rows: list[dict]) -> pd.DataFrame:
    base = {"dataset": "d", "fit_time": 10.0, "gpu_mem": 0.0, "status": "completed", "run": "r"}
    return pd.DataFrame([{**base, **row} for row in rows])


def grid(models, seeds=(0, 1, 2), gain=None, noise=0.0, rng=None):
    """A grid search over pool: error 0.10 + per-model concat gain + noise."""
    rows = []
    for model, seed, pool in itertools.product(models, seeds, ("avg", "concat")):
        err = 0.10 + (gain[model] if pool == "concat" else 0.0) + (rng.normal(0, noise) if rng else 0.001 * seed)
        rows.append({"model": model, "pool": pool, "seed": seed, "error_rate": err})
    return runs_from(rows)


def test_paired_differences_per_family_with_intervals():
    runs = grid(["resnet18", "convnext_tiny"], gain={"resnet18": -0.02, "convnext_tiny": 0.01})
    rows = fx.effects(runs).set_index("family")
    assert list(rows.columns) == [c for c in fx.COLUMNS if c != "family"]
    assert rows.loc["all", "estimate"] == pytest.approx(-0.005) and rows.loc["all", "n_runs"] == 12
    assert rows.loc["all", "method"] == "paired (6 pairs)" and rows.loc["all", "contrast"] == "concat vs avg"
    # the t-interval of the six differences (-0.02 x3, +0.01 x3): mean -0.005, sd 0.0164
    half = 2.5706 * np.std([-0.02] * 3 + [0.01] * 3, ddof=1) / np.sqrt(6)
    assert (rows.loc["all", "ci_low"], rows.loc["all", "ci_high"]) == pytest.approx((-0.005 - half, -0.005 + half),
                                                                                     abs=1e-5)
    assert rows.loc["resnet", "estimate"] == pytest.approx(-0.02) and rows.loc["resnet", "n_runs"] == 6
    assert rows.loc["convnext", "estimate"] == pytest.approx(0.01)
    assert (rows["basis"] == "the completed runs").all()


def test_one_family_gives_no_family_rows():
    rows = fx.effects(grid(["resnet18", "resnet34"], gain={"resnet18": -0.02, "resnet34": -0.01}))
    assert rows["family"].tolist() == ["all"]


def test_fewer_than_three_pairs_or_runs_per_level_give_no_estimate():
    runs = grid(["resnet18"], seeds=(0, 1), gain={"resnet18": -0.02})  # two pairs
    (row,) = fx.effects(runs).to_dict("records")
    assert np.isnan(row["estimate"]) and row["method"] == "not estimated: 2 vs 2 runs: need 3 per level"


def test_random_search_uses_the_additive_model_holding_the_backbone_fixed():
    """Backbone and pool are unbalanced (pool concat mostly on the better backbone): a raw difference of
    means would credit pool with the backbone's 0.2; the additive model recovers concat's -0.03."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        model = "resnet18" if i < 20 else "vit_small_patch16_224"
        pool = "concat" if (i % 5 != 0) == (model == "resnet18") else "avg"
        err = (0.1 if model == "resnet18" else 0.3) - (0.03 if pool == "concat" else 0) + rng.normal(0, 0.01)
        rows.append({"model": model, "pool": pool, "lr": 10 ** rng.uniform(-4, -2), "error_rate": err})
    runs = runs_from(rows)
    raw = runs[runs.pool == "concat"].error_rate.mean() - runs[runs.pool == "avg"].error_rate.mean()
    assert raw < -0.1  # the confounded difference
    est = fx.effects(runs).set_index("axis")
    pool = est.loc["pool"]
    assert pool["method"].startswith("additive model") and pool["n_runs"] == 40
    assert pool["ci_low"] < -0.03 < pool["ci_high"] and pool["ci_high"] - pool["ci_low"] < 0.03
    lr = est.loc["lr"]  # sampled from a range: a trend per decade, with no effect built in (its sd ~0.003)
    assert lr["contrast"].startswith("trend per decade") and abs(lr["estimate"]) < 0.01
    assert lr["ci_low"] < lr["estimate"] < lr["ci_high"] and lr["n_runs"] == 40


def test_a_sampled_axis_is_never_value_to_value():
    """Two sampled lrs among the completed runs are still a range: a trend row (not estimated), not
    '0.0053 vs 0.0060'."""
    rows = [{"model": "test_resnet", "lr": 0.001 * (1 + i), "error_rate": 0.5, "status": "stopped early"}
            for i in range(8)]
    rows += [{"model": "test_resnet", "lr": lr, "error_rate": e} for lr, e in ((0.0053, 0.3), (0.006, 0.2))]
    runs = runs_from(rows)
    (row,) = fx.effects(runs).to_dict("records")
    assert row["axis"] == "lr" and row["contrast"].startswith("trend per decade") and np.isnan(row["estimate"])


def test_importance_ranks_a_pure_noise_setting_last():
    """A toy study with a known answer: pool matters a lot, resize a little, seed not at all."""
    rng = np.random.default_rng(1)
    rows = []
    for model, pool, resize, seed in itertools.product([f"m{i}" for i in range(5)], ("avg", "concat"),
                                                        ("crop", "squish"), range(6)):
        err = 0.2 - 0.05 * (pool == "concat") - 0.01 * (resize == "squish") + rng.normal(0, 0.01)
        rows.append({"model": model, "pool": pool, "resize": resize, "seed": seed, "error_rate": err})
    imp = fx.importance(runs_from(rows))
    assert imp["setting"].tolist()[:2] == ["pool", "resize"]
    assert imp["setting"].iloc[-1] == "seed" and imp.set_index("setting").loc["seed", "p_value"] > 0.05
    assert imp.set_index("setting").loc["pool", "p_value"] < 1e-6
    assert imp["share"].sum() < 1 and (imp["n_runs"] == len(rows)).all()


def test_importance_stays_bounded_with_the_study_s_85_backbones():
    """Optuna's fANOVA did not finish in 300 s on 66 models; this is one least-squares fit per setting."""
    rng = np.random.default_rng(2)
    models = [f"model{i:02d}" for i in range(85)]
    rows = [{"model": m, "pool": p, "lr": lr, "seed": s, "error_rate": 0.1 + 0.001 * i - 0.01 * (p == "concat")
             + rng.normal(0, 0.002)}
            for i, m in enumerate(models) for p in ("avg", "concat") for lr in (0.008, 0.02) for s in range(3)]
    start = time.perf_counter()
    imp = fx.importance(runs_from(rows))
    print(f"importance over {len(rows)} runs, 85 backbones: {time.perf_counter() - start:.2f}s")
    assert imp["setting"].tolist()[0] == "model" and imp.set_index("setting").loc["model", "levels"] == 85


def test_asha_runs_are_compared_at_the_first_rung(tmp_path):
    """Promoting ASHA completes few trials; at its first rung every trial has trained the same epochs."""
    run = tmp_path / "asha"
    run.mkdir()
    (run / "tunekit_spec.json").write_text(json.dumps({"data": "shapes", "asha": {"grace_period": 1}}))
    trials = [("avg", 0.40, 3), ("concat", 0.30, 3), ("avg", 0.70, 1), ("avg", 0.60, 1), ("concat", 0.50, 1),
              ("concat", 0.55, 1)]
    for i, (pool, first, epochs) in enumerate(trials):
        trial = run / f"run_trial_c_{i:05d}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"model": "resnet18", "pool": pool, "epochs": 3,
                                                       "pretrained": False}))
        rows = [f"{e},{first - 0.1 * (e - 1):.2f},{10.0 * e},0.0" for e in range(1, epochs + 1)]
        (trial / "progress.csv").write_text("epoch,error_rate,fit_time,gpu_mem\n" + "\n".join(rows) + "\n")
        (trial / "result.json").write_text(json.dumps({"epoch": epochs, "done": True}) + "\n")
    runs = load_sources([run])
    assert runs["first_rung_error_rate"].tolist() == [0.4, 0.3, 0.7, 0.6, 0.5, 0.55]
    rows = fx.effects(runs)
    (early,) = rows[rows["basis"] == "all trials at epoch 1"].to_dict("records")
    # concat (0.30, 0.50, 0.55) against avg (0.40, 0.70, 0.60): 3 runs per level, one backbone
    assert early["estimate"] == pytest.approx(0.45 - 0.5667, abs=1e-3) and early["n_runs"] == 6
    assert rows["basis"].tolist() == ["all trials at epoch 1", fx.SURVIVORS_BASIS]  # the fair basis first
    (done,) = rows[rows["basis"] == fx.SURVIVORS_BASIS].to_dict("records")
    assert np.isnan(done["estimate"]) and done["n_runs"] == 2  # 1 vs 1 completed run: no estimate
    assert fx.importance(runs)["basis"].iloc[0] == "all trials at epoch 1"  # 6 trials, not the 2 completed
