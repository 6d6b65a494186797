"""Experiment trackers a search logs to (Weights & Biases, MLflow): their settings, checked before anything
starts. The logging itself is Ray's callbacks (``tuner.trackers``); this module needs neither Ray nor a tracker.

    trackers = {"wandb": {"project": "backbones", "group": "pets"},
                "mlflow": {"tracking_uri": "http://127.0.0.1:5000", "experiment": "pets"}}

A space file sets ``trackers``; ``tunekit search --wandb PROJECT --mlflow URI`` adds to it (the option wins).
"""

from __future__ import annotations

import importlib.util
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .errors import TunekitError, did_you_mean


@dataclass(frozen=True)
class Tracker:
    name: str  # the key in ``trackers``
    title: str
    option: str  # the search option that turns it on, and the key it sets
    required: str
    keys: dict[str, tuple[str, ...] | None]  # key -> its allowed values (None: any text)

    @property
    def extra(self) -> str:
        return f"pip install 'tunekit[{self.name}]'"


TRACKERS = {t.name: t for t in (
    Tracker("wandb", "Weights & Biases", "--wandb", "project",
            {"project": None, "group": None, "entity": None, "mode": ("online", "offline")}),
    Tracker("mlflow", "MLflow", "--mlflow", "tracking_uri", {"tracking_uri": None, "experiment": None}),
)}


def check_trackers(value: Any, where: str) -> dict[str, dict[str, str]]:
    """A space's ``trackers`` setting, validated: {tracker: {key: text}}, its required key given."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TunekitError(f"{where}: trackers must be a dict such as {{'wandb': {{'project': 'backbones'}}}}, "
                           f"got {value!r}")
    out = {}
    for name, settings in value.items():
        if name not in TRACKERS:
            raise TunekitError(f"{where}: unknown tracker {name!r}{did_you_mean(str(name), TRACKERS)}; "
                               f"trackers are {', '.join(TRACKERS)}")
        tracker = TRACKERS[name]
        if not isinstance(settings, dict):
            raise TunekitError(f"{where}: trackers[{name!r}] must be a dict such as {{{tracker.required!r}: ...}}, "
                               f"got {settings!r}")
        for key, text in settings.items():
            if key not in tracker.keys:
                raise TunekitError(f"{where}: unknown {name} key {key!r}{did_you_mean(str(key), tracker.keys)}; "
                                   f"{name} takes {', '.join(tracker.keys)}")
            allowed = tracker.keys[key]
            if not isinstance(text, str) or not text or (allowed and text not in allowed):
                expected = " or ".join(repr(a) for a in allowed) if allowed else "a non-empty text"
                raise TunekitError(f"{where}: trackers[{name!r}][{key!r}] must be {expected}, got {text!r}")
        if tracker.required not in settings:
            raise TunekitError(f"{where}: trackers[{name!r}] needs {tracker.required!r} "
                               f"(or give it with {tracker.option})")
        out[name] = dict(settings)
    return out


def with_options(trackers: dict[str, dict[str, str]], **options: str | None) -> dict[str, dict[str, str]]:
    """``trackers`` with the search's tracker options (``wandb="PROJECT"``, ``mlflow="URI"``) applied."""
    out = {name: dict(settings) for name, settings in trackers.items()}
    for name, value in options.items():
        if value is None:
            continue
        tracker = TRACKERS[name]
        if not isinstance(value, str) or not value:
            raise TunekitError(f"{tracker.option} takes a {tracker.required}, got {value!r}")
        out.setdefault(name, {})[tracker.required] = value
    return out


def check_ready(trackers: dict[str, dict[str, str]], timeout_s: float = 5.0) -> None:
    """Before Ray starts: each tracker's package is installed (else: the extra to install), and an
    MLflow server given by an http(s) URI answers (a typo or a server not started yet fails here, not
    in the middle of a search)."""
    for name in trackers:
        if importlib.util.find_spec(name) is None:
            tracker = TRACKERS[name]
            raise TunekitError(f"{tracker.option}: logging to {tracker.title} needs the {name} package, which is "
                               f"not installed: {tracker.extra}")
    uri = trackers.get("mlflow", {}).get("tracking_uri", "")
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TunekitError(f"--mlflow {uri}: no MLflow server answers there ({reason}); start it "
                               f"(mlflow server --host ... --port ...) or fix the URI") from None


def wandb_mode(settings: dict[str, str]) -> str:
    """online or offline: the space's setting, else W&B's own WANDB_MODE ('disabled' counts as offline)."""
    mode = settings.get("mode") or os.environ.get("WANDB_MODE", "online")
    return "online" if mode in ("online", "run") else "offline"



def describe(trackers: dict[str, dict[str, str]], search: str) -> str:
    """One line for the plan: where the trials log besides the run folder."""
    parts = []
    if "wandb" in trackers:
        w = trackers["wandb"]
        parts.append(f"W&B project {w['project']!r} (group {w.get('group', search)!r}, {wandb_mode(w)})")
    if "mlflow" in trackers:
        m = trackers["mlflow"]
        parts.append(f"MLflow {m['tracking_uri']} (experiment {m.get('experiment', search)!r}, a run per trial)")
    return "; ".join(parts)
