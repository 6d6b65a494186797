"""`tunekit doctor`: what a user runs first on a new machine (the cluster case is in test_cluster.py)."""

from __future__ import annotations

from click.testing import CliRunner

from tunekit.cli import main
from tunekit.doctor import FAIL, OK, Check


def test_doctor_on_this_machine_says_it_can_run_a_search():
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ("python", "torch", "timm", "ray", "optuna", "gpu", "data root", "weights"):
        assert any(line.split(maxsplit=1)[1].startswith(name) for line in lines if line.strip()), (name, result.output)
    assert "ray          2.60" in result.output and "tested with 2.60" in result.output
    assert lines[-1] == "this machine can run a search"


def test_doctor_says_why_a_cluster_cannot_be_reached_and_exits_1():
    result = CliRunner().invoke(main, ["doctor", "--address", "127.0.0.1:9"])
    assert result.exit_code == 1, result.output
    assert "FAIL  cluster      127.0.0.1:9: cannot join (--address 127.0.0.1:9: no Ray cluster answers there" \
        in result.output
    assert result.output.splitlines()[-1] == "1 problem(s): a search cannot run here until they are fixed"


def test_a_check_is_one_aligned_line():
    assert Check("torch", OK, "2.13.0").line() == "  ok  torch        2.13.0"
    assert Check("gpu", FAIL, "why").line() == "FAIL  gpu          why"
