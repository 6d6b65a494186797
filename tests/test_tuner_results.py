"""The finish stage's pieces (tuner/results.py, tuner/callbacks.py's tidy) on run folders made here."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from tunekit.export import WEIGHTS_FILE
from tunekit.tuner.callbacks import tidy
from tunekit.tuner.results import SearchResult, failure_lines, summary


def result(rows: list[dict], metric: str = "error_rate") -> SearchResult:
    return SearchResult(Path("/runs/s"), pd.DataFrame(rows), metric, "min")


def test_failures_are_grouped_by_message_with_the_first_traceback():
    rows = [{"trial": f"t{i}", "status": "errored", "error": "ValueError: bad data" if i < 3 else "OOM",
             "path": f"/runs/s/t{i}"} for i in range(4)] + [{"trial": "t9", "status": "completed", "error": None,
                                                            "path": "/runs/s/t9", "error_rate": 0.2}]
    r = result(rows)
    assert r.failed and len(r.errored) == 4
    lines = failure_lines(r)
    assert lines[0] == "4 of 5 trial(s) failed with 2 different errors:"
    assert lines[1:3] == ["  3 x ValueError: bad data", "      full traceback: /runs/s/t0/error.txt"]
    assert lines[3:5] == ["  1 x OOM", "      full traceback: /runs/s/t3/error.txt"]


def test_a_search_with_no_metric_at_all_still_summarizes():
    r = result([{"trial": "t0", "status": "errored", "error": "boom", "path": "/runs/s/t0"}])
    assert r.failed and r.best().empty and "error_rate" in r.trials  # no KeyError on a metric never reported
    assert summary(r)[:2] == ["trials: 1 errored", "1 of 1 trial(s) failed:"]


def test_one_failure_among_many_is_not_a_failed_search():
    rows = [{"trial": f"t{i}", "status": "completed", "error_rate": 0.1 * i, "path": f"/p/t{i}"} for i in range(4)]
    rows.append({"trial": "t4", "status": "errored", "error": "x", "path": "/p/t4"})
    assert not result(rows).failed


def trial(run: Path, name: str, epochs: int) -> Path:
    folder = run / name
    for epoch in range(1, epochs + 1):
        ckpt = folder / f"checkpoint_{epoch:06d}"
        ckpt.mkdir(parents=True)
        torch.save({"model": {"w": torch.full((2,), float(epoch))}}, ckpt / "checkpoint.pt")
    (folder / "params.json").write_text(json.dumps({"lr": 0.01}))
    return folder


def test_tidy_keeps_the_best_weights_and_removes_checkpoints(tmp_path):
    for name in ("a", "b", "c"):
        trial(tmp_path, name, 2)
    finals = {"a": 0.3, "b": 0.1, "c": 0.2}
    kept = tidy(tmp_path, finals, "min", keep_best=2, keep_checkpoints=False, ended={"a", "b", "c"},
                tidied={"a", "b", "c"})
    assert kept == {"b", "c"}
    assert [(tmp_path / n / WEIGHTS_FILE).is_file() for n in "abc"] == [False, True, True]
    assert not list(tmp_path.glob("*/checkpoint_*"))
    # a later, better trial pushes the worst kept one out; keep_checkpoints leaves its checkpoints
    trial(tmp_path, "d", 1)
    kept = tidy(tmp_path, {**finals, "d": 0.05}, "min", 2, True, {"a", "b", "c", "d"}, {"d"}, candidates={"d"} | kept)
    assert kept == {"b", "d"} and not (tmp_path / "c" / WEIGHTS_FILE).is_file()
    assert list((tmp_path / "d").glob("checkpoint_*"))
