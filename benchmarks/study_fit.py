"""A study-sized fine-tune against the hardware's ceiling for the same work (no Ray needed).

The study's convnext_tiny on Pets: 5,900 training and 1,470 validation images at 224 px, fastai's
fine_tune with 1 frozen + 5 unfrozen epochs (its fit_time: about 91 s). Here on generated data of
that size, from a weights file of random values (offline; it takes the pretrained path, so the
recipe is exactly 1+5). The lower bound of the same work from the bare steps of `tunekit bench`:
5 x 5,900 full train steps + (5,900 frozen-body + 6 x 1,470 validation) forward passes.

    python benchmarks/study_fit.py --device cuda --precision bf16            # the GPU figure
    python benchmarks/study_fit.py --model test_convnext --n 1200 --device cpu   # a quick CPU check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import tunekit  # noqa: F401  - first: the torchvision import workaround, before timm

# isort: split
import timm
import torch

from tunekit import TrialConfig
from tunekit.bench import ceiling, inference_ceiling
from tunekit.device import resolve_device, resolve_precision
from tunekit.errors import TunekitError
from tunekit.loop import fit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="convnext_tiny")
    p.add_argument("--n", type=int, default=7370, help="images (80%% train / 20%% valid)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    try:
        device = resolve_device(args.device)
    except TunekitError as e:  # e.g. --device cuda on a machine without CUDA: one line, exit code 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    precision = resolve_precision(args.precision, device)
    with tempfile.TemporaryDirectory() as d:
        weights = Path(d) / f"{args.model}.pth"
        torch.save(timm.create_model(args.model, pretrained=False, num_classes=0).state_dict(), weights)
        cfg = TrialConfig(data=f"shapes?n={args.n}&size={args.img_size}", model=args.model, pretrained=str(weights),
                          epochs=5, freeze_epochs=1, batch_size=args.batch_size, img_size=args.img_size,
                          precision=precision, device=str(device), lr=0.008)
        fit(TrialConfig(**{**cfg.to_dict(), "epochs": 1, "freeze_epochs": 0}))  # data made and decoded once
        result = fit(cfg)
    n_train, n_valid = result.info.n_train, result.info.n_valid
    train_rate = ceiling(args.model, device, args.batch_size, args.img_size, precision)[0]
    infer_rate = inference_ceiling(args.model, device, args.batch_size, args.img_size, precision)
    bound = 5 * n_train / train_rate + (n_train + 6 * n_valid) / infer_rate
    fit_time = result.history[-1]["fit_time"]
    record = {"model": args.model, "device": str(device), "precision": precision, "img_size": args.img_size,
              "batch_size": args.batch_size, "n_train": n_train, "n_valid": n_valid, "epochs": "1+5",
              "fit_time_s": round(fit_time, 2), "ceiling_bound_s": round(bound, 2),
              "bound_over_fit_time": round(bound / fit_time, 3), "ceiling_train_images_per_s": round(train_rate, 1),
              "ceiling_infer_images_per_s": round(infer_rate, 1), "error_rate": result.history[-1]["error_rate"],
              "gpu_mem_gib": result.history[-1]["gpu_mem"]}
    print(json.dumps(record, indent=2))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
