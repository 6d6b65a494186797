"""The stages of a search (tuner/flow.py) one at a time, without Ray where the stage has none:
validate's rules, what a previous run folder leads to, the plan stage of a dry run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunekit.errors import TunekitError
from tunekit.tuner.previous import Previous, action_for
from tunekit.tuner.validate import merge_settings, validate

SPACE = {"data": "shapes?n=200&size=32", "epochs": 2, "space": {"model": "test_resnet", "pretrained": False}}


@pytest.mark.parametrize(("options", "message"), [
    ({"resume": True, "restart": True}, "--resume and --restart contradict each other"),
    ({"progress": "fancy"}, "progress must be one of auto, summary, events, got 'fancy'"),
    ({"storage": "/tmp"}, "unknown search option 'storage' \\(did you mean 'storage_path'\\?\\)"),
    ({"gpus_per_trial": 0.5, "overrides": {"gpus_per_trial": 0.25}},
     "--gpus-per-trial 0.5 and --set gpus_per_trial=0.25 contradict each other; give one"),
])
def test_validate_checks_each_rule_once_for_the_cli_and_the_api(options, message):
    with pytest.raises(TunekitError, match=message):
        validate(dict(SPACE), dict(options))


def test_validate_makes_the_search_and_starts_nothing(tmp_path):
    import ray

    state = validate(dict(SPACE), {"storage_path": tmp_path, "num_samples": 3, "overrides": {"epochs": 4},
                                   "strict": True, "name": "mine"})
    assert state.spec.num_samples == 3 and state.spec.epochs == 4 and state.spec.name == "mine"
    assert state.spec.data == "shapes?n=200&size=32&strict=1"
    assert state.run_dir == tmp_path / "mine" and not state.restoring and state.outcome is None
    assert not ray.is_initialized() and not (tmp_path / "mine").exists()
    # an option and a --set saying the same thing agree
    assert merge_settings({"num_samples": 2, "name": None}, {"num_samples": 2}) == {"num_samples": 2}


@pytest.mark.parametrize(("held", "resume", "restart", "action"), [
    (Previous(Path("r"), exists=False), False, False, "new"),
    (Previous(Path("r"), exists=True, finished=False), False, False, "continue"),
    (Previous(Path("r"), exists=True, finished=True), False, False, "report"),
    (Previous(Path("r"), exists=True, finished=True, errored=2), True, False, "continue"),  # --resume retries them
    (Previous(Path("r"), exists=True, finished=True), True, False, "report"),  # nothing to retry
    (Previous(Path("r"), exists=True, same_space=False), False, False, "refuse"),
    (Previous(Path("r"), exists=True, same_space=False), False, True, "restart"),
    (Previous(Path("r"), exists=True, finished=True), False, True, "restart"),
])
def test_what_a_previous_run_folder_leads_to(held, resume, restart, action):
    assert action_for(held, resume, restart) == action


def test_a_dry_run_ends_at_the_plan_stage(tmp_path):
    from tunekit.tuner import Plan, search

    lines: list[str] = []
    plan = search(dict(SPACE), storage_path=tmp_path, dry_run=True, num_samples=5, echo=lines.append)
    assert isinstance(plan, Plan) and plan.trials == 5 and plan.max_epochs == 2
    assert lines[0].startswith("search 'search' -> ") and any("5 trial(s), searcher grid" in line for line in lines)
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
