"""The pre-screen's pieces (prescreen.py, prior.py) without a search: its lines, its read-back, a prior screen,
the screen's ranking against fine-tuning."""

from __future__ import annotations

import pandas as pd
import pytest

from tunekit.prescreen import Screen, agreement, load_screen, save_screen


def screen() -> Screen:
    """A LogME screen as an earlier tunekit wrote it (no method, rank.Ranked's rows)."""
    rows = [{"model": m, "logme": v, "rank": r, "status": "scored", "images": 100, "seconds": 1.5}
            for r, (m, v) in enumerate([("a", 1.2), ("b", 0.9), ("c", 0.4), ("d", 0.1)], 1)]
    rows.append({"model": "e", "logme": None, "rank": None, "status": "no pretrained weights here", "images": 0,
                 "seconds": 0.0})
    return Screen(keep=3, rows=rows, kept=["a", "b", "c"])


def test_lines_say_what_is_kept_and_why(tmp_path):
    lines = screen().lines()
    assert lines[0].startswith("  prescreen logme (LogME on the data's training images") and "keeping 3 of 5" in lines[0]
    assert lines[1].startswith("    keep  a: LogME 1.2000") and lines[4].startswith("    drop  d:")
    assert lines[5] == "    drop  e: -  (no pretrained weights here)"
    save_screen(screen(), tmp_path)
    assert load_screen(tmp_path) == screen() and load_screen(tmp_path / "none") is None


def test_a_prior_screen_keeps_the_best_by_imagenet_top1_that_can_be_trained(tmp_path):
    """The default method: timm's ImageNet top-1, no forward pass; a model whose weights cannot be had is passed
    over (the next one kept), one without a row in timm's table is scored by LogME and kept."""
    from tunekit.prior import rank_by, select

    class Scored:
        def __init__(self, model, logme):
            self.model, self.logme, self.status = model, logme, "scored"

        def to_dict(self):
            return {"model": self.model, "logme": self.logme, "status": self.status, "images": 60}

    models = ["resnet34.tv_in1k", "resnet50.tv_in1k", "densenet121.tv_in1k", "inception_v3.tv_in1k", "my_net"]
    asked = []
    choices = rank_by(models, "prior", keep=2, logme_of=lambda names: asked.extend(names) or
                      [Scored(n, 0.5) for n in names])
    assert asked == ["my_net"]  # LogME only where the prior has no row
    assert [c.model for c in choices] == ["inception_v3.tv_in1k", "resnet50.tv_in1k", "densenet121.tv_in1k",
                                          "resnet34.tv_in1k", "my_net"]
    kept = select(choices, 2, "prior", usable=lambda m: "no pretrained weights here" if m.startswith("inc") else None)
    assert kept == ["resnet50.tv_in1k", "densenet121.tv_in1k", "my_net"]
    assert choices[0].by == "passed over: no pretrained weights here"


@pytest.mark.parametrize(("errors", "tau"), [
    ({"a": 0.1, "b": 0.2, "c": 0.3}, 1.0),  # LogME's order is the fine-tuned order
    ({"a": 0.3, "b": 0.2, "c": 0.1}, -1.0),
])
def test_agreement_is_kendalls_tau_over_the_models_fine_tuned(errors, tau):
    trials = pd.DataFrame([{"model": m, "error_rate": e} for m, e in errors.items()]
                          + [{"model": "a", "error_rate": 0.9}])  # a worse run of a: each model's best counts
    out = agreement(screen(), trials, "error_rate", "min")
    assert out["n"] == 3 and out["tau"] == pytest.approx(tau)
    ranks = {r["model"]: r.get("tuned_rank") for r in out["rows"]}
    assert ranks["d"] is None and ranks["e"] is None  # dropped, unscored: not fine-tuned


def test_too_few_models_give_no_tau():
    out = agreement(screen(), pd.DataFrame([{"model": "a", "error_rate": 0.1}]), "error_rate", "min")
    assert out["n"] == 1 and out["tau"] is None


def test_a_hybrid_screen_keeps_keep_models_when_its_shortlist_has_too_few_with_weights():
    from tunekit.prior import rank_by, select

    class Unscored:
        def __init__(self, model):
            self.model, self.logme, self.status = model, None, "no pretrained weights here"

        def to_dict(self):
            return {"model": self.model, "logme": None, "status": self.status}

    models = ["inception_v3.tv_in1k", "resnet101.tv_in1k", "densenet201.tv_in1k", "resnet50.tv_in1k",
              "densenet121.tv_in1k", "resnet34.tv_in1k"]
    scores = {"inception_v3.tv_in1k": 0.9}  # of the prior's top 4, only one has weights here
    choices = rank_by(models, "hybrid", keep=2, logme_of=lambda names: [
        type("R", (), {"model": n, "logme": scores[n], "status": "scored", "to_dict": lambda self: {}})()
        if n in scores else Unscored(n) for n in names])
    kept = select(choices, 2, "hybrid")
    assert kept == ["inception_v3.tv_in1k", "densenet121.tv_in1k"]  # topped up by the prior past the shortlist


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """The search's pre-screen stage on a space of four timm tags, LogME's forward passes replaced by scores
    the test gives (their calls recorded) and every model's weights taken as here."""
    import tunekit.prescreen as prescreen_module
    from tunekit.rank import Ranked
    from tunekit.spec import load_spec

    calls: list[list[str]] = []
    scores = {"resnet18.a1_in1k": 3.0, "resnet34.a1_in1k": 2.0, "resnet50.a1_in1k": 1.0, "convnext_tiny.fb_in1k": 0.5}

    def fake_rank_apart(data, names, on_row, **options):
        calls.append(list(names))
        rows = [Ranked(m, scores[m], "scored") for m in names]
        for r in rows:
            on_row(r)
        return rows

    monkeypatch.setattr(prescreen_module, "rank_apart", fake_rank_apart)
    monkeypatch.setattr(prescreen_module, "_no_weights", lambda model: None)

    def run(prescreen: str, restoring: bool = False):
        space = tmp_path / "s.py"
        space.write_text(f"from ray import tune\ndata = 'shapes'\nprescreen = {prescreen}\n"
                         f"space = {{'model': tune.grid_search({list(scores)!r}), 'pretrained': True}}\n")
        calls.clear()
        lines: list[str] = []
        spec, screen = prescreen_module.prescreen(load_spec(space), tmp_path / "run", restoring, lines.append)
        return spec, screen, list(calls), lines

    return run


def test_the_default_prescreen_ranks_by_the_prior_without_a_forward_pass(stage):
    spec, screen, calls, lines = stage("{'keep': 2}")
    assert screen.method == "prior" and calls == []  # ImageNet top-1 from the table: no model built
    assert screen.kept == ["convnext_tiny.fb_in1k", "resnet50.a1_in1k"]  # the two best top-1 of the four
    assert sorted(spec.values_of("model")) == sorted(screen.kept) and "prescreen: ranking 4 models by prior" in lines[0]


def test_a_hybrid_prescreen_scores_only_the_priors_shortlist(stage):
    _, screen, calls, _ = stage("{'keep': 1, 'method': 'hybrid'}")
    assert calls == [["convnext_tiny.fb_in1k", "resnet50.a1_in1k"]]  # the prior's top 2 x keep, by LogME
    assert screen.kept == ["resnet50.a1_in1k"]  # the better LogME of the shortlist


def test_a_resumed_search_whose_old_prescreen_was_not_saved_ranks_by_logme_as_it_was_made(stage):
    """A run folder from before the methods: {'keep': N} meant LogME, and a resume without prescreen.json keeps
    that meaning (a new search of the same space ranks by the prior)."""
    _, screen, calls, _ = stage("{'keep': 1}", restoring=True)
    assert screen.method == "logme" and len(calls) == 1 and len(calls[0]) == 4  # every model, by LogME
    assert screen.kept == ["resnet18.a1_in1k"]  # LogME's best, not the prior's
