"""How well each pre-screen method ranks backbones against published and measured fine-tune results: the weighted
Kendall tau (scipy's ``weightedtau``, as the transferability literature scores rankers) of a method's scores
against fine-tuned accuracy.

    python benchmarks/prior_check.py --sfda                         # the 11 x 11 transferability benchmark
    python benchmarks/prior_check.py --truth fashion_mnist=RUN_DIR --truth digits=RUN_DIR2
    python benchmarks/prior_check.py --write-digits DIR                # scikit-learn's digits as an image folder

``--sfda``: the fine-tuned top-1 of 11 torchvision ImageNet models on 11 datasets (TencentARC/SFDA's
``tw_group1.py``, the ground truth LogME, NLEEP and SFDA were published on; a CSV of dataset, model,
finetune_top1). The prior's score is the model's ImageNet top-1: timm's table (``tunekit.timm_table``, the
``*.tv_in1k`` tags, torchvision's weights) for the 8 timm has, and torchvision's own published top-1 for the 3 it
does not (googlenet 69.78, mnasnet1_0 73.46, mobilenet_v2 71.88, from torchvision's model documentation). Also a
size prior (parameters) for comparison. Printed per dataset and as the mean, beside the published means of LogME
(0.51), NLEEP (0.61) and SFDA (0.71) from SFDA's readme, with both argument orders of ``weightedtau`` (SFDA's code
passes the score first).

``--truth NAME=RUN_DIR``: a search that fine-tuned real pretrained models (every trial to the end: ``asha=None``)
is the ground truth (each model's best error rate over its trials); the methods are scored on the same data: the
prior from timm's table, LogME from ``tunekit.rank`` (a forward pass each), the hybrid (the prior's shortlist
checked by LogME, for a pre-screen keeping one). Few models make a weak check: three give a tau in {-1, -1/3,
1/3, 1} (weighted: a few more values), and this says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import weightedtau

import tunekit  # noqa: F401 - the torchvision import workaround, before timm
from tunekit.prior import rank_by
from tunekit.timm_table import load

TORCHVISION_TOP1 = {"googlenet": 69.78, "mnasnet1_0": 73.46, "mobilenet_v2": 71.88}  # torchvision's model docs
TORCHVISION_PARAMS = {"googlenet": 6.62, "mnasnet1_0": 4.38, "mobilenet_v2": 3.50}
PUBLISHED = {"LogME": 0.51, "NLEEP": 0.61, "SFDA": 0.71}  # mean weighted tau over the 11 datasets (SFDA's readme)


def prior_scores(models: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """ImageNet top-1 and parameters (M) of the SFDA models: timm's table where it has torchvision's weights."""
    table = load()
    top1, params = {}, {}
    for m in models:
        row = table.find(f"{m}.tv_in1k")
        top1[m] = row.top1 if row is not None and row.top1 is not None else TORCHVISION_TOP1[m]
        params[m] = row.params_m if row is not None and row.params_m is not None else TORCHVISION_PARAMS[m]
    return top1, params


def wtau(score: dict[str, float], truth: dict[str, float], score_first: bool = True) -> float:
    models = sorted(truth)
    x, y = [score[m] for m in models], [truth[m] for m in models]
    return float(weightedtau(x, y)[0] if score_first else weightedtau(y, x)[0])


def sfda(path: Path) -> dict:
    gt = pd.read_csv(path)
    models = sorted(gt["model"].unique())
    top1, params = prior_scores(models)
    rows = []
    for dataset, g in gt.groupby("dataset", sort=True):
        truth = dict(zip(g["model"], g["finetune_top1"]))
        rows.append({"dataset": dataset, "prior": wtau(top1, truth), "prior (truth first)": wtau(top1, truth, False),
                     "params": wtau(params, truth)})
    df = pd.DataFrame(rows)
    print(f"SFDA's benchmark: {len(models)} models x {len(df)} datasets, weighted Kendall tau against fine-tuned top-1")
    print(df.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    means = {c: float(df[c].mean()) for c in df.columns if c != "dataset"}
    print("mean: " + ", ".join(f"{k} {v:+.3f}" for k, v in means.items())
          + "; published: " + ", ".join(f"{k} {v:.2f}" for k, v in PUBLISHED.items()))
    return {"per_dataset": rows, "mean": means, "published": PUBLISHED, "models": len(models)}


def truth_of(run: Path) -> tuple[str, dict[str, float]]:
    """(the data spec, each model's best error rate) of a finished search's run folder."""
    from tunekit.report import load_run

    spec = json.loads((run / "tunekit_spec.json").read_text())
    df = load_run(run)
    done = df[df["status"] == "completed"]
    return spec["data"], {str(m): float(v) for m, v in done.groupby("model")["error_rate"].min().items()}


def offline(name: str, run: Path, img_size: int, max_images: int | None) -> dict:
    from tunekit.rank import rank_models

    data, errors = truth_of(run)
    models = sorted(errors)
    truth = {m: -e for m, e in errors.items()}  # higher is better, as the scores
    logme_rows = {r.model: r for r in rank_models(data, models, img_size=img_size, max_images=max_images)}

    def logme_of(names: list[str]) -> list:
        return [logme_rows[n] for n in names]

    out = {"data": data, "models": models, "errors": errors}
    for method in ("prior", "logme", "hybrid"):
        choices = rank_by(models, method, keep=1, logme_of=logme_of)
        score = {c.model: -float(c.rank) for c in choices}  # the method's ranking, best first
        out[method] = wtau(score, truth)
    out["logme_scores"] = {m: r.logme for m, r in logme_rows.items()}
    out["top1"] = {m: load().find(m).top1 for m in models}
    print(f"{name} ({data}): {len(models)} models fine-tuned, best error rate "
          + ", ".join(f"{m} {e:.4f}" for m, e in sorted(errors.items(), key=lambda kv: kv[1])))
    print("  ImageNet top-1: " + ", ".join(f"{m} {v}" for m, v in out["top1"].items()))
    print("  LogME: " + ", ".join(f"{m} {v:.4f}" for m, v in out["logme_scores"].items()))
    print("  weighted tau against the fine-tuned ranking: " + ", ".join(f"{k} {out[k]:+.3f}" for k in
                                                                         ("prior", "logme", "hybrid"))
          + f" (from {len(models)} models: a weak check)")
    return out


def write_digits(out: Path, size: int = 32) -> Path:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes) as a folder of PNGs, upsampled to ``size`` px:
    a real dataset that needs no network (``folder:OUT`` for tunekit)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    valid = rng.random(len(digits.images)) < 0.2
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        split = "valid" if valid[i] else "train"
        folder = out / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (img / 16.0 * 255).astype(np.uint8)
        Image.fromarray(pixels).resize((size, size), Image.NEAREST).convert("RGB").save(folder / f"{i}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sfda", type=Path, nargs="?", const=Path(__file__).parent / "data" /
                        "sfda_group1_finetune_top1.csv", help="the SFDA ground truth CSV (dataset, model, "
                        "finetune_top1; default: benchmarks/data's copy)")
    parser.add_argument("--truth", action="append", default=[], metavar="NAME=RUN_DIR")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--write-digits", type=Path, metavar="DIR")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    record: dict = {}
    if args.write_digits:
        print(f"digits written to {write_digits(args.write_digits)} (folder:{args.write_digits})")
    if args.sfda:
        record["sfda"] = sfda(args.sfda)
    for item in args.truth:
        name, _, run = item.partition("=")
        record[name] = offline(name, Path(run), args.img_size, args.max_images)
    if len(args.truth) > 1:
        for method in ("prior", "logme", "hybrid"):
            print(f"mean over the offline datasets, {method}: "
                  f"{statistics.mean(record[n.partition('=')[0]][method] for n in args.truth):+.3f}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
