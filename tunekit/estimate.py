"""What a search would cost, before it starts: GPU-hours from timm's published throughput (``timm_table``), the
images, epochs and trials. An estimate for the table's GPUs (training: RTX 3090, AMP; inference: RTX 4090, AMP),
every trial run to the end (ASHA stops some), a whole GPU per trial, the data path and the start of each trial
left out: a scale, not a promise.

    cost = estimate(spec)            # a Cost, or None where the data's size is unknown before its download
    cost.line()                      # the plan's line

Per trial: training images x unfrozen epochs / training throughput, training images x frozen epochs (the head
alone learns: the body's forward pass, as in inference) and validation images x epochs over the inference
throughput, each throughput scaled from the size timm measured it at to the trial's image size by the pixel
count, averaged over the sizes and epoch counts the space can draw. Where timm lists no training throughput (it
is from 2022 and partial), the inference one times the median training/inference ratio of the models that have
both.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .config import TrialConfig, reported_epochs
from .data.spec import DataSpec
from .spec import SearchSpec
from .timm_table import ModelRow, load, source


@dataclass
class Cost:
    gpu_hours: float
    trials: int
    estimated: int  # trials with a throughput to go by
    images: tuple[int, int]  # training, validation
    ratio: float  # training / inference throughput, the median of the models timm lists both for
    from_inference: int  # trials estimated from the inference throughput

    def line(self) -> str:
        src = source()
        unknown = self.trials - self.estimated
        return (f"  cost     about {self.gpu_hours:,.1f} GPU-hours on timm's GPUs ({src['train']['gpu']} training, "
                f"{src['infer']['gpu']} inference, AMP): {self.images[0]:,} training and {self.images[1]:,} "
                f"validation images, every trial to the end, one per GPU (an estimate from timm's published "
                f"throughput; {self.from_inference} of {self.estimated} trial(s) from inference x "
                f"{self.ratio:.2f}" + (f"; {unknown} trial(s) of models without a throughput left out" if unknown
                                       else "") + ")")


def training_ratio() -> float:
    """The median training / inference throughput over the tags timm lists both for, at the same size."""
    ratios = [r.train_samples_per_s / r.infer_samples_per_s for r in load().rows
              if r.train_samples_per_s and r.infer_samples_per_s and r.train_img_size == r.infer_img_size]
    return statistics.median(ratios) if ratios else math.nan


def image_counts(data: str) -> tuple[int, int] | None:
    """(training, validation) images of ``data``: listed on disk, or the known size of a built-in download."""
    from .data.download import REMOTES
    from .prepare import listed_facts

    spec = DataSpec.parse(data)
    if spec.path is not None and spec.path.exists():
        facts = listed_facts(data)
        return facts.n_train, facts.n_valid
    remote = REMOTES.get(spec.kind)
    if remote is not None and remote.images:
        valid = remote.valid_images or round(remote.images * spec.opt("valid_pct"))
        return remote.images - valid, valid
    return None


def _per_s(row: ModelRow, img_size: int, ratio: float) -> tuple[float, float, bool] | None:
    """(training, inference) images/s at ``img_size``, and whether training came from inference."""
    if row.infer_samples_per_s is None and row.train_samples_per_s is None:
        return None

    def scaled(per_s: float, size: int | None) -> float:
        return per_s * ((size or img_size) / img_size) ** 2

    infer = scaled(row.infer_samples_per_s, row.infer_img_size) if row.infer_samples_per_s else None
    if row.train_samples_per_s:
        train, derived = scaled(row.train_samples_per_s, row.train_img_size), False
    else:
        train, derived = infer * ratio, True
    return train, infer or train / ratio, derived


def estimate(spec: SearchSpec) -> Cost | None:
    counts = image_counts(spec.data)
    if counts is None:
        return None
    n_train, n_valid = counts
    table, ratio = load(), training_ratio()
    models = [str(m) for m in spec.values_of("model") or []]
    sizes = spec.values_of("img_size") or [None]
    # the epochs a trial runs, frozen and not, over the combinations the space gives (each as likely)
    combos = [(f if p is not False else 0, reported_epochs(e, f, p) - (f if p is not False else 0))
              for e in spec.values_of("epochs") or [TrialConfig.epochs]
              for f in spec.values_of("freeze_epochs") or [TrialConfig.freeze_epochs]
              for p in spec.values_of("pretrained") or [TrialConfig.pretrained]]
    per_model = spec.trial_count() / max(1, len(models))  # trials per model choice, spread evenly
    seconds, estimated, derived = 0.0, 0, 0
    for model in models:
        row = table.find(model)
        if row is None:
            continue
        per_size = [_per_s(row, int(size or row.img_size), ratio) for size in sizes]
        if any(speeds is None for speeds in per_size):
            continue
        trial_s = 0.0
        for train, infer, _ in per_size:
            for frozen, unfrozen in combos:
                # a frozen epoch trains the head only: its cost is the body's forward pass, as in inference
                trial_s += (frozen * n_train + (frozen + unfrozen) * n_valid) / infer + unfrozen * n_train / train
        seconds += per_model * trial_s / (len(per_size) * len(combos))
        estimated += round(per_model)
        derived += round(per_model) if per_size[0][2] else 0
    return Cost(seconds / 3600, spec.trial_count(), estimated, (n_train, n_valid), ratio, derived)
