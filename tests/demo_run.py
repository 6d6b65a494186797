"""The README's first command, ``tunekit search search_spaces/demo.py``, as the suite runs it: once, as a new user's
process on a fresh HOME (the ``first_demo`` fixture of conftest.py). tests/test_readme.py checks the command and the
README's later commands act on its search; tests/test_demo.py checks what it made.

It runs the first 8 of the demo's 16 trials (the same configurations: the random search is seeded) with half its
epochs (4: ASHA's rungs stay at 1 and 3) on 2,000 of the shapes instead of 4,500, so that it costs well under a
minute; the whole demo's time and best error rate are measured by benchmarks/asha_efficiency.py and recorded in
benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the demo, smaller: every README command on the demo gives these, so that --dry-run, --resume, --restart and the
# report act on the search the first command made
SETTINGS = "--set num_samples=8 --set epochs=4 --set 'data=shapes?n=2000'"


def command(extra: str = "") -> str:
    return f"tunekit search search_spaces/demo.py {SETTINGS} {extra}".strip()


def new_user(home: Path, work: Path) -> dict:
    """A new user's machine: a fresh HOME (no data, no weights, no runs), offline, in a working folder that has
    the repository's search_spaces/ and benchmarks/."""
    for name in ("search_spaces", "benchmarks"):
        (work / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEKIT_", "RAY_", "HF_", "WANDB_", "MLFLOW_"))}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    # Ray's temp folder: a fresh machine's (no `ray start` cluster for --address auto to find), not this one's
    # /tmp/ray, where a developer's own `ray start` may be running; short, for Ray's socket paths
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="u-", dir=os.environ.get("RAY_TMPDIR"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {"home": home, "work": work, "env": env}


@dataclass
class FirstDemo:
    proc: subprocess.CompletedProcess
    seconds: float
    run: Path  # its run folder, ~/ray_results/demo


def run_first(user: dict) -> FirstDemo:
    """The command in a shell of the user's, one that still holds some cluster's address (nothing answers there):
    without --address a search starts a Ray of its own all the same (ray.init alone would try to join it)."""
    start = time.perf_counter()
    proc = subprocess.run(["bash", "-c", command()], cwd=user["work"], env={**user["env"], "RAY_ADDRESS": "127.0.0.1:9"},
                          capture_output=True, text=True, timeout=600)
    return FirstDemo(proc, time.perf_counter() - start, user["home"] / "ray_results" / "demo")
