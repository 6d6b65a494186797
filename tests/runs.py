"""Helpers for the tests that watch a search's run folder from outside."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tunekit import runfolder


def epochs_of(trial: Path) -> list[int]:
    """The epochs a trial folder's progress.csv records so far ([] before its first report)."""
    return sorted(runfolder.history(trial, "epoch"))


def ctrl_c(proc: subprocess.Popen, seen: list[str], times: int = 1, group: bool = False) -> None:
    """Press Ctrl-C ``times`` times on a running ``tunekit search``, the lines read meanwhile added to
    ``seen``. A second press waits until the driver answers the first ("Ctrl-C: stopping the search", while
    Ray stops): two SIGINTs that land before Python runs its handler count as one, which a busy machine
    makes likely with a fixed pause between them. ``group``: to every process of the search's process
    group, as a terminal sends it."""
    def press() -> None:
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)

    press()
    if times < 2:
        return
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Ctrl-C: stopping the search"):
            press()
            return
    raise AssertionError("the search ended without handling the first Ctrl-C:\n" + "".join(seen))
