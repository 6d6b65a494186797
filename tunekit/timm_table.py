"""timm's published tables as one row per pretrained tag: the free prior on which backbones to try.

    table = load()
    row = table.find("convnext_tiny")             # an arch (its default tag), an arch.tag, or a name timm renamed
    row.top1, row.infer_samples_per_s, row.params_m
    front = pareto(table.rows)                    # ImageNet top-1 against inference throughput
    source()["infer"]                             # which GPU and precision the throughput was measured on

The table (``timm_table.csv``, beside this module) is derived from timm's own ``results/`` files (ImageNet
top-1/top-5, params, image size and crop, pretrain data, inference throughput and GMACs on an RTX 4090, training
throughput on an RTX 3090; Apache-2.0, commit and licence in ``timm_table.json``) by
``tools/build_timm_table.py``, for the pretrained tags of the timm it was built with. A value timm's tables lack is
blank (None), never guessed. Read with the csv module: no torch, timm or pandas, so ``tunekit models`` answers at
once.

Why a prior: on the transferability benchmark LogME, NLEEP and SFDA were published on (11 ImageNet models x 11
datasets), ranking by ImageNet top-1 alone agrees with the fine-tuned results about as well as NLEEP and better
than LogME (``benchmarks/prior_check.py``; figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

TABLE_FILE, SOURCE_FILE = "timm_table.csv", "timm_table.json"
HERE = Path(__file__).parent


@dataclass(frozen=True)
class ModelRow:
    model: str  # arch.tag, as the timm the table was built with names it
    arch: str
    tag: str
    default: bool  # the tag timm loads for the bare arch name
    top1: float | None  # ImageNet-1k validation top-1 (%), at top1_img_size
    top5: float | None
    top1_img_size: int | None
    params_m: float | None  # millions (the ImageNet row's; else the benchmark's, with a 1,000-class head)
    img_size: int  # the tag's native input size (timm's pretrained config)
    crop_pct: float | None
    fixed_input_size: bool
    pretrain: str | None  # what it was (pre)trained on: in1k, in22k, laion2b, ...
    pretrain_source: str | None  # metadata (timm's model_metadata table) or tag (the tag's own name)
    infer_samples_per_s: float | None  # inference throughput of the arch (source()["infer"]: GPU, precision)
    infer_img_size: int | None
    infer_batch_size: int | None
    infer_gmacs: float | None
    train_samples_per_s: float | None  # training throughput of the arch (source()["train"]), where timm lists it
    train_img_size: int | None
    train_batch_size: int | None
    old_names: str  # names timm used for this tag before (;-separated)


COLUMNS = [f.name for f in fields(ModelRow)]
_KINDS = {f.name: f.type for f in fields(ModelRow)}


def _value(name: str, text: str) -> Any:
    kind = _KINDS[name]
    if "bool" in kind:
        return text == "1"
    if text == "":
        return None if "None" in kind else ""
    return float(text) if "float" in kind else int(text) if "int" in kind else text


class Table:
    def __init__(self, rows: list[ModelRow]) -> None:
        self.rows = tuple(rows)
        self._by_name = {r.model: r for r in rows}
        self._default = {r.arch: r for r in rows if r.default}
        self._old = {old: r for r in rows for old in r.old_names.split(";") if old}

    def __len__(self) -> int:
        return len(self.rows)

    def find(self, name: str) -> ModelRow | None:
        """The row of ``name``: an arch.tag, an arch (its default tag, as timm loads it), or a name timm
        renamed; None where the table has none (a model of the user's own, a tag newer than the table)."""
        return self._by_name.get(name) or self._default.get(name) or self._old.get(name)

    def select(self, name: str | None = None, max_params: float | None = None, img_size: int | None = None,
               min_throughput: float | None = None, pretrain: str | None = None) -> list[ModelRow]:
        """The rows that pass every filter given: ``name`` a glob on arch.tag (``*convnext*``; a bare word
        matches as a substring), the rest on the columns of the same meaning."""
        pattern = None if name is None else name if any(c in name for c in "*?[") else f"*{name}*"
        out = []
        for r in self.rows:
            if pattern is not None and not fnmatch.fnmatchcase(r.model, pattern):
                continue
            if max_params is not None and (r.params_m is None or r.params_m > max_params):
                continue
            if img_size is not None and r.img_size != img_size:
                continue
            if min_throughput is not None and (r.infer_samples_per_s is None or r.infer_samples_per_s < min_throughput):
                continue
            if pretrain is not None and _dataset(r.pretrain) != _dataset(pretrain):
                continue
            out.append(r)
        return out


def _dataset(pretrain: str | None) -> str:
    """What a pretrain value names, by one name: 'in21k-selfsl' and 'in22k' are both ImageNet-22k."""
    name = (pretrain or "").split("-")[0]
    return "in22k" if name == "in21k" else name


@functools.lru_cache(maxsize=1)
def load(path: Path | None = None) -> Table:
    """The shipped table (or the one at ``path``)."""
    with open(path or HERE / TABLE_FILE, newline="") as f:
        return Table([ModelRow(**{k: _value(k, v) for k, v in row.items()}) for row in csv.DictReader(f)])


@functools.lru_cache(maxsize=1)
def source() -> dict[str, Any]:
    """Where the table comes from: timm's repository, commit, licence, files, the GPUs and precision."""
    return json.loads((HERE / SOURCE_FILE).read_text())


def pareto(rows: list[ModelRow] | tuple[ModelRow, ...], x: str = "infer_samples_per_s",
           y: str = "top1") -> list[ModelRow]:
    """The rows no other row beats on both ``x`` and ``y`` (higher is better for both), fastest first; rows
    without both values are left out. As the study's predecessor notebook drew ImageNet accuracy against speed."""
    known = [r for r in rows if getattr(r, x) is not None and getattr(r, y) is not None]
    known.sort(key=lambda r: (-getattr(r, x), -getattr(r, y)))
    front, best = [], float("-inf")
    for r in known:
        if getattr(r, y) > best:
            front.append(r)
            best = getattr(r, y)
    return front
