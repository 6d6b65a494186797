"""The first stage of a search: its options and its space checked, one Search made; nothing started.

    state = validate("search_spaces/demo.py", {"storage_path": "~/ray_results", "overrides": {"epochs": 3}})

Each rule a user can break is checked here, once, for the CLI and the Python API alike: unknown
options, --resume with --restart, an option given twice (``--gpus-per-trial 0.5 --set
gpus_per_trial=0.25``), the space file itself (``spec.load_spec``), a Ray the caller started without
the space's ``imports``. (Trackers are checked where they are used: ``plan``, before a search starts.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config import PROGRESS_DISPLAYS
from ..data.spec import DataSpec
from ..errors import TunekitError, did_you_mean
from ..spec import SearchSpec, build_spec, load_spec
from ..tracking import TRACKERS, with_options
from .state import Search, SearchOptions

# Settings of the space a search's options may give (as the CLI's --gpus-per-trial, ...), beside --set.
SETTING_OPTIONS = ("gpus_per_trial", "cpus_per_trial", "num_samples", "name")


def validate(space: str | Path | SearchSpec | dict[str, Any], options: dict[str, Any]) -> Search:
    settings = {k: options.pop(k) for k in SETTING_OPTIONS if k in options}
    tracker_options = {k: options.pop(k) for k in TRACKERS if k in options}  # wandb="PROJECT", mlflow="URI"
    overrides = dict(options.pop("overrides", None) or {})
    known = [f.name for f in dataclasses.fields(SearchOptions)]
    for key in options:
        if key not in known:
            raise TunekitError(f"unknown search option {key!r}{did_you_mean(key, known + list(SETTING_OPTIONS))}")
    opts = SearchOptions(**options)
    if opts.progress not in PROGRESS_DISPLAYS:
        raise TunekitError(f"progress must be one of {', '.join(PROGRESS_DISPLAYS)}, got {opts.progress!r}")
    if opts.resume and opts.restart:
        raise TunekitError("--resume and --restart contradict each other: continue the search, or start it over")
    spec = load(space, merge_settings(settings, overrides))
    if opts.strict:
        spec = dataclasses.replace(spec, data=str(DataSpec.parse(spec.data).with_options(strict=True)))
    if any(v is not None for v in tracker_options.values()):
        spec = dataclasses.replace(spec, trackers=with_options(spec.trackers, **tracker_options))
    from .session import RaySession

    session = RaySession(opts.verbose, opts.echo)
    session.check_shipped(spec)
    return Search(spec=spec, options=opts, storage=Path(opts.storage_path).expanduser().resolve(), session=session)


def merge_settings(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The --set overrides with the settings given as options; one given both ways, differently, is an error."""
    out = dict(overrides)
    for key, value in settings.items():
        if value is None:
            continue
        if key in out and out[key] != value:
            flag = "--" + key.replace("_", "-")
            raise TunekitError(f"{flag} {value} and --set {key}={out[key]} contradict each other; give one")
        out[key] = value
    return out


def load(space: str | Path | SearchSpec | dict[str, Any], overrides: dict[str, Any]) -> SearchSpec:
    if isinstance(space, SearchSpec):
        if overrides:
            raise TunekitError("overrides apply to a space file or a dict of settings, not to a SearchSpec")
        return space
    if isinstance(space, dict):
        return build_spec({"name": "search", **space, **overrides})
    return load_spec(space, overrides)
