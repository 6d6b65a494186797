"""The study's rules (report/study.py): its pivot and score reproduced exactly, families, Pareto fronts."""

from __future__ import annotations

import pandas as pd
import pytest
from studies import MODELS

from tunekit import report as rp


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
