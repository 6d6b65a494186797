"""How long a trial takes to start under Ray: from a free trial slot (or the search's start) to the
trial's first training step, which is what a GPU waits between trials (Ray's scheduling, the worker
process and its imports, opening the cached data, building the model).

    seconds = measure_trial_start("test_resnet", trials=8)     # tunekit bench --trial-start 8
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable


def measure_trial_start(model_name: str, echo: Callable[[str], None] = print, trials: int = 8) -> float:
    """Median seconds from a free trial slot to a trial's first training step, over a small local
    search. The first trials start new workers; the later ones reuse a finished trial's worker."""
    from ray import tune

    from . import search

    space = {"model": model_name, "pretrained": False, "epochs": 1, "img_size": 32, "batch_size": 32,
             "lr": tune.grid_search([0.01 / (i + 1) for i in range(trials)])}
    with tempfile.TemporaryDirectory() as d:
        result = search({"data": "shapes?n=600&size=32", "asha": None, "space": space}, storage_path=d,
                        echo=lambda line: None)
    starts = result.trial_start_s
    seconds = statistics.median(starts)
    echo(f"trial start: median {seconds:.2f}s from a free trial slot to the trial's first training step "
         f"({len(starts)} trials, in the order they began training: " + ", ".join(f"{t:.2f}" for t in starts) + ")")
    later = result.start_phases[2:]  # the first trials start new workers; the later ones reuse them
    for name, runs in (("every trial", result.start_phases), ("from the third", later)):
        if runs:
            medians = {k: statistics.median(p.get(k, 0.0) for p in runs) for k in runs[0]}
            echo(f"  phases, median s, {name} ({len(runs)}): " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    return seconds
