"""A study-format CSV for the report tests: 8 models x 2 datasets x 3 runs, with config columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

MODELS = ["convnext_tiny", "convnext_small", "resnet26d", "resnet18", "vit_small_patch16_224",
          "swinv2_cr_tiny_ns_224", "efficientnetv2_rw_t", "levit_256"]


def write_study_csv(tmp_path):
    """The study's export format: 8 models x 2 datasets x 3 runs, with config columns."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset in ("pets", "planet"):
        for i, model in enumerate(MODELS):
            for run in (1, 2, 3):
                rows.append({
                    "dataset": dataset, "model_name": model,
                    "error_rate": round(0.03 + 0.01 * i + rng.uniform(0, 0.02), 5),
                    "fit_time": round(40 + 12 * ((i * 7) % 8) + rng.uniform(0, 10), 3),
                    "GPU_mem": round(1 + 0.5 * ((i * 3) % 8) + rng.uniform(0, 0.2), 4),
                    "learning_rate": 0.008, "concat_pool": run % 2 == 0, "resize_method": "squish",
                    "num_experiments": run,
                })
    path = tmp_path / "sweep.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
