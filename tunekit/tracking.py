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


@dataclass(frozen=True)
class WandbSettings:
    """W&B as a search logs to it: every default filled in (``resolve``)."""

    project: str
    group: str  # the space's group, else one per search instance: a --restart does not mix with the old runs
    mode: str  # online | offline
    dir: str  # where W&B writes its files: WANDB_DIR where set, else the run folder
    entity: str | None = None

    def describe(self) -> str:
        return f"W&B project {self.project!r} (group {self.group!r}, {self.mode})"


@dataclass(frozen=True)
class MlflowSettings:
    """MLflow as a search logs to it: every default filled in (``resolve``)."""

    tracking_uri: str
    experiment: str  # the space's, else the search's name

    def describe(self) -> str:
        return f"MLflow {self.tracking_uri} (experiment {self.experiment!r}, a run per trial)"


Resolved = dict[str, Any]  # tracker name -> WandbSettings | MlflowSettings


def resolve(trackers: dict[str, dict[str, str]], search: str, run_dir: str,
            instance: str) -> tuple[Resolved, list[str]]:
    """The trackers as the search logs to them, and what it should say of them: W&B's own environment
    (WANDB_MODE, WANDB_DIR) respected; ``WANDB_MODE=disabled`` turns W&B off, with a note; the defaults of
    project group and experiment set here, once. ``instance``: this search's identity (a --restart makes a new
    one), which names the default W&B group and finds the MLflow runs of a resumed search."""
    out: Resolved = {}
    notes: list[str] = []
    if "wandb" in trackers:
        w = trackers["wandb"]
        env = os.environ.get("WANDB_MODE", "").lower()
        if not w.get("mode") and env in ("disabled", "dryrun_disabled"):
            notes.append("note     WANDB_MODE=disabled: the search does not log to W&B (unset it to log)")
        else:
            mode = w.get("mode") or ("offline" if env in ("offline", "dryrun") else "online")
            group = w.get("group") or (f"{search}-{instance}" if instance else search)  # (""; before instances)
            out["wandb"] = WandbSettings(w["project"], group, mode, os.environ.get("WANDB_DIR") or str(run_dir),
                                         w.get("entity"))
    if "mlflow" in trackers:
        m = trackers["mlflow"]
        out["mlflow"] = MlflowSettings(m["tracking_uri"], m.get("experiment") or search)
    return out, notes


def check_ready(resolved: Resolved, timeout_s: float = 5.0) -> None:
    """Before a search starts (not for a dry run, nor for reporting a finished search): each tracker's package
    is installed (else: the extra to install), MLflow takes the URI and a server given by http(s) answers, and
    W&B online has a login. A typo, a server not started yet, a URI MLflow refuses fail here in one line, not in
    the middle of a search."""
    for name in resolved:
        if importlib.util.find_spec(name) is None:
            tracker = TRACKERS[name]
            raise TunekitError(f"{tracker.option}: logging to {tracker.title} needs the {name} package, which is "
                               f"not installed: {tracker.extra}")
    if "mlflow" in resolved:
        problem = mlflow_problem(resolved["mlflow"].tracking_uri, timeout_s)
        if problem:
            raise TunekitError(problem)
    if "wandb" in resolved and resolved["wandb"].mode == "online" and not _wandb_key():
        raise TunekitError("--wandb: W&B needs a login to log online: run 'wandb login' or set WANDB_API_KEY; or log "
                           "offline (WANDB_MODE=offline, or trackers={'wandb': {'mode': 'offline'}}) and upload "
                           "later with 'wandb sync'")


def mlflow_problem(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why MLflow cannot log to ``uri`` now (one line), or None: an http(s) server that does not answer, or a
    URI MLflow itself refuses (asked as a search would: listing the experiments there)."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            return (f"--mlflow {uri}: no MLflow server answers there ({reason}); start it "
                    f"(mlflow server --host ... --port ...) or fix the URI")
        return None
    if importlib.util.find_spec("mlflow") is None:
        return None  # said by check_ready
    import warnings

    from mlflow import MlflowClient

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - whatever MLflow says, in one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        first = first.split(". ")[0].rstrip(".")  # its first sentence: MLflow's messages go on with links
        return (f"--mlflow {uri}: MLflow does not take this tracking URI ({first}); give a server's "
                f"http(s)://HOST:PORT or a database URI (sqlite:///PATH/mlflow.db)")
    return None


def _wandb_key() -> bool:
    """Whether W&B has an API key here (WANDB_API_KEY, or what 'wandb login' stored), as W&B looks for it."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import wandb

        return bool(wandb.login(prompt=False))  # W&B's own check of a stored key, asking nothing
    except Exception:  # noqa: BLE001 - an old or a broken W&B: as if no login
        return False


def reachability(resolved: Resolved) -> list[str]:
    """For a dry run: whether each tracker could be logged to now, without failing (it is checked for real when
    the search starts)."""
    out = []
    if "mlflow" in resolved and not resolved["mlflow"].tracking_uri.startswith(("http://", "https://")):
        # opening a database or a folder store writes to it: a dry run leaves that to the search
        out.append(f"  note     MLflow: {resolved['mlflow'].tracking_uri} is opened, and checked, when the search "
                   f"starts")
    elif "mlflow" in resolved:
        problem = mlflow_problem(resolved["mlflow"].tracking_uri, timeout_s=2.0)
        out.append(f"  note     MLflow: {problem} (a dry run goes on; a search would stop here)" if problem
                   else f"  note     MLflow answers at {resolved['mlflow'].tracking_uri}")
    if "wandb" in resolved and resolved["wandb"].mode == "online" and not _wandb_key():
        out.append("  note     W&B: no login here for online logging (wandb login, or WANDB_MODE=offline)")
    return out


def describe(resolved: Resolved) -> str:
    """One line for the plan: where the trials log besides the run folder."""
    return "; ".join(settings.describe() for settings in resolved.values()) or "none"
