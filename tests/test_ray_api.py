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
