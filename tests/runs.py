"""Helpers for the tests that watch a search's run folder from outside."""

from __future__ import annotations

from pathlib import Path

from tunekit import runfolder


def epochs_of(trial: Path) -> list[int]:
    """The epochs a trial folder's progress.csv records so far ([] before its first report)."""
    return sorted(runfolder.history(trial, "epoch"))
