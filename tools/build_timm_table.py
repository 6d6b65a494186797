"""Rebuild tunekit's model table (tunekit/timm_table.csv and its provenance, tunekit/timm_table.json) from
timm's own published tables and the installed timm.

    python tools/build_timm_table.py RESULTS_DIR

RESULTS_DIR holds timm's ``results/`` files, unchanged (huggingface/pytorch-image-models, Apache-2.0):
``results-imagenet.csv``, ``model_metadata-in1k.csv``, ``benchmark-infer-amp-nchw-*.csv`` and
``benchmark-train-amp-nchw-*.csv``; give the commit they come from with ``--commit``. The table has one row per
pretrained tag the installed timm knows (``timm.list_pretrained()``), its columns as
``tunekit.timm_table.COLUMNS`` says; a value the tables lack is left blank, never guessed:

- ImageNet top-1/top-5 and params: results-imagenet.csv's row of the tag, at the tag's own input size where the
  table has several sizes (else its first row);
- native size, crop, fixed input size, the default tag of an architecture: timm's pretrained configs;
- pretrain data: model_metadata-in1k.csv where it lists the tag (its names are timm's older ones, mapped through
  ``timm.models.get_deprecated_models()``), else the dataset the tag's own name gives first (timm names its tags
  after what they were trained on: ``fb_in22k_ft_in1k`` is in22k), with ``pretrain_source`` saying which;
- throughput and GMACs: the benchmark row of the tag's architecture at the tag's own size (timm measures some
  architectures at several sizes; a tag of a size it did not measure, convnext_tiny's ``_384`` ones, is left
  blank); old names mapped as above. in21k and in22k, one dataset under two names, are written in22k.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import tunekit  # noqa: F401 - the torchvision import workaround, before timm
from tunekit.timm_table import COLUMNS, SOURCE_FILE, TABLE_FILE

# what timm's tag names say a model was (pre)trained on, as the datasets appear in them
DATASETS = ("in1k", "in12k", "in21k", "in22k", "laion2b", "laion400m", "laion5b", "openai", "jft300m", "jft3b",
            "ig1b", "ig3b", "yfcc15m", "merged2b", "m38m", "dfn2b", "dfn5b", "lvd142m", "webli", "cc12m",
            "datacompxl", "metaclip", "sa1b")
SAME = {"in21k": "in22k"}  # ImageNet-21k and -22k are one dataset under two names


def number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    return float(text.replace(",", ""))


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"error: {folder} must hold exactly one {pattern} (found {[p.name for p in found]})")
    return found[0]


def tag_dataset(tag: str) -> str | None:
    """The first dataset a tag's name gives (``fb_in22k_ft_in1k``: in22k; ``sw_in12k``: in12k), by one name."""
    tokens = tag.split("_")
    found = next((t for t in tokens if t in DATASETS), None)
    return SAME.get(found, found)


def build(results: Path, commit: str) -> tuple[list[dict], dict]:
    import timm
    from timm.models import get_deprecated_models, get_pretrained_cfg

    deprecated = {old: new for old, new in get_deprecated_models().items() if new}
    tags = timm.list_pretrained()
    archs = set(timm.list_models())

    def current(name: str) -> str | None:
        """A table's model name as the installed timm spells it (an arch, or arch.tag), or None."""
        if name in archs or name in tags:
            return name
        return deprecated.get(name)

    def arch_of(name: str | None) -> str | None:
        return None if name is None else name.split(".")[0]

    imagenet: dict[str, list[dict[str, str]]] = {}
    for row in read(results / "results-imagenet.csv"):
        imagenet.setdefault(row["model"], []).append(row)
    infer_file, train_file = one(results, "benchmark-infer-*.csv"), one(results, "benchmark-train-*.csv")
    infer: dict[tuple[str, int], dict[str, str]] = {}  # (arch, size): timm measures some archs at several sizes
    for row in read(infer_file):
        infer.setdefault((arch_of(current(row["model"])) or row["model"], int(row["infer_img_size"])), row)
    train: dict[str, dict[str, str]] = {}
    for row in read(train_file):  # 2022: many names are timm's older ones; an arch's own row wins
        arch = arch_of(current(row["model"]))
        if arch is not None and (arch not in train or row["model"] == arch):
            train[arch] = row
    pretrain: dict[str, str] = {}
    for row in read(results / "model_metadata-in1k.csv"):
        name = current(row["model"])
        if name is not None:  # its older names are one weight each: the tag timm's renames give, or the default
            tag = name if "." in name else f"{name}.{get_pretrained_cfg(name).tag}"
            pretrain[tag] = row["pretrain"]
    old_names: dict[str, list[str]] = {}
    for old, new in deprecated.items():
        old_names.setdefault(new if "." in new else f"{new}.{get_pretrained_cfg(new).tag}", []).append(old)

    rows = []
    for name in tags:
        arch, tag = name.split(".", 1)
        cfg = get_pretrained_cfg(name)
        native = int(cfg.input_size[-1])
        evals = imagenet.get(name, [])
        ev = next((r for r in evals if int(r["img_size"]) == native), evals[0] if evals else None)
        # a benchmark of the arch at another size says nothing of this tag (convnext_tiny's _384 tags)
        inf, tr = infer.get((arch, native)), train.get(arch)
        tr = tr if tr and int(tr["train_img_size"]) == native else None
        from_tag = tag_dataset(tag)
        meta = pretrain.get(name)
        if meta is not None and from_tag is not None and SAME.get(meta.split("-")[0], meta.split("-")[0]) != from_tag:
            meta = None  # a bare name's metadata, given to a default tag of other weights: the tag's own name wins
        row = {
            "model": name, "arch": arch, "tag": tag,
            "default": get_pretrained_cfg(arch).tag == tag if arch in archs else False,
            "top1": number(ev["top1"]) if ev else None, "top5": number(ev["top5"]) if ev else None,
            "top1_img_size": int(ev["img_size"]) if ev else None,
            "params_m": number(ev["param_count"]) if ev else (number(inf["param_count"]) if inf else None),
            "img_size": native, "crop_pct": cfg.crop_pct, "fixed_input_size": bool(cfg.fixed_input_size),
            "pretrain": meta or from_tag,
            "pretrain_source": "metadata" if meta else ("tag" if from_tag else None),
            "infer_samples_per_s": number(inf["infer_samples_per_sec"]) if inf else None,
            "infer_img_size": int(inf["infer_img_size"]) if inf else None,
            "infer_batch_size": int(inf["infer_batch_size"]) if inf else None,
            "infer_gmacs": number(inf["infer_gmacs"]) if inf else None,
            "train_samples_per_s": number(tr["train_samples_per_sec"]) if tr else None,
            "train_img_size": int(tr["train_img_size"]) if tr else None,
            "train_batch_size": int(tr["train_batch_size"]) if tr else None,
            "old_names": ";".join(sorted(old_names.get(name, []))),
        }
        rows.append(row)
    source = {
        "what": "timm's published tables, one row per pretrained tag of the timm below",
        "repository": "https://github.com/huggingface/pytorch-image-models (folder results/)",
        "commit": commit, "licence": "Apache-2.0 (timm's)", "timm": timm.__version__,
        "files": sorted(p.name for p in (results / "results-imagenet.csv", results / "model_metadata-in1k.csv",
                                         infer_file, train_file)),
        "infer": {"file": infer_file.name, "gpu": "RTX 4090", "precision": "AMP", "layout": "NCHW",
                  "torch": "2.9.1", "cuda": "12.8"},
        "train": {"file": train_file.name, "gpu": "RTX 3090", "precision": "AMP", "layout": "NCHW",
                  "torch": "1.12", "cuda": "11.3", "note": "2022; names mapped from timm's older ones"},
        "built": time.strftime("%Y-%m-%d"), "rows": len(rows),
    }
    return rows, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="timm's results/ folder (the four CSV files)")
    parser.add_argument("--commit", default="aa4b5850", help="the timm commit the files come from")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tunekit")
    args = parser.parse_args()
    rows, source = build(args.results, args.commit)
    with open(args.out / TABLE_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else int(v) if isinstance(v, bool) else v) for k, v in row.items()})
    (args.out / SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n")
    def having(column: str) -> int:
        return sum(r[column] is not None for r in rows)

    print(f"{len(rows)} tags ({having('top1')} with ImageNet top-1, {having('infer_samples_per_s')} with inference "
          f"and {having('train_samples_per_s')} with training throughput) -> {args.out / TABLE_FILE}")


if __name__ == "__main__":
    main()
