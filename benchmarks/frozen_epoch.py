"""The frozen epoch, tunekit against fastai, one random component swapped at a time.

    python benchmarks/frozen_epoch.py --size 56 --resize crop --pool avg --lr 0.01      # seeds 0-9
    python benchmarks/frozen_epoch.py --json out.json                                   # vs_fastai's setup

What ``vs_fastai.py``'s step-by-step parity cannot see, because it feeds fastai's batches and weights to
tunekit with dropout off, is what each framework draws at random: the batches (the order, the flips, and
the pixels: each framework decodes, converts and resizes the files itself), the head's initial weights,
and dropout's masks. Per seed, in one process, this runs fastai's frozen epoch for real (recording its
batches as they went into the model, and its head as initialized), then tunekit's frozen epoch, through
tunekit's own loop (``tunekit.loop``), with each combination of

- batches: tunekit's (``Batches``: its decode-once cache, crops, flips, order) or fastai's, as recorded;
- head init: tunekit's draw or fastai's (fastai's initial head weights loaded);
- dropout: on (as trained) or off;

each from the same starting point (the pretrained body, its norm statistics, a fresh optimizer, the same
dropout generator state). With tunekit's batches and head and dropout on, it is tunekit's run itself; with
fastai's batches and head, fastai's run through tunekit's step (the parity says the steps are the same, so
it differs from fastai's own only by dropout's masks and float rounding). The effect of each swap is
paired by seed. Before training it checks the pixels: every validation image as each framework's
pipeline gives it to the model, and fastai's batch flip against an exact mirror.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_fastai  # noqa: E402 - the setup, its runners and statistics are vs_fastai's

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = [  # (batches, head init, dropout)
    ("tunekit", "tunekit", "on"), ("fastai", "tunekit", "on"), ("tunekit", "fastai", "on"), ("fastai", "fastai", "on"),
    ("tunekit", "tunekit", "off"), ("fastai", "fastai", "off"),
]


def name(v: tuple[str, str, str]) -> str:
    return f"batches {v[0]}, head {v[1]}, dropout {v[2]}"


class Recorded:
    """fastai's batches of one epoch, as recorded, in the shape of tunekit's ``Batches`` for the loop."""

    resident_bytes = 0

    def __init__(self, batches: list[tuple]) -> None:
        self.batches = batches
        self.n_items = sum(len(y) for _, y in batches)

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int):
        yield from self.batches


def fastai_frozen_epoch(s: dict, seed: int):
    """fastai's frozen epoch (fine_tune's first fit), for real: (learner, its error after the epoch, its
    initial weights, the batches it trained on)."""
    import torch
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback

    learn = vs_fastai.fastai_learner(s, seed, pretrained=True)
    learn.remove_cb(ProgressCallback)
    start = {k: v.clone() for k, v in learn.model.state_dict().items()}
    seen: list[tuple] = []

    class Record(Callback):
        order = 100

        def before_batch(self):
            if self.training:  # as they go into the model (after fastai's batch transforms)
                seen.append((self.xb[0].detach().as_subclass(torch.Tensor).clone(),
                             self.yb[0].as_subclass(torch.Tensor).clone()))

    learn.freeze()
    learn.fit_one_cycle(s["freeze_epochs"], slice(s["lr"]), pct_start=0.99, cbs=[Record()])
    return learn, float(learn.final_record[-1]), start, seen


def pixel_check(learn, run, valid_files: list[Path]) -> dict:
    """Each validation image as fastai's pipeline (decode, RGB, Resize, to float, Normalize) and as
    tunekit's (decode-once cache, centre crop, normalize) give it, in pixel levels (0-255); and fastai's
    ``Flip`` against an exact mirror."""
    import torch
    from fastai.vision.all import Flip

    std = torch.tensor(run.info.model.std).view(1, 3, 1, 1) * 255
    theirs = torch.cat([x.as_subclass(torch.Tensor) for x, _ in learn.dls.valid])
    files = [Path(f).resolve() for f in learn.dls.valid_ds.items]
    where = {Path(f).resolve(): i for i, f in enumerate(valid_files)}
    ours = torch.cat([x for x, _ in run.valid.epoch(0)])[[where[f] for f in files]]
    diff = ((ours - theirs).abs() * std)
    x = next(iter(learn.dls.valid))[0]
    flipped = Flip(p=1.0)(x, split_idx=0).as_subclass(torch.Tensor)
    flip_diff = ((flipped - x.as_subclass(torch.Tensor).flip(-1)).abs() * std).max().item()
    return {"images": len(files), "max_level_diff": diff.max().item(), "mean_level_diff": diff.mean().item(),
            "share_differing": (diff.amax(dim=(1, 2, 3)) > 0.5).float().mean().item(), "flip_max_level_diff": flip_diff}


def one_seed(s: dict, seed: int, pixels: bool, variants: list[tuple[str, str, str]]) -> dict:
    import torch
    from torch import nn

    import tunekit  # noqa: F401 - first: guards the torchvision import timm makes
    from tunekit.config import TrialConfig
    from tunekit.data.dataset import resolve_items
    from tunekit.loop import StartClock, _epoch, _setup
    from tunekit.recipe import optimizer, plan

    learn, fastai_error, fastai_start, recorded = fastai_frozen_epoch(s, seed)
    cfg = TrialConfig.from_dict(vs_fastai.tunekit_config(s, seed, pretrained=True))
    run = _setup(cfg, StartClock())  # seeds torch's generator and draws tunekit's head, as a run does
    rng = torch.get_rng_state()  # dropout's generator, as the run's first step finds it
    run.book = None
    assert run.info.classes == list(learn.dls.vocab), (run.info.classes, learn.dls.vocab)
    out: dict = {"seed": seed, "fastai": fastai_error, "variants": {}}
    if pixels:
        items = resolve_items(cfg.data)
        out["pixels"] = pixel_check(learn, run, [items.files[i] for i in run.valid.index])
    start = {k: v.clone() for k, v in run.model.state_dict().items()}
    dropouts = [m for m in run.model.modules() if isinstance(m, nn.Dropout)]
    rates = [m.p for m in dropouts]
    own_batches, phase = run.train, plan(cfg)[0]
    for v in variants:
        batches, head, dropout = v
        run.model.load_state_dict(start)
        if head == "fastai":
            vs_fastai.load_fastai_state(run.model, fastai_start, body=False)
        for m, p in zip(dropouts, rates):
            m.p = p if dropout == "on" else 0.0
        run.train = own_batches if batches == "tunekit" else Recorded(recorded)
        run.opt = optimizer(run.model, cfg.lr)  # a fresh one: the state a phase starts with
        run.model.freeze_body(True)
        torch.set_rng_state(rng)
        metrics = _epoch(run, phase, 0, 1)
        out["variants"][name(v)] = metrics["error_rate"]
    return out


def child(s: dict, seed: int, pixels: bool, own_only: bool) -> dict:
    cmd = [sys.executable, __file__, "--one", str(seed), "--setup", json.dumps(s)] + (["--pixels"] if pixels else [])
    cmd += ["--own-only"] if own_only else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


FASTAI = "fastai (its own run)"


def effect(errors: list[dict], a: str, b: str) -> str:
    """Mean of (run a - run b) over the seeds, with its 95% t interval."""
    diff, half = vs_fastai.t_interval([e[a] - e[b] for e in errors])
    return f"{diff:+.3f} ± {half:.3f}"


def summary(rows: list[dict]) -> str:
    lines = [f"The frozen epoch, {len(rows)} seeds; error after it (mean ± 95% t interval; sd):", "",
             "| run | error | seed-to-seed sd |", "|---|---|---|"]

    errors = [{FASTAI: r["fastai"], **r["variants"]} for r in rows]  # per seed: each run's error

    def row(label: str, run: str) -> None:
        mean, half = vs_fastai.t_interval([e[run] for e in errors])
        lines.append(f"| {label} | {mean:.3f} ± {half:.3f} | {statistics.stdev(e[run] for e in errors):.3f} |")

    row(FASTAI, FASTAI)
    for v in VARIANTS:
        if name(v) in errors[0]:
            row(f"tunekit's loop: {name(v)}" + (" (tunekit's own run)" if v == VARIANTS[0] else ""), name(v))
    tunekit = name(VARIANTS[0])
    lines += ["", "Seed-to-seed sd, tunekit's own run / fastai's own run: {:.2f} (95% F interval {:.2f}-{:.2f})".format(
        *vs_fastai.sd_ratio([e[tunekit] for e in errors], [e[FASTAI] for e in errors]))]
    t, f = "tunekit", "fastai"
    swaps = [
        ("fastai's batches instead of tunekit's (tunekit's head)", name((f, t, "on")), name((t, t, "on"))),
        ("fastai's batches instead of tunekit's (fastai's head)", name((f, f, "on")), name((t, f, "on"))),
        ("fastai's head init instead of tunekit's (tunekit's batches)", name((t, f, "on")), name((t, t, "on"))),
        ("fastai's head init instead of tunekit's (fastai's batches)", name((f, f, "on")), name((f, t, "on"))),
        ("dropout off (tunekit's batches and head)", name((t, t, "off")), name((t, t, "on"))),
        ("dropout off (fastai's batches and head)", name((f, f, "off")), name((f, f, "on"))),
        ("fastai's batches and head in tunekit's loop, against fastai's own run", name((f, f, "on")), FASTAI),
        ("tunekit's own run against fastai's own run", tunekit, FASTAI),
    ]
    lines += ["", "Swaps, paired by seed (difference in error, 95% t interval):", "", "| swap | effect |", "|---|---|"]
    lines += [f"| {label} | {effect(errors, a, b)} |" for label, a, b in swaps if a in errors[0] and b in errors[0]]
    pix = next((r["pixels"] for r in rows if "pixels" in r), None)
    if pix:
        lines += ["", f"Pixels: {pix['images']} validation images as each pipeline gives them to the model: largest "
                      f"difference {pix['max_level_diff']:.2f} levels (of 255), mean {pix['mean_level_diff']:.4f}, "
                      f"{pix['share_differing']:.1%} of images differ by more than half a level; fastai's Flip "
                      f"against an exact mirror: {pix['flip_max_level_diff']:.2g} levels."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    vs_fastai.setup_args(p)
    p.add_argument("--json", type=Path, help="write every seed's errors here")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--setup", help=argparse.SUPPRESS)
    p.add_argument("--own-only", action="store_true",
                   help="only each framework's own run (no swaps): the frozen epoch side by side, cheaply")
    p.add_argument("--load", type=Path, help="summarize an earlier --json file instead of running")
    p.add_argument("--pixels", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        print(summary(json.loads(args.load.read_text())["seeds"]))
        return
    if args.one is not None:
        variants = VARIANTS[:1] if args.own_only else VARIANTS
        print(json.dumps(one_seed(json.loads(args.setup), args.one, args.pixels, variants)))
        return
    s = vs_fastai.setup_from(args)
    vs_fastai.check_ready(s)
    print(f"data: {vs_fastai.data_dir(s)} (both frameworks)", file=sys.stderr)
    rows = []
    for i, seed in enumerate(args.seeds):
        rows.append(child(s, seed, pixels=i == 0, own_only=args.own_only))
        print(f"  seed {seed}: fastai {rows[-1]['fastai']:.3f}, " +
              ", ".join(f"{k.replace('batches ', '').replace('head ', '').replace('dropout ', '')} {e:.3f}"
                        for k, e in rows[-1]["variants"].items()), file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps({"setup": s, "seeds": rows}, indent=1))
    print(summary(rows))


if __name__ == "__main__":
    main()
