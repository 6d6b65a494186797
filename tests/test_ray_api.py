"""What tunekit relies on in Ray beyond its public API (tuner/ray_api.py) is still there."""

from __future__ import annotations

import configparser
from pathlib import Path

import ray

from tunekit.tuner import ray_api

ROOT = Path(__file__).parent.parent


def test_installed_ray_has_what_tunekit_relies_on():
    problems = ray_api.check()
    assert not problems, "the installed Ray changed what tunekit relies on (tunekit/tuner/ray_api.py):\n  " + \
        "\n  ".join(problems)


def test_setup_bounds_ray_to_the_tested_version():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    ray_line = next(line for line in setup["options"]["install_requires"].splitlines() if line.startswith("ray"))
    assert ray_line == f"ray[tune]>={ray_api.TESTED},<2.{int(ray_api.TESTED.split('.')[1]) + 1}"
    assert ray.__version__.startswith(ray_api.TESTED + ".")


# Ray's internals tunekit uses, each behind a function of ray_api (its table says why): outside that module
# no code names them.
_FENCED = {"set_status", "is_saving", "stop_trial", "local_path", "has_reported_at_least_once", "_local_tuner",
           "_mark_trial_to_checkpoint", "get_storage", "trial_working_directory"}


def test_ray_internals_are_used_through_ray_api_only():
    import ast

    import tunekit

    package = Path(tunekit.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "ray_api.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in _FENCED:
                found.append(f"{path.relative_to(package)}:{node.lineno} .{node.attr}")
    assert found == []


def test_timm_is_used_through_its_public_names():
    """No timm._private name (timm.models._registry and the like): timm's public accessors only."""
    import ast

    import tunekit

    package = Path(tunekit.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                chain = ast.unparse(node)
                parts = chain.split(".")
                if parts[0] == "timm" or chain.startswith("_timm()"):
                    private = [p for p in parts[1:] if p.startswith("_") and not p.startswith("__")]
                    if private:
                        found.append(f"{path.relative_to(package)}:{node.lineno} {chain}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("timm") and any(
                    part.startswith("_") for part in (node.module or "").split(".")):
                found.append(f"{path.relative_to(package)}:{node.lineno} from {node.module}")
    assert found == []


def test_ctrl_c_is_answered_then_a_second_waits_for_ray_and_a_third_raises():
    """``answer_first_interrupt`` on Ray's own handler (``tune.run`` installs it; here installed the same way): the
    first Ctrl-C reaches it and is answered, the second is recorded for when the fit returns, the third raises;
    outside ``own_sigint`` (a fit of the caller's own) Ray's handler alone answers; another handler is not wrapped."""
    import os
    import signal

    import pytest
    from ray.tune.tune import _setup_signal_catching

    from tunekit.tuner.ray_api import answer_first_interrupt, is_ray_sigint, own_sigint

    said: list[str] = []
    previous = signal.getsignal(signal.SIGINT)
    with own_sigint() as interrupts:
        stopping = _setup_signal_catching()  # Ray's handler, as tune.run installs it
        assert is_ray_sigint(signal.getsignal(signal.SIGINT))
        answer_first_interrupt("first", "again", said.append)
        os.kill(os.getpid(), signal.SIGINT)
        assert stopping.is_set() and said == ["first"] and not interrupts.again
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupts.again and said == ["first", "again"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous
    try:  # outside own_sigint: Ray's handling only (it stops, then puts the previous handler back)
        stopping = _setup_signal_catching()
        answer_first_interrupt("first", "again", said.append)
        os.kill(os.getpid(), signal.SIGINT)
        assert stopping.is_set() and said == ["first", "again"] and signal.getsignal(signal.SIGINT) is previous
        answer_first_interrupt("first", "again", said.append)  # not Ray's handler: left as it is
        assert signal.getsignal(signal.SIGINT) is previous
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_fit_records_no_callback_census_and_the_callers_ray_keeps_its_own():
    """Ray's telemetry count of a Tuner's callback classes imports MLflow's integration (mlflow with it): not
    run inside tunekit's fits, and Ray's own function again after."""
    from ray.air._internal import usage

    own = usage.tag_callbacks
    with ray_api.quiet_environment(verbose=False):
        assert usage.tag_callbacks is not own and usage.tag_callbacks([object()]) is False
    assert usage.tag_callbacks is own

