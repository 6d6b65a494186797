"""A study-shaped sweep, timed two ways: ``tunekit search`` (auto GPU shares, packed trials) against the same
trials run one after another by a bare timm + torch loop (no Ray, no tunekit). Prints both wall times and
their ratio (the goal on a GPU: tunekit <= 0.5 of the bare sum) and writes OUT/gpu_sweep.json.

The sweep: 3 backbones x pool (avg, concat) x lr (2 values) = 12 trials, every trial to its end (no ASHA:
the same work both ways), 1 frozen + 2 epochs with pretrained weights where this machine has them (else 3
epochs from scratch), 224 px, batch 64, bf16 on a GPU that has it. The bare loop is what a user writes
without a tool: a torchvision ImageFolder of the same generated images behind a DataLoader, timm's
model with the same pool and head, AdamW under a one-cycle schedule, autocast.

    python benchmarks/gpu_sweep.py --out /tmp/sweep-$(date +%s)          # on a GPU machine
    python benchmarks/gpu_sweep.py --device cpu --out /tmp/sweep         # tiny (1 backbone, 4 trials): the suite's
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SIZES = {
    "cuda": {"models": ["resnet18", "convnext_tiny", "efficientnet_b0"], "lrs": [0.008, 0.02], "size": 224,
             "n": 3000, "batch": 64, "workers": 6},
    # the tiny mode checks the path (both ways, timed, one JSON) on one backbone: 4 trials
    "cpu": {"models": ["test_resnet"], "lrs": [0.008, 0.02], "size": 32, "n": 96, "batch": 32, "workers": 0},
}


def sweep_space(out: Path, data: str, s: dict, pretrained: bool, device: str) -> Path:
    space = out / "sweep.py"
    epochs = "epochs = 2\n" if pretrained else "epochs = 3\n"
    space.write_text(textwrap.dedent(f"""\
        # benchmarks/gpu_sweep.py's sweep: 3 backbones x pool x lr, every trial to its end
        from ray import tune
        data = {data!r}
        {epochs.strip()}
        searcher = "grid"
        asha = None
        gpus_per_trial = {'"auto"' if device == "cuda" else 0}
        space = {{"model": tune.grid_search({s['models']!r}), "pool": tune.grid_search(["avg", "concat"]),
                 "lr": tune.grid_search({s['lrs']!r}), "pretrained": {pretrained!r}, "img_size": {s['size']},
                 "batch_size": {s['batch']}, "resize": "squish", "seed": 0}}
        """))
    return space


def bare_trial(folder: Path, model_name: str, pool: str, lr: float, s: dict, device: str, pretrained: bool) -> float:
    """One trial the bare way; returns its wall seconds (model creation included, as a trial's)."""
    import timm
    import torch
    from torch import nn
    from torchvision import datasets, transforms

    from tunekit.weights import local_weights  # where this machine keeps the weights (no network)

    start = time.perf_counter()
    dev = torch.device(device)
    tf = transforms.Compose([transforms.Resize((s["size"], s["size"])), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    images = datasets.ImageFolder(folder, tf)  # tunekit's folder source holds out 20% for validation too
    train, valid = torch.utils.data.random_split(images, [0.8, 0.2], torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(train, s["batch"], shuffle=True, num_workers=s["workers"], drop_last=True,
                                         pin_memory=dev.type == "cuda", persistent_workers=s["workers"] > 0)
    vloader = torch.utils.data.DataLoader(valid, s["batch"] * 2, num_workers=s["workers"])
    overlay = {"pretrained_cfg_overlay": {"file": local_weights(model_name)}} if pretrained else {}
    body = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **overlay).to(dev)
    pooled = timm.layers.SelectAdaptivePool2d(pool_type="avg" if pool == "avg" else "catavgmax", flatten=True)
    head = nn.Linear(body.num_features * (2 if pool == "concat" else 1), len(images.classes)).to(dev)

    class Net(nn.Module):  # the backbone's feature map, pooled, a linear head (CNNs: the sweep's backbones)
        def __init__(self) -> None:
            super().__init__()
            self.body, self.pool, self.head = body, pooled, head

        def forward(self, x):
            return self.head(self.pool(self.body.forward_features(x)))

    model = Net().to(dev)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    phases = [(True, 1), (False, 2)] if pretrained else [(False, 3)]
    for frozen, epochs in phases:
        for p in body.parameters():
            p.requires_grad = not frozen
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(loader))
        for _ in range(epochs):
            model.train()
            for x, y in loader:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                with torch.autocast(**amp):
                    loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            model.eval()
            with torch.inference_mode(), torch.autocast(**amp):
                for x, _ in vloader:
                    model(x.to(dev, non_blocking=True))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="A new folder for the run folder, logs and JSON.")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args(argv)
    import torch

    import tunekit  # noqa: F401 - before timm (torchvision's import workaround)
    from tunekit.data.shapes import write_shapes
    from tunekit.weights import local_weights

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"error: no CUDA GPU here (torch {torch.__version__}): run it with --device cpu for the tiny mode")
        return 2
    s = SIZES[args.device]
    args.out.mkdir(parents=True, exist_ok=False)
    folder = write_shapes(args.out / "data", n=s["n"], size=s["size"], seed=0)
    pretrained = all(local_weights(m) for m in s["models"])
    space = sweep_space(args.out, f"folder:{folder}", s, pretrained, args.device)

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tunekit.cli", "search", str(space), "--storage-path",
                           str(args.out / "runs"), "--name", "sweep", "--progress", "summary"],
                          capture_output=True, text=True)
    tunekit_s = time.perf_counter() - start
    (args.out / "search.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(f"error: the search failed (exit {proc.returncode}); see {args.out / 'search.log'}")
        return 1
    trials = [(m, p, lr) for m in s["models"] for p in ("avg", "concat") for lr in s["lrs"]]
    bare = {f"{m} {p} {lr}": bare_trial(folder, m, p, lr, s, args.device, pretrained) for m, p, lr in trials}
    bare_s = sum(bare.values())
    ratio = tunekit_s / bare_s
    record = {"device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "trials": len(trials), "pretrained": pretrained, "tunekit_s": tunekit_s, "bare_sum_s": bare_s,
              "ratio": ratio, "bare_s": bare, "torch": torch.__version__}
    (args.out / "gpu_sweep.json").write_text(json.dumps(record, indent=2))
    print(f"sweep of {len(trials)} trials ({'1+2 epochs, pretrained' if pretrained else '3 epochs from scratch'}, "
          f"{s['size']}px) on {record['gpu']}")
    how = "auto GPU shares, packed" if args.device == "cuda" else "1 CPU per trial"
    print(f"  tunekit search ({how}): {tunekit_s:.1f}s wall, from the command to its summary")
    print(f"  bare timm + torch, one after another: {bare_s:.1f}s (per trial {min(bare.values()):.1f}-"
          f"{max(bare.values()):.1f}s)")
    print(f"  ratio tunekit / bare: {ratio:.2f} (goal on a GPU: <= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
