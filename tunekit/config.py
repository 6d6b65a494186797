"""TrialConfig and the contracts every part of tunekit shares: config keys, choices, metric names.

Every entry point (``tunekit train``, a Ray trial's config dict, the Python API) turns
its raw values into a ``TrialConfig`` with :meth:`TrialConfig.from_dict`, which rejects
unknown keys with a close-match suggestion and quotes any bad value. Below this point no
raw dicts travel::

    cfg = TrialConfig.from_dict({"model": "resnet26d", "lr": 0.008, "pool": "concat"})
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import TunekitError, did_you_mean, one_of

# String choices; what each builds lives beside its user (model.HEADS, data.cache's resize methods), and
# the CLI's choices are read from here.
POOLS = ("avg", "concat")
HEADS = ("fastai", "linear")
RESIZES = ("crop", "squish", "pad")
PROGRESS_DISPLAYS = ("auto", "summary", "events")  # a search's screen: see tuner.progress
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILES = ("off", "on", "auto")  # torch.compile of the step (tunekit.compiled; auto: when it pays, measured)
DEFAULT_STORAGE = "~/ray_results"  # where searches put their run folders (--storage-path)

# The keys a search space may sample over (the search dimensions); the rest are run settings.
SEARCH_KEYS = (
    "model", "pool", "head", "resize", "lr", "zero_init", "pretrained", "epochs",
    "freeze_epochs", "batch_size", "img_size", "precision", "seed", "compile",
)

# The per-epoch metrics every run reports, in this order (flat keys: TensorBoard tags, progress.csv and
# report columns are named after them). f2 only for multi-label data; gpu_mem is 0 on a CPU.
METRICS = ("epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "f2", "fit_time",
           "images_per_s", "gpu_mem", "lr")
# The metrics a search may optimize (its ``metric`` setting): the ones that measure a trial.
SEARCH_METRICS = tuple(m for m in METRICS if m not in ("epoch", "lr"))
# What a finished trial is remembered by (TensorBoard's hparams view, an exported model's manifest).
FINAL_METRICS = ("error_rate", "accuracy", "f2", "valid_loss", "fit_time", "gpu_mem")


@dataclass(frozen=True)
class TrialConfig:
    """One run. Defaults follow the study: fastai's fine_tune recipe, concat pool, crop, lr 0.008."""

    data: str = "shapes"
    model: str = "resnet18"
    pool: str = "concat"
    head: str = "fastai"
    resize: str = "crop"
    lr: float = 0.008
    zero_init: bool | None = None  # None: the backbone's own timm default
    pretrained: bool | str = True  # True: timm's hub weights; a str: a local weights file
    epochs: int = 5
    freeze_epochs: int = 1
    batch_size: int = 64
    img_size: int | None = None  # None: the dataset's natural size, else the model's input size
    precision: str = "auto"
    compile: str = "off"  # COMPILES
    seed: int = 42
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads; a Ray trial sets its CPU share

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise one_of("pool", self.pool, POOLS)
        if self.head not in HEADS:
            raise one_of("head", self.head, HEADS)
        if self.resize not in RESIZES:
            raise one_of("resize", self.resize, RESIZES)
        if self.precision not in PRECISIONS:
            raise one_of("precision", self.precision, PRECISIONS)
        if self.compile not in COMPILES:
            raise one_of("compile", self.compile, COMPILES)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TunekitError(f"lr must be a positive number, got {self.lr!r}")
        _at_least("epochs", self.epochs, 1)
        _at_least("freeze_epochs", self.freeze_epochs, 0)
        # BatchNorm in training needs more than one value per channel.
        _at_least("batch_size", self.batch_size, 2)
        if self.img_size is not None:
            _at_least("img_size", self.img_size, 16)
        if self.threads is not None:
            _at_least("threads", self.threads, 1)
        if not (self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps")):
            raise TunekitError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {self.device!r}")
        if isinstance(self.pretrained, str) and not Path(self.pretrained).expanduser().is_file():
            raise TunekitError(f"pretrained weights file {self.pretrained!r} does not exist")

    @property
    def uses_pretrained(self) -> bool:
        return self.pretrained is not False

    @property
    def total_epochs(self) -> int:
        """Epochs the run reports: freeze + fine-tune with pretrained weights, else ``epochs``."""
        return reported_epochs(self.epochs, self.freeze_epochs, self.pretrained)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Build from raw values (strings from a CLI are accepted for numbers and booleans)."""
        known = {f.name: f for f in fields(cls)}
        for key in values:
            if key not in known:
                raise TunekitError(f"unknown config key {key!r}{did_you_mean(key, known)}")
        return cls(**{k: _coerce(k, v, known[k].default) for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def reported_epochs(epochs: int, freeze_epochs: int, pretrained: bool | str) -> int:
    """How many epochs a run reports (ASHA's time axis): fastai's fine_tune runs ``freeze_epochs``
    frozen epochs before ``epochs`` with pretrained weights; from scratch only ``epochs``."""
    return int(epochs) + (int(freeze_epochs) if pretrained is not False else 0)


def total_epochs(config: dict[str, Any]) -> int:
    """:func:`reported_epochs` of a trial's config (its keys, else TrialConfig's defaults)."""
    return reported_epochs(config.get("epochs", TrialConfig.epochs),
                           config.get("freeze_epochs", TrialConfig.freeze_epochs),
                           config.get("pretrained", TrialConfig.pretrained))


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise TunekitError(f"{name} must be at least {low}, got {value!r}")


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Coerce ``value`` to the type of the field ``key`` (whose default is ``default``)."""
    if key in ("zero_init", "pretrained"):
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, bool) or (value is None and key == "zero_init"):
            return value
        if key == "pretrained" and isinstance(value, (str, Path)):
            return str(value)
        extra = " or a weights file" if key == "pretrained" else ""
        raise TunekitError(f"{key} must be true or false{extra}, got {value!r}")
    if key in ("img_size", "threads"):
        return None if value is None else _number(key, value, int)
    if key == "lr":
        return _number(key, value, float)
    if isinstance(default, int):
        return _number(key, value, int)
    if not isinstance(value, str):
        raise TunekitError(f"{key} must be a string, got {value!r}")
    return value


def _number(key: str, value: Any, kind: type) -> int | float:
    """``value`` as an int or float; strings are parsed, booleans and fractional ints refused."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise TunekitError(f"{key} must be a number, got {value!r}") from None
    if kind is int:
        if not number.is_integer():
            raise TunekitError(f"{key} must be an integer, got {value!r}")
        return int(number)
    return number
