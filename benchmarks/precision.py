"""Train-step throughput of fp32 against bf16 (and fp16) autocast: the evidence behind precision=auto.

    python benchmarks/precision.py --device cpu --models test_resnet,test_convnext,test_vit --img-size 64
    python benchmarks/precision.py --device cuda --models resnet18,convnext_tiny,vit_small_patch16_224

The bare train step (forward, loss, backward, AdamW step) of the network tunekit trains, on random
tensors (``tunekit.bench.ceiling``, as timm's benchmark.py measures it); no data, no Ray. Prints a
table and, with --json, records.
"""

from __future__ import annotations

import argparse
import json
import platform

import tunekit  # noqa: F401  - first: the torchvision import workaround, before timm

# isort: split
import timm
import torch

from tunekit.bench import ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="test_resnet,test_convnext,test_vit")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="also write the records to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {where}, torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, {args.img_size}px")
    precisions = args.precisions.split(",")
    print(f"{'model':24s}" + "".join(f"{p + ' img/s':>14s}" for p in precisions) + f"{'bf16/fp32':>11s}")
    records = []
    for name in args.models.split(","):
        rates = {p: ceiling(name, device, args.batch_size, args.img_size, p, warmup=args.warmup, steps=args.iters)[0]
                 for p in precisions}
        ratio = rates["bf16"] / rates["fp32"] if {"bf16", "fp32"} <= rates.keys() else float("nan")
        print(f"{name:24s}" + "".join(f"{rates[p]:14.0f}" for p in precisions) + f"{ratio:11.2f}")
        records.append({"model": name, "device": str(device), "batch_size": args.batch_size,
                        "img_size": args.img_size, **{f"{p}_images_per_s": r for p, r in rates.items()}})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)


if __name__ == "__main__":
    main()
