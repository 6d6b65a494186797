"""Does ASHA's first rung rank trials as the final epoch does? A small real search, every trial to the end.

    python benchmarks/first_rung.py                                   # 8 configs x 2 seeds, ~15 min on 2 cores
    python benchmarks/first_rung.py --spread vs_fastai.json           # + the ranking with fastai's spread

Most spaces compare trials right after the frozen epoch (ASHA's ``grace_period=1``). This runs a
real fine-tune search through ``tunekit.search`` (EfficientNet-Lite0 with its ImageNet weights on
vs_fastai.py's Fashion-MNIST folders, 56 px, 1 frozen + 2 epochs; pool x lr x seed, ASHA off so every
trial reaches the end) and prints:

- Spearman's rank correlation between each trial's error after epoch 1 (the first rung; then after each
  later epoch: the first rung of a longer grace period) and after the last epoch, over the trials and
  over the configurations (the mean of their seeds), each with a 95% bootstrap interval (configurations
  resampled, their seeds together);
- what ASHA (grace 1, reduction 3) would have kept at the first rung: the top third of the trials by
  epoch-1 error, and whether it holds the trial that ends best;
- with ``--spread`` (a ``vs_fastai.py --json`` file): the same correlation had the first rung had
  fastai's seed-to-seed spread instead of tunekit's: each trial's epoch-1 deviation from its
  configuration's mean scaled by fastai's sd / tunekit's sd after the frozen epoch (measured there, 10
  seeds of one configuration), with a bootstrap interval for the difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_fastai  # noqa: E402 - the data and its readiness check are vs_fastai's

SPACE = """
from ray import tune

data = {data!r}
searcher = "grid"
asha = None
cpus_per_trial = 2
gpus_per_trial = 0
space = {{
    "model": "tf_efficientnet_lite0",
    "pool": tune.grid_search(["avg", "concat"]),
    "lr": tune.grid_search({lrs!r}),
    "seed": tune.grid_search({seeds!r}),
    "resize": "crop",
    "pretrained": True,
    "freeze_epochs": 1,
    "epochs": 2,
    "batch_size": 64,
    "img_size": 56,
    "precision": "fp32",
}}
"""
LRS = [0.001, 0.003, 0.01, 0.03]


def spearman(a, b) -> float:
    from scipy.stats import rankdata

    a, b = rankdata(a), rankdata(b)
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def trials(storage: Path, seeds: list[int], lrs: list[float]) -> pd.DataFrame:
    """One row per trial: its config, and its error after epoch 1 and after the last epoch."""
    import tunekit
    from tunekit import runfolder

    space = storage / "first_rung.py"
    space.write_text(SPACE.format(data=f"folder:{vs_fastai.data_dir(vs_fastai.SETUP)}", lrs=lrs, seeds=seeds))
    start = time.perf_counter()
    found = tunekit.search(space, storage_path=storage, name="first_rung")
    print(f"search: {len(found.trials)} trials in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    df = found.trials.copy()
    histories = [runfolder.history(Path(p), "error_rate") for p in df["path"]]
    earlier = [f"epoch{k}" for k in range(1, int(df["epochs_total"].max()))]
    for column in earlier:
        df[column] = [h.get(int(column.removeprefix("epoch")), np.nan) for h in histories]
    df["final"] = df["error_rate"]
    df["config"] = df["pool"] + " lr " + df["lr"].astype(str)
    return df[["config", "pool", "lr", "seed", *earlier, "final"]]


def grid(df: pd.DataFrame, column: str = "epoch1") -> tuple[list[str], np.ndarray, np.ndarray]:
    """(configurations, errors after an epoch (``column``), final errors), the errors as configurations x
    seeds arrays; a configuration missing a seed (an errored trial) is left out."""
    seeds = df["seed"].nunique()
    whole = df.groupby("config").filter(lambda g: g["seed"].nunique() == seeds).sort_values(["config", "seed"])
    configs = list(dict.fromkeys(whole["config"]))
    shape = (len(configs), seeds)
    return configs, whole[column].to_numpy().reshape(shape), whole["final"].to_numpy().reshape(shape)


def per_trial(e1: np.ndarray, final: np.ndarray) -> float:
    return spearman(e1.ravel(), final.ravel())


def per_config(e1: np.ndarray, final: np.ndarray) -> float:
    return spearman(e1.mean(1), final.mean(1))


def bootstrap(e1: np.ndarray, final: np.ndarray, stat, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``stat(e1, final)`` with configurations resampled (their seeds together)."""
    picks = np.random.default_rng(seed).integers(0, len(e1), (draws, len(e1)))
    values = np.array([stat(e1[p], final[p]) for p in picks])
    values = values[np.isfinite(values)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def with_spread(e1: np.ndarray, ratio: float) -> np.ndarray:
    """Each trial's epoch-1 error moved to its configuration's mean plus ``ratio`` times its deviation."""
    mean = e1.mean(1, keepdims=True)
    return mean + ratio * (e1 - mean)


def spread_ratio(path: Path) -> tuple[float, int]:
    """fastai's sd / tunekit's sd of the error after the frozen epoch, from a vs_fastai.py --json file."""
    runs = json.loads(path.read_text())["fine_tune"]
    err = {f: [r["epochs"][0]["error_rate"] for r in runs if r["framework"] == f] for f in ("tunekit", "fastai")}
    return statistics.stdev(err["fastai"]) / statistics.stdev(err["tunekit"]), len(err["tunekit"])


def report(df: pd.DataFrame, spread: Path | None) -> str:
    earlier = [c for c in df.columns if c.startswith("epoch")]
    lines = ["| trial | config | seed | " + " | ".join(f"error after epoch {c.removeprefix('epoch')}" for c in earlier)
             + " | final error |", "|---" * (4 + len(earlier)) + "|"]
    lines += ["| " + " | ".join([str(i), r["config"], str(r["seed"])] + [f"{r[c]:.3f}" for c in [*earlier, "final"]])
              + " |" for i, (_, r) in enumerate(df.sort_values(["config", "seed"]).iterrows())]
    configs, e1, final = grid(df)
    for column in earlier:
        _, ek, _ = grid(df, column)
        lines += ["", f"Spearman, epoch {column.removeprefix('epoch')} against the final epoch ({ek.size} trials, "
                      f"{len(configs)} configurations, 95% bootstrap intervals over configurations):"]
        for label, stat in (("over trials", per_trial), ("over configurations (seeds averaged)", per_config)):
            low, high = bootstrap(ek, final, stat)
            lines.append(f"  {label}: {stat(ek, final):+.2f} ({low:+.2f} to {high:+.2f})")
    label = df["config"] + " seed " + df["seed"].astype(str)
    kept = df["epoch1"].nsmallest(max(1, round(len(df) / 3))).index
    best = df["final"].idxmin()
    lines.append(f"  ASHA (grace 1, reduction 3) goes on with {len(kept)} of {len(df)} trials at the first rung "
                 f"({', '.join(label[kept])}); the best at the end, {label[best]} (rank "
                 f"{int(df['epoch1'].rank()[best])} of {len(df)} by epoch 1), is "
                 f"{'among them' if best in kept else 'NOT among them'}")
    if spread:
        ratio, n = spread_ratio(spread)

        def change(e1: np.ndarray, final: np.ndarray) -> float:
            return per_trial(with_spread(e1, ratio), final) - per_trial(e1, final)

        low, high = bootstrap(e1, final, change)
        lines.append(f"  with fastai's spread after the frozen epoch (sd ratio fastai/tunekit {ratio:.2f}, {n} seeds "
                     f"each): over trials {per_trial(with_spread(e1, ratio), final):+.2f}, a change of "
                     f"{change(e1, final):+.2f} ({low:+.2f} to {high:+.2f})")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--lrs", type=float, nargs="+", default=LRS)
    p.add_argument("--spread", type=Path, help="a vs_fastai.py --json file (10 seeds): fastai's spread")
    p.add_argument("--storage", type=Path, help="where the run folder goes (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="write the trials' errors here")
    p.add_argument("--load", type=Path, help="report on the trials of an earlier --json instead of searching")
    args = p.parse_args()
    if args.load:
        print(report(pd.read_json(args.load, orient="records"), args.spread))
        return
    vs_fastai.check_ready(vs_fastai.SETUP)
    with tempfile.TemporaryDirectory() as tmp:
        df = trials(args.storage or Path(tmp), args.seeds, args.lrs)
    if args.json:
        args.json.write_text(df.to_json(orient="records", indent=1))
    print(report(df, args.spread))


if __name__ == "__main__":
    main()
