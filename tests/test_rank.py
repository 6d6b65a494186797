"""The LogME pre-screen: `tunekit rank`, and `prescreen = {"keep": N}` cutting a real search's models.

Tiny timm models with weights of their own installed in a Hugging Face cache of the test's (random
values: the mechanics are tested here; that real pretrained features outscore random ones is the
real-data check in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest
import ray
import timm
import torch
from click.testing import CliRunner

from tunekit.cli import main
from tunekit.errors import TunekitError
from tunekit.prescreen import load_screen
from tunekit.rank import rank_models, sample
from tunekit.runfolder import PRESCREEN_FILE
from tunekit.tuner import search
from tunekit.weights import install

MODELS = ["test_resnet", "test_convnext", "test_efficientnet"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A Hugging Face cache of this test's own, read by this process and by the Ray workers it starts,
    with weights for MODELS[:2] (MODELS[2] has none)."""
    import huggingface_hub.constants as hf

    cache = tmp_path / "hub"
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for seed, name in enumerate(MODELS[:2]):
        torch.manual_seed(seed)
        install(timm.get_pretrained_cfg(name).hf_hub_id, timm.create_model(name, num_classes=0).state_dict())
    return cache


def test_rank_scores_models_with_weights_best_first_and_lists_the_rest(small_shapes, hub):
    seen = []
    rows = rank_models(f"folder:{small_shapes}", MODELS, img_size=32, max_images=100, on_row=seen.append)
    assert [r.model for r in seen] == MODELS  # progress in the order given
    scored = [r for r in rows if r.logme is not None]
    assert {r.model for r in scored} == set(MODELS[:2])
    assert [r.rank for r in scored] == [1, 2] and scored[0].logme >= scored[1].logme
    assert rows[-1].model == MODELS[2] and rows[-1].status == "no pretrained weights here" and rows[-1].rank is None
    assert all(95 <= r.images <= 105 and r.seconds > 0 and r.images_per_s > 0 for r in scored)


def test_random_weights_are_scored_with_no_pretrained(small_shapes, hub):
    rows = rank_models(f"folder:{small_shapes}", MODELS, img_size=32, max_images=60, pretrained=False)
    assert all(r.logme is not None for r in rows) and sorted(r.rank for r in rows) == [1, 2, 3]


def test_sample_takes_every_class_in_proportion():
    from types import SimpleNamespace

    targets = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    ds = SimpleNamespace(train_index=np.arange(1000), targets=targets, multilabel=False)
    picked = sample(ds, 100, seed=0)
    assert np.bincount(targets[picked].numpy()).tolist() == [60, 30, 10]
    assert (np.diff(picked) > 0).all()  # sorted: the cache is read in order
    assert sample(ds, 5000, seed=0) is ds.train_index
    assert len(sample(ds, None, seed=0)) == 500  # default: a tenth, at least 500
    ds.train_index, ds.targets = np.arange(20_000), torch.arange(20_000) % 4
    assert len(sample(ds, None, seed=0)) == 2000


def test_rank_command_table_json_and_space_file(small_shapes, hub, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["rank", f"folder:{small_shapes}", "--models", ",".join(MODELS), "--img-size", "32",
                               "--max-images", "60", "--method", "logme"])
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.startswith(("   1", "   2", "   3"))]
    assert len(lines) == 3 and lines[-1].split()[1] == MODELS[2] and "no pretrained weights here" in lines[-1]
    space = tmp_path / "space.py"
    space.write_text(f"from ray import tune\nspace = {{'model': tune.choice({MODELS[:2]!r})}}\n")
    out = runner.invoke(main, ["rank", f"folder:{small_shapes}", "--models", str(space), "--img-size", "32",
                               "--max-images", "60", "--json", "--method", "logme"])
    assert out.exit_code == 0, out.output
    assert sorted(r["model"] for r in json.loads(out.stdout)) == sorted(MODELS[:2])
    bad = runner.invoke(main, ["rank", "folder:/nope", "--models", "test_resnet", "--method", "logme"])
    assert bad.exit_code != 0 and "/nope" in bad.output and "Traceback" not in bad.output


def test_rank_by_the_prior_needs_no_data_and_no_forward_pass(small_shapes, hub):
    """--method prior (the default): timm's ImageNet top-1, no DATA, no LogME; hybrid: the prior's shortlist
    (2 x --keep) by LogME, the rest after it by the prior."""
    runner = CliRunner()
    out = runner.invoke(main, ["rank", "--models", ",".join(MODELS)])
    assert out.exit_code == 0, out.output
    order = [line.split()[1] for line in out.output.splitlines()[1:]]
    assert order == ["test_convnext", "test_efficientnet", "test_resnet"]  # 47.77, 46.51, 41.60 in timm's table
    assert "LogME" not in out.output.split("\n", 1)[1].replace("LogME  by", "")  # no score, no forward pass
    out = runner.invoke(main, ["rank", f"folder:{small_shapes}", "--models", ",".join(MODELS), "--method", "hybrid",
                               "--keep", "1", "--img-size", "32", "--max-images", "60", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    shortlist = [r for r in rows if r["by"].startswith(("LogME", "not scored"))]
    assert {r["model"] for r in shortlist} == {"test_convnext", "test_efficientnet"}  # the prior's top 2
    assert rows[-1]["model"] == "test_resnet" and rows[-1]["by"] == "ImageNet top-1" and rows[-1]["logme"] is None
    bad = runner.invoke(main, ["rank", "--models", "test_resnet", "--method", "logme"])
    assert bad.exit_code == 2 and "needs DATA" in bad.output


@pytest.mark.parametrize("prescreen,model,pretrained,message", [
    ("{'keep': 0}", MODELS, True, "keep must be an integer >= 1"),
    ("{'kep': 2}", MODELS, True, "must be a dict such as"),
    ("{'keep': 2, 'max_image': 9}", MODELS, True, "unknown prescreen key 'max_image'"),
    ("{'keep': 2, 'method': 'nleep'}", MODELS, True, "prescreen method must be one of 'prior', 'logme', 'hybrid'"),
    ("{'keep': 1}", MODELS[:1], True, "give 'model' a tune.grid_search or tune.choice of several"),
    ("{'keep': 1}", MODELS, False, "trains from scratch"),
])
def test_prescreen_settings_are_checked(tmp_path, prescreen, model, pretrained, message):
    from tunekit.spec import load_spec

    space = tmp_path / "s.py"
    space.write_text(f"from ray import tune\nprescreen = {prescreen}\n"
                     f"space = {{'model': tune.grid_search({model!r}), 'pretrained': {pretrained}}}\n")
    with pytest.raises(TunekitError, match=message.replace("(", r"\(")):
        load_spec(space)


def test_prescreen_searches_only_the_kept_models_and_the_report_compares(small_shapes, hub, tmp_path):
    space = tmp_path / "screened.py"
    space.write_text(textwrap.dedent(f"""
        from ray import tune
        data = "folder:{small_shapes}"
        searcher = "grid"
        asha = None
        prescreen = {{"keep": 1, "max_images": 60, "method": "logme"}}
        space = {{"model": tune.grid_search({MODELS!r}), "lr": tune.grid_search([0.01, 0.003]),
                 "pretrained": True, "freeze_epochs": 0, "epochs": 1, "batch_size": 32, "img_size": 32}}
    """))
    lines: list[str] = []
    plan = search(space, storage_path=tmp_path / "runs", dry_run=True, echo=lines.append)
    text = "\n".join(lines)
    assert "keeping 1 of 3 models" in text
    assert re.search(rf"drop  {MODELS[2]}: .*\(not scored: no pretrained weights here\)", text), text
    assert plan.trials == 2  # 1 model x 2 lrs
    assert not ray.is_initialized()
    result = search(space, storage_path=tmp_path / "runs", echo=lines.append)
    screen = load_screen(result.path)
    assert (result.path / PRESCREEN_FILE).is_file() and len(screen.kept) == 1
    assert set(result.trials["model"]) == set(screen.kept) and len(result.trials) == 2
    report = (result.path / "report.md").read_text()
    assert "Pre-screen: LogME against fine-tuning" in report and MODELS[2] in report
    assert "Too few models fine-tuned to completion (1)" in report
    # re-running the finished search reports it; ranking is not redone and the space's fingerprint holds
    again: list[str] = []
    search(space, storage_path=tmp_path / "runs", echo=again.append)
    assert any("finished" in line for line in again) and not any("prescreen: ranking" in line for line in again), again


def test_the_prescreen_ranks_in_a_process_that_gives_the_gpu_back(small_shapes):
    """On a GPU the pre-screen ranks in a process of its own (the driver then holds no GPU memory
    through the search); the same rows come back, shown in the space's order."""
    from tunekit.prescreen import rank_apart

    shown = []
    rows = rank_apart(f"folder:{small_shapes}", ["test_resnet", "test_vit"], on_row=shown.append, isolate=True,
                      pretrained=False, max_images=40, img_size=32)
    here = rank_models(f"folder:{small_shapes}", ["test_resnet", "test_vit"], pretrained=False, max_images=40,
                       img_size=32)
    assert [r.model for r in shown] == ["test_resnet", "test_vit"]
    assert [(r.model, r.logme) for r in rows] == [(r.model, pytest.approx(r.logme, rel=1e-4)) for r in here]
