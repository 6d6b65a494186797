"""Search-space files: plain Python assignments, read with runpy, validated into a SearchSpec.

A space file (see ``search_spaces/``) sets ``space``, a dict over the trial config keys whose
values are constants or Ray Tune sampling primitives, plus experiment settings::

    from ray import tune
    data = "shapes"
    epochs = 4
    num_samples = 16
    searcher = "random"
    space = {"model": tune.choice(["test_resnet", "test_vit"]), "lr": tune.loguniform(1e-4, 3e-2),
             "pretrained": False}

Names starting with ``_`` or written in UPPER_CASE are the file's own helpers (``MODELS = [...]``).
Everything is checked here, before Ray starts: unknown names and keys (with a close match),
bad values (quoted), unknown timm models, grid-only primitives under the optuna searcher, a
space with no trials, and Python errors in the file (with file and line). The file is
Python and runs as you: only load space files you trust.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import SEARCH_KEYS, SEARCH_METRICS, TrialConfig, reported_epochs
from .data.spec import DataSpec
from .errors import TunekitError, did_you_mean, one_of
from .space_file import RUN_NAME, import_modules, run_space
from .tracking import check_trackers

SEARCHERS = ("grid", "random", "optuna")
IMPORTS_KEY = "_imports"  # a trial's config: the space's ``imports``, imported by the trial before it builds
DEFAULT_ASHA = {"grace_period": 1, "reduction_factor": 3}


@dataclass
class SearchSpec:
    """A validated search: the space (config key -> constant or Tune domain) and its settings."""

    path: Path | None
    space: dict[str, Any]
    data: str = "shapes"
    metric: str = "error_rate"
    mode: str = "min"
    epochs: int | None = None
    num_samples: int = 1
    searcher: str = "grid"
    asha: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_ASHA))
    gpus_per_trial: float | str = 0.0  # or "auto": sized per model by a memory probe
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    name: str = "search"
    search_seed: int = 0
    max_failures: int = 1
    keep_checkpoints: bool = False
    keep_best: int = 3  # trials whose final weights are kept (model.safetensors) for `tunekit export`
    prescreen: dict[str, Any] | None = None  # {"keep": N, "method": ...}: rank the model choices, search the top N
    imports: list[str] = field(default_factory=list)  # modules every trial imports first (a user's own models)
    trackers: dict[str, dict[str, str]] = field(default_factory=dict)  # tracking.TRACKERS: where trials log too

    def param_space(self) -> dict[str, Any]:
        """The Ray param_space: the space plus the fixed settings every trial needs."""
        space = {"data": self.data, **self.space}
        if self.imports:
            space[IMPORTS_KEY] = list(self.imports)
        if self.epochs is not None:
            space["epochs"] = self.epochs
        return space

    def values_of(self, key: str) -> list[Any] | None:
        """Every value ``key`` can take (constants, grid and choice values), None if continuous."""
        value = self.param_space().get(key, getattr(TrialConfig, key, None))
        return _finite_values(value)

    def largest(self, key: str) -> float | None:
        """The largest value ``key`` can take: of its values, or the top of its range (randint's upper end is
        exclusive); None if the space does not say."""
        values = self.values_of(key)
        if values is not None:
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            return max(numbers) if numbers else None
        from ray.tune.search.sample import Integer

        domain = self.param_space().get(key)
        upper = getattr(domain, "upper", None)
        if upper is None:
            return None
        return upper - 1 if isinstance(domain, Integer) else upper

    def total_epochs(self) -> int:
        """ASHA's max_t: the largest epoch count a trial can report."""
        epochs = self.values_of("epochs") or [TrialConfig.epochs]
        freeze = self.values_of("freeze_epochs") or [TrialConfig.freeze_epochs]
        pretrained = self.values_of("pretrained") or [TrialConfig.pretrained]
        return max(reported_epochs(e, f, p) for e in epochs for f in freeze for p in pretrained)

    def with_models(self, kept: list[str]) -> SearchSpec:
        """This spec with its model choices cut to ``kept`` (in the space's order, the domain kind kept)."""
        from ray import tune
        from ray.tune.search.sample import Categorical

        value = self.space.get("model")
        if _is_grid(value):
            value = tune.grid_search([m for m in value["grid_search"] if m in kept])
        elif isinstance(value, Categorical):
            value = tune.choice([m for m in value.categories if m in kept])
        return dataclasses.replace(self, space={**self.space, "model": value})

    def trial_count(self) -> int:
        grid = 1
        for value in self.space.values():
            if _is_grid(value):
                grid *= len(value["grid_search"])
        return grid * self.num_samples

    def fingerprint(self) -> str:
        """A hash of what defines the trials (to refuse resuming a run made from another space)."""
        defining = {"space": _describe(self.param_space()), "searcher": self.searcher,
                    "num_samples": self.num_samples, "metric": self.metric, "asha": self.asha}
        if self.prescreen:  # (absent otherwise: searches from before the setting keep their fingerprint)
            defining["prescreen"] = self.prescreen
        text = json.dumps(defining, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """A JSON-able view of the resolved spec (written into the run folder)."""
        out = {k: getattr(self, k) for k in SETTINGS if k != "space"}
        out["space"] = _describe(self.space)
        out["path"] = str(self.path) if self.path else None
        out["fingerprint"] = self.fingerprint()
        return out


def _settings() -> dict[str, Any]:
    """Settings a space file may assign, with their defaults: SearchSpec's fields (``space`` is
    required; ``name`` defaults to the file's name)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(SearchSpec):
        if f.name == "path":
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = None if f.name in ("space", "name") or default is dataclasses.MISSING else default
    return out


SETTINGS: dict[str, Any] = _settings()


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Run the space file, apply ``overrides`` (settings or config keys, as ``--set`` gives them),
    validate. A bad value is blamed on where it came from: the file, or the ``--set``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TunekitError(f"search-space file {str(path)!r} does not exist{_space_hint(path)}")
    values = run_space(path)
    values.setdefault("name", path.stem)
    overrides = overrides or {}
    for key in overrides:
        if key not in SETTINGS and key not in SEARCH_KEYS:
            known = [*SETTINGS, *SEARCH_KEYS]
            raise TunekitError(f"--set {key}: unknown setting or config key{did_you_mean(key, known)}")
    try:
        return build_spec(_override(values, overrides), path)
    except TunekitError:
        if not overrides:
            raise
        build_spec(values, path)  # a bad file is the file's fault
        for key, value in overrides.items():  # the file is fine: one of the --set values is not
            try:
                build_spec(_override(values, {key: value}), path)
            except TunekitError as e:
                text = str(e).replace(f"{path}: space[{key!r}]: ", "", 1).replace(f"{path}: ", "", 1)
                raise TunekitError(f"--set {key}={value}: {text}") from None
        raise


def _override(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The file's values with ``overrides`` applied: settings replaced, config keys fixed in the space."""
    out = dict(values)
    for key, value in overrides.items():
        if key in SETTINGS:
            out[key] = value
        elif isinstance(out.get("space", {}), dict):
            out["space"] = {**out.get("space", {}), key: value}
    return out


def _space_hint(path: Path) -> str:
    """`` (did you mean 'search_spaces/demo.py'?)`` for ``demo``, ``demo.py`` or ``search_spaces/demo``."""
    stem = path.stem if path.suffix == ".py" else path.name
    for candidate in (Path(f"{path}.py"), Path("search_spaces") / f"{stem}.py", path.parent / f"{stem}.py"):
        if candidate != path and candidate.is_file():
            return f" (did you mean {str(candidate)!r}?)"
    shipped = sorted(p.stem for p in Path("search_spaces").glob("*.py"))
    return f"; the shipped spaces are search_spaces/{{{','.join(shipped)}}}.py" if shipped else ""


def build_spec(values: dict[str, Any], path: Path | None = None) -> SearchSpec:
    """Validate raw settings (as a space file assigns them) into a SearchSpec."""
    where = f"{path}" if path else "search space"
    for key in values:
        if key not in SETTINGS:
            raise TunekitError(f"{where}: unknown setting {key!r}{did_you_mean(key, SETTINGS)}")
    if "space" not in values or values["space"] is None:
        raise TunekitError(f"{where}: no 'space' defined (a dict over {', '.join(SEARCH_KEYS)})")
    settings = {k: copy.deepcopy(v) for k, v in SETTINGS.items() if k != "space"}
    settings.update({k: v for k, v in values.items() if k != "space"})
    space = values["space"]
    if not isinstance(space, dict):
        raise TunekitError(f"{where}: 'space' must be a dict, got {type(space).__name__}")
    for key in space:
        if key not in SEARCH_KEYS:
            hint = " (set 'data' and 'epochs' as settings)" if key in ("data",) else ""
            raise TunekitError(f"{where}: unknown key {key!r} in space{did_you_mean(key, SEARCH_KEYS)}{hint}")
    spec = SearchSpec(path=path, space=dict(space), **_check_settings(settings, where))
    import_modules(spec.imports, path.parent if path else None, where)
    _check_space(spec, where)
    if spec.prescreen:
        if len(spec.values_of("model") or []) < 2:
            raise TunekitError(f"{where}: prescreen ranks the space's model choices: give 'model' a tune.grid_search "
                               f"or tune.choice of several models")
        if spec.values_of("pretrained") == [False]:
            raise TunekitError(f"{where}: prescreen ranks pretrained features, and this space trains from scratch "
                               f"(pretrained=False): drop prescreen, or use pretrained weights")
    return spec


def _check_settings(s: dict[str, Any], where: str) -> dict[str, Any]:
    if s["searcher"] not in SEARCHERS:
        raise one_of(f"{where}: searcher", s["searcher"], SEARCHERS)
    if s["mode"] not in ("min", "max"):
        raise one_of(f"{where}: mode", s["mode"], ("min", "max"))
    if s["metric"] not in SEARCH_METRICS:
        raise one_of(f"{where}: metric", s["metric"], SEARCH_METRICS)
    for key, low in (("num_samples", 1), ("search_seed", 0), ("max_failures", 0), ("keep_best", 0)):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < low:
            raise TunekitError(f"{where}: {key} must be an integer >= {low}, got {s[key]!r}")
    if s["epochs"] is not None and (not isinstance(s["epochs"], int) or s["epochs"] < 1):
        raise TunekitError(f"{where}: epochs must be a positive integer, got {s['epochs']!r}")
    if s["max_concurrent"] is not None and (not isinstance(s["max_concurrent"], int) or s["max_concurrent"] < 1):
        raise TunekitError(f"{where}: max_concurrent must be a positive integer or None, got {s['max_concurrent']!r}")
    gpus = s["gpus_per_trial"]
    if gpus != "auto" and (not _number(gpus) or gpus < 0):
        raise TunekitError(f"{where}: gpus_per_trial must be a fraction in [0, 1] or 'auto', got {gpus!r}")
    if gpus != "auto" and gpus > 1:
        raise TunekitError(f"{where}: gpus_per_trial={gpus!r}: a trial trains on one GPU (no data-parallel "
                           f"training), so the other GPU(s) would idle; use 1, or a fraction to pack trials")
    if not _number(s["cpus_per_trial"]) or s["cpus_per_trial"] <= 0:
        raise TunekitError(f"{where}: cpus_per_trial must be a positive number, got {s['cpus_per_trial']!r}")
    asha = s["asha"]
    if asha is not None:
        if not isinstance(asha, dict):
            raise TunekitError(f"{where}: asha must be a dict(grace_period=..., reduction_factor=...) or None")
        for key in asha:
            if key not in DEFAULT_ASHA:
                hint = did_you_mean(key, DEFAULT_ASHA)
                raise TunekitError(f"{where}: unknown asha key {key!r}{hint}")
        asha = {**DEFAULT_ASHA, **asha}
        if not (isinstance(asha["grace_period"], int) and asha["grace_period"] >= 1):
            raise TunekitError(f"{where}: asha grace_period must be an integer >= 1, got {asha['grace_period']!r}")
        if not (_number(asha["reduction_factor"]) and asha["reduction_factor"] >= 2):
            raise TunekitError(f"{where}: asha reduction_factor must be >= 2, got {asha['reduction_factor']!r}")
    s["asha"] = asha
    s["prescreen"] = _check_prescreen(s["prescreen"], where)
    imports = s["imports"]
    if not isinstance(imports, (list, tuple)) or not all(
            isinstance(m, str) and all(part.isidentifier() for part in m.split(".")) for m in imports):
        raise TunekitError(f"{where}: imports must be a list of module names such as ['my_models'], got {imports!r}")
    s["imports"] = list(imports)
    s["trackers"] = check_trackers(s["trackers"], where)
    try:
        DataSpec.parse(s["data"])
    except TunekitError as e:
        raise TunekitError(f"{where}: {e}") from None
    if not isinstance(s["name"], str) or not s["name"] or "/" in s["name"]:
        raise TunekitError(f"{where}: name must be a folder name, got {s['name']!r}")
    s["gpus_per_trial"] = gpus if gpus == "auto" else float(gpus)
    s["cpus_per_trial"] = float(s["cpus_per_trial"])
    return s


PRESCREEN_KEYS = {"keep": 1, "max_images": 2, "img_size": 16, "method": None}  # key -> smallest value (None: text)


def _check_prescreen(pre: Any, where: str) -> dict[str, Any] | None:
    from .prior import METHODS  # (tunekit.prior needs neither torch nor Ray)

    if pre is None:
        return None
    if not isinstance(pre, dict) or "keep" not in pre:
        raise TunekitError(f"{where}: prescreen must be a dict such as {{'keep': 12}} (and optionally 'method', "
                           f"'max_images', 'img_size'), or None; got {pre!r}")
    for key, value in pre.items():
        if key not in PRESCREEN_KEYS:
            raise TunekitError(f"{where}: unknown prescreen key {key!r}{did_you_mean(key, PRESCREEN_KEYS)}")
        if key == "method":
            if value not in METHODS:
                raise TunekitError(f"{where}: prescreen method must be one of {', '.join(map(repr, METHODS))}, "
                                   f"got {value!r}")
        elif not isinstance(value, int) or isinstance(value, bool) or value < PRESCREEN_KEYS[key]:
            raise TunekitError(f"{where}: prescreen {key} must be an integer >= {PRESCREEN_KEYS[key]}, got {value!r}")
    return dict(pre)


def _check_space(spec: SearchSpec, where: str) -> None:
    from ray.tune.search.sample import Categorical, Domain, Float, Function, Integer

    for key, value in spec.param_space().items():
        if key in ("data", IMPORTS_KEY):
            continue
        if _is_grid(value):
            if spec.searcher == "optuna":
                raise TunekitError(f"{where}: tune.grid_search in {key!r} cannot be used with searcher 'optuna' "
                                   f"(TPE samples); use tune.choice({value['grid_search']!r})")
            if not value["grid_search"]:
                raise TunekitError(f"{where}: tune.grid_search for {key!r} is empty: the space has no trials")
            for v in value["grid_search"]:
                _check_value(key, v, where, spec.imports)
        elif isinstance(value, Categorical):
            if not value.categories:
                raise TunekitError(f"{where}: tune.choice for {key!r} is empty")
            for v in value.categories:
                _check_value(key, v, where, spec.imports)
        elif isinstance(value, Function):
            if spec.searcher == "optuna":
                raise TunekitError(f"{where}: tune.sample_from in {key!r} cannot be used with searcher 'optuna'")
        elif isinstance(value, (Float, Integer)):
            for bound in (value.lower, value.upper):
                _check_value(key, int(bound) if isinstance(value, Integer) else float(bound), where)
        elif isinstance(value, Domain):
            pass
        elif isinstance(value, dict):
            raise TunekitError(f"{where}: space[{key!r}] is a dict; use tune.grid_search([...]) or tune.choice([...])")
        else:
            _check_value(key, value, where, spec.imports)


def _check_value(key: str, value: Any, where: str, imports: list[str] = ()) -> None:
    """Check one value a key can take, through the same TrialConfig rules a trial applies."""
    try:
        if key == "model":
            if not isinstance(value, str):
                raise TunekitError(f"model must be a timm model name, got {value!r}")
            from .catalog import check_model_name, registered_by  # timm: loaded only when a space names models

            check_model_name(value)
            module = registered_by(value)
            if module is not None and not any(module == m or module.startswith(m + ".") for m in imports):
                where_from = "the space file itself" if module == RUN_NAME else f"module {module!r}"
                raise TunekitError(f"model {value!r} is registered in {where_from}, which the trials' workers do not "
                                   f"run: put it in a module beside the space file and name that module in "
                                   f"imports = [...]")
        else:
            TrialConfig.from_dict({key: value})
    except TunekitError as e:
        raise TunekitError(f"{where}: space[{key!r}]: {e}") from None


def _is_grid(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def _finite_values(value: Any) -> list[Any] | None:
    from ray.tune.search.sample import Categorical, Domain

    if _is_grid(value):
        return list(value["grid_search"])
    if isinstance(value, Categorical):
        return list(value.categories)
    return None if isinstance(value, Domain) else [value]


def _describe(space: dict[str, Any]) -> dict[str, Any]:
    """Tune domains as readable text (for spec.json and the fingerprint)."""
    from ray.tune.search.sample import Categorical, Domain, Float, Integer

    out = {}
    for key, value in space.items():
        if _is_grid(value):
            out[key] = {"grid_search": list(value["grid_search"])}
        elif isinstance(value, Categorical):
            out[key] = {"choice": list(value.categories)}
        elif isinstance(value, (Float, Integer)):
            sampler = type(value.get_sampler()).__name__
            out[key] = {type(value).__name__.lower(): [value.lower, value.upper], "sampler": sampler}
        elif isinstance(value, Domain):
            out[key] = {"domain": type(value).__name__}
        else:
            out[key] = value
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``: the value as a Python literal when it is one, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TunekitError(f"--set expects key=value, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value
