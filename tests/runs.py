"""Helpers for the tests that watch a search's run folder from outside."""

from __future__ import annotations

import csv
from pathlib import Path


def epochs_of(trial: Path) -> list[int]:
    """The epochs a trial folder's progress.csv records so far ([] before its first report)."""
    path = trial / "progress.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]
