"""The winner as a model: a search's kept weights -> a standalone model folder anyone can load.

    export_trial(Path("~/ray_results/demo"), Path("best/"), rank=1)     # tunekit export RUN OUT --rank 1
    load_model(Path("best/")).predict(["cat.jpg"])                          # see predict.py

A model folder holds ``model.safetensors`` (the weights: timm body, pool, head; nothing else) and
``tunekit_model.json`` (``FORMAT_VERSION``): the timm model name, pool, head, class names, multi-label
and its threshold, image size, resize method, mean/std, the precision and device it trained in (absent
from folders exported before tunekit recorded them), the trial's config and final metrics, and the
tunekit/timm/torch versions that made it. Loading needs neither Ray nor the run folder nor network.

A search keeps the final weights of its ``keep_best`` best trials (``keep_weights``): as trials end, the
best by the search's metric get ``model.safetensors`` in their trial folder, taken from their last
checkpoint before it is deleted, and a trial pushed out of the best loses it.
"""

from __future__ import annotations

import heapq
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from . import runfolder
from .config import FINAL_METRICS
from .errors import TunekitError
from .runfolder import Status

FORMAT = "tunekit-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "tunekit_model.json"
THRESHOLD = 0.5  # multi-label: a class is predicted when its sigmoid is over this (as the metrics)
ENDED = (Status.COMPLETED.value, Status.STOPPED.value)


def save_weights(checkpoint: Path, out: Path) -> Path:
    """The model weights of a tunekit checkpoint (``checkpoint.pt``: model, optimizer, ...) as safetensors."""
    import torch
    from safetensors.torch import save_file

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    tmp = out.with_name(out.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(out)
    return out


def latest_checkpoint(trial: Path) -> Path | None:
    """The trial's newest ``checkpoint_*/checkpoint.pt``, or None."""
    found = sorted(trial.glob(f"checkpoint_*/{runfolder.CHECKPOINT_FILE}"))
    return found[-1] if found else None


def best_trials(finals: dict[str, float], mode: str, keep: int) -> list[str]:
    """The ``keep`` best trial names by their final metric (ties: the earlier name)."""
    return heapq.nsmallest(keep, finals, key=lambda name: (finals[name] if mode == "min" else -finals[name], name))


def keep_weights(run_dir: Path, finals: dict[str, float], mode: str, keep: int, ended: set[str],
                 candidates: set[str] | None = None) -> set[str]:
    """Give the ``keep`` best ended trials (by ``finals``, their final metric) a model.safetensors from their
    last checkpoint, and take it from ended trials that are no longer among the best; returns the best.
    Only trials Ray's saved state records as ended (``ended``) are touched: a resumed search may still
    continue the others. ``candidates`` limits which folders are looked at (as a search goes on: the trials
    that just ended and those that hold weights, the only ones whose state can change); default: all ended."""
    best = set(best_trials({n: v for n, v in finals.items() if n in ended}, mode, keep)) if keep > 0 else set()
    for name in ended if candidates is None else candidates & ended:
        trial = run_dir / name
        weights = trial / WEIGHTS_FILE
        if name in best and not weights.is_file():
            checkpoint = latest_checkpoint(trial)
            if checkpoint is not None:
                save_weights(checkpoint, weights)
        elif name not in best and weights.is_file():
            weights.unlink()
    return best


# ---- exporting a trial -----------------------------------------------------------------------------

def choose_trial(run_dir: Path, rank: int | None = None, trial: str | None = None) -> tuple[pd.Series, int]:
    """The trial to export (its report row) and its rank: ``rank`` N among the run's ended trials by the
    search's metric at their last epoch (1 = best), or the trial whose folder name contains ``trial``."""
    from .report import load_run

    spec = runfolder.read_json(run_dir / runfolder.SPEC_FILE) or {}
    metric, mode = spec.get("metric", "error_rate"), spec.get("mode", "min")
    rows = load_run(run_dir)
    if metric not in rows:  # no trial finished an epoch
        rows[metric] = float("nan")
    ended = rows[rows["status"].isin(ENDED) & rows[metric].notna()].sort_values(
        [metric, "trial"], ascending=[mode == "min", True]).reset_index(drop=True)
    if ended.empty:
        raise TunekitError(f"{run_dir} has no finished trial to export (statuses: "
                           f"{', '.join(sorted(set(rows['status'])))})")
    ended["kept"] = [(Path(p) / WEIGHTS_FILE).is_file() or latest_checkpoint(Path(p)) is not None
                     for p in ended["path"]]
    if trial is not None:
        matches = ended[ended["trial"].str.contains(trial, regex=False)]
        if matches.empty:
            known = ", ".join(ended["trial"].head(5)) + (" ..." if len(ended) > 5 else "")
            raise TunekitError(f"--trial {trial}: no finished trial of {run_dir} has it in its name "
                               f"(they are: {known})")
        if len(matches) > 1:
            raise TunekitError(f"--trial {trial}: {len(matches)} trials match; give more of the name")
        index = int(matches.index[0])
    else:
        index = (rank or 1) - 1
        if index < 0:
            raise TunekitError(f"--rank {rank}: ranks start at 1 (the best trial)")
        kept = int(ended["kept"].sum())
        if index >= len(ended) or not ended.loc[index, "kept"]:
            raise TunekitError(f"--rank {rank}: the search kept the weights of {kept} trial(s) (keep_best="
                               f"{spec.get('keep_best', 0)}); rank 1 to {kept} can be exported, or --trial ID of one "
                               f"of them. Set keep_best higher (or keep_checkpoints = True) to keep more.")
    row = ended.loc[index]
    if not row["kept"]:
        raise TunekitError(f"trial {row['trial']} has no weights: the search kept those of its best "
                           f"{int(ended['kept'].sum())} trial(s) only (keep_best)")
    return row, index + 1


def export_trial(run_dir: Path, out: Path, rank: int | None = None, trial: str | None = None) -> dict[str, Any]:
    """Write a model folder for one trial of ``run_dir``; returns its manifest."""
    run_dir = run_dir.expanduser()
    if not run_dir.is_dir():
        raise TunekitError(f"{run_dir} is not a run folder")
    row, position = choose_trial(run_dir, rank, trial)
    trial_dir = Path(row["path"])
    manifest = manifest_of(trial_dir, row, position)
    out.mkdir(parents=True, exist_ok=True)
    weights = trial_dir / WEIGHTS_FILE
    if weights.is_file():
        shutil.copyfile(weights, out / WEIGHTS_FILE)
    else:  # keep_checkpoints = True: the last checkpoint holds them
        save_weights(latest_checkpoint(trial_dir), out / WEIGHTS_FILE)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def manifest_of(trial: Path, row: pd.Series, rank: int) -> dict[str, Any]:
    """What loading and predicting need, read from the trial's own records (tunekit_run.json, params.json)."""
    import timm
    import torch

    from ._version import __version__

    info = runfolder.read_json(trial / runfolder.RUN_INFO_FILE)
    if not info:
        raise TunekitError(f"{trial} has no {runfolder.RUN_INFO_FILE}: cannot tell its classes and image size")
    config = runfolder.trial_config(trial)
    metrics = {k: _plain(row[k]) for k in (*FINAL_METRICS, "epochs_run") if k in row and pd.notna(row[k])}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": config.get("model", info["model"]["name"]), "pool": config.get("pool", "concat"),
        "head": config.get("head", "fastai"), "classes": info["classes"], "multilabel": bool(info["multilabel"]),
        "threshold": THRESHOLD, "img_size": int(info["img_size"]), "resize": config.get("resize", "crop"),
        "mean": list(info["model"]["mean"]), "std": list(info["model"]["std"]),
        "precision": info.get("precision"), "trained_on": info.get("device"),
        "config": {k: v for k, v in config.items() if not k.startswith("_")}, "metrics": metrics,
        "source": {"run": str(trial.parent), "trial": trial.name, "rank": rank, "status": row["status"]},
        "versions": {"tunekit": __version__, "timm": timm.__version__, "torch": torch.__version__},
    }


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """A model folder's manifest, checked: the format, its version, the weights file."""
    model_dir = model_dir.expanduser()
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise TunekitError(f"{model_dir} is not a tunekit model folder (no {MANIFEST_FILE}; make one with "
                           f"'tunekit export RUN_DIR {model_dir}')")
    manifest = runfolder.read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TunekitError(f"{path} is not a tunekit model manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise TunekitError(f"{path} is format version {version!r}; this tunekit reads version {FORMAT_VERSION} "
                           f"(export the model again with this tunekit, or use the tunekit that made it: "
                           f"{manifest.get('versions', {}).get('tunekit', '?')})")
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise TunekitError(f"{model_dir} has no {WEIGHTS_FILE}")
    return manifest


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
