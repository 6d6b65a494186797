"""Tuner assembly (``tunekit.search``): a SearchSpec -> Ray Tune run (searcher, ASHA, resources, storage, resume).

    result = search("search_spaces/demo.py", storage_path="~/ray_results")
    result.trials.sort_values("error_rate").head()

Ray is started locally (dashboard off) and stopped afterwards, unless ``address`` joins a
cluster started with ``ray start``. Before any trial, every node prepares the data once
(download, decode-once cache) and the pretrained weights. Trials report every epoch; ASHA
stops hopeless ones on the epoch count; each trial checkpoints every epoch (the latest kept,
removed when the trial ends) and is retried from it on failure. Re-running with the same name
(or ``resume=True``) continues an interrupted search: finished trials are kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback
from ray.tune.search.basic_variant import BasicVariantGenerator

from .asha import PromotingASHA
from .config import SEARCH_KEYS, TrialConfig
from .data.spec import DataSpec
from .errors import TunekitError
from .gpu_share import MAX_PER_GPU, MemoryKey, Resources, Share, memory_keys, probe_shares
from .spec import SearchSpec, build_spec, load_spec
from .train import METRICS
from .trainable import CHECKPOINTS_KEY

SPEC_FILE = "tunekit_spec.json"
SPACE_COPY = "search_space.py"
DEFAULT_STORAGE = "~/ray_results"


@dataclass
class Plan:
    """What a search will do, computed without starting anything (``--dry-run`` prints it)."""

    name: str
    path: Path
    trials: int
    max_epochs: int
    cpus_per_trial: float
    gpus_per_trial: float
    total_cpus: float
    total_gpus: float
    concurrency: int
    searcher: str
    asha: dict[str, int] | None
    resume: bool

    gpu_auto: bool = False

    @property
    def gpu_text(self) -> str:
        if self.gpu_auto:
            return f"auto GPU share (the smallest 1/{round(1 / self.gpus_per_trial)})"
        return f"{self.gpus_per_trial:g} GPU"

    @property
    def epoch_budget(self) -> int:
        return self.trials * self.max_epochs

    def lines(self, spec: SearchSpec) -> list[str]:
        asha = (f"ASHA on epochs (grace {self.asha['grace_period']}, reduction {self.asha['reduction_factor']}, "
                f"max {self.max_epochs})" if self.asha else "no early stopping")
        return [
            f"search {self.name!r} -> {self.path}" + (" (resuming)" if self.resume else ""),
            f"  space    {spec.path or '-'}: {self.trials} trial(s), searcher {self.searcher}, {asha}",
            f"  data     {spec.data}",
            f"  metric   {spec.metric} ({spec.mode})",
            f"  per trial {self.cpus_per_trial:g} CPU, {self.gpu_text}; "
            f"up to {self.concurrency} at once on {self.total_cpus:g} CPU / {self.total_gpus:g} GPU",
            f"  budget   at most {self.epoch_budget} epochs ({self.trials} x {self.max_epochs})",
        ]


@dataclass
class SearchResult:
    path: Path
    trials: pd.DataFrame  # one row per trial: config, final and best metrics, epochs, status
    metric: str
    mode: str
    trial_start_s: list[float] = dataclasses.field(default_factory=list)  # a free slot -> first step, seconds

    @property
    def unfinished(self) -> int:
        """Trials that did not end (a stopped or killed search); ``--resume`` continues them."""
        return int(self.trials["status"].str.startswith(("unfinished", "not started")).sum())

    @property
    def interrupted(self) -> bool:
        return self.unfinished > 0

    def best(self, n: int = 5) -> pd.DataFrame:
        ok = self.trials[self.trials["status"] != "errored"]
        return ok.sort_values(f"best_{self.metric}", ascending=self.mode == "min").head(n)


def search(
    space: str | Path | SearchSpec, *, num_gpus: float | None = None, gpus_per_trial: float | None = None,
    cpus_per_trial: float | None = None, num_samples: int | None = None, address: str | None = None,
    storage_path: str | Path = DEFAULT_STORAGE, name: str | None = None, resume: bool = False,
    dry_run: bool = False, overrides: dict[str, Any] | None = None, verbose: bool = False, strict: bool = False,
    echo: Callable[[str], None] = print,
) -> SearchResult | Plan:
    """Run (or, with ``dry_run``, plan) a search: a space file, a dict of its settings, or a SearchSpec.

    ``strict`` makes unreadable images an error instead of a warning (the data spec's ``strict=1``).
    """
    options = _cli_overrides(overrides, gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
                             num_samples=num_samples, name=name)
    if isinstance(space, SearchSpec):
        spec = space
    elif isinstance(space, dict):
        spec = build_spec({"name": "search", **space, **options})
    else:
        spec = load_spec(space, options)
    if strict:
        spec = dataclasses.replace(spec, data=str(DataSpec.parse(spec.data).with_options(strict=True)))
    storage = Path(storage_path).expanduser().resolve()
    run_dir = storage / spec.name
    restoring = _check_resume(spec, run_dir, resume)
    started = address is not None and not ray.is_initialized()  # joining a cluster: connect to count it
    total_cpus, total_gpus = _capacity(address, num_gpus, dry_run, verbose)
    notes = []
    auto = spec.gpus_per_trial == "auto"
    if auto:
        memory_keys(spec)  # the space gives finite choices to probe, or an error now
        if total_gpus <= 0 and not dry_run:
            raise TunekitError("gpus_per_trial='auto' sizes each trial's share of a GPU by probing its memory, and "
                               "no GPU is available: set gpus_per_trial=0 to run on CPUs")
    if dry_run and (auto or spec.gpus_per_trial > 0) and total_gpus <= 0:
        total_gpus = 1.0
        notes.append("  note     no GPU here: planned for 1 GPU (pass --num-gpus N to plan for N)")
    # before Ray starts, with auto's smallest share as a stand-in: a plan that cannot run fails now
    plan = _plan(spec, run_dir, total_cpus, total_gpus, restoring, 1 / MAX_PER_GPU if auto else None)
    if dry_run:
        try:
            _check_local_data(spec)
            shares = _auto_shares_here(spec, echo) if auto else None
        finally:
            if started:
                ray.shutdown()
        if auto:
            plan = _plan(spec, run_dir, total_cpus, total_gpus, restoring, _smallest(shares))
            notes += _share_lines(shares) if shares else [
                "  note     gpus_per_trial='auto': each model's share is probed on the GPU when the search starts"]
        for line in plan.lines(spec) + notes:
            echo(line)
        return plan
    if not auto:
        for line in plan.lines(spec):
            echo(line)
    local = address is None and not ray.is_initialized()
    if local:  # this machine is the only node: data and weights are ready before Ray starts
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            echo("warning: RAY_AUTH_MODE=disabled: the local Ray's ports listen on every interface, so anyone "
                 "who can reach this machine can run code in it; unset it, or firewall the machine")
        _prepare_local(spec, echo)
        # address="local": a new Ray of its own, even where `ray start` left a cluster running or
        # RAY_ADDRESS is set (without it ray.init joins those, and refuses num_cpus): --address joins
        ray.init(address="local", num_cpus=int(total_cpus), num_gpus=int(math.ceil(total_gpus)),
                 include_dashboard=False, log_to_driver=verbose, logging_level="INFO" if verbose else "WARNING",
                 configure_logging=True)
        started = True
    try:
        shares = None
        if auto:  # probed in a Ray task holding a whole GPU, whose process then exits (freeing its memory)
            from .gpu_share import probe_remote

            echo(f"probing the GPU memory of {len(memory_keys(spec))} model/batch/size combination(s)")
            shares, _ = ray.get(ray.remote(num_gpus=1, max_calls=1)(probe_remote).remote(memory_keys(spec)))
            plan = _plan(spec, run_dir, total_cpus, total_gpus, restoring, _smallest(shares))
            for line in plan.lines(spec) + _share_lines(shares):
                echo(line)
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoints = True if local else _prepare_nodes(spec, run_dir, echo)
        _save_spec(spec, run_dir)
        tuner, progress = _tuner(spec, storage, restoring, verbose, echo, plan, checkpoints, shares)
        t0 = time.perf_counter()
        try:
            tuner.fit()  # Ray stops gracefully on Ctrl-C and returns
        except KeyboardInterrupt:  # a second Ctrl-C
            finish(run_dir, spec, echo, storage)
            raise
        echo(f"search ended after {time.perf_counter() - t0:.0f}s")
        if progress.start_summary():
            echo(progress.start_summary())
        result = finish(run_dir, spec, echo, storage)
        result.trial_start_s = progress.start_seconds
        return result
    finally:
        if started:
            ray.shutdown()


def _capacity(address: str | None, num_gpus: float | None, dry_run: bool, verbose: bool) -> tuple[float, float]:
    """(CPUs, GPUs) the search may use: this machine's, or the cluster's at ``address`` (joined)."""
    if address is None:
        if num_gpus is not None and num_gpus > _local_gpus() and not dry_run:
            raise TunekitError(f"--num-gpus {num_gpus:g}: this machine has {_local_gpus()} GPU(s)")
        return float(os.cpu_count() or 1), float(num_gpus if num_gpus is not None else _local_gpus())
    _check_address(address)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=verbose, logging_level="INFO" if verbose else "WARNING")
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0.0)
    return resources.get("CPU", 0.0), gpus if num_gpus is None else min(gpus, float(num_gpus))


def _cli_overrides(overrides: dict[str, Any] | None, **options: Any) -> dict[str, Any]:
    out = dict(overrides or {})
    out.update({k: v for k, v in options.items() if v is not None})
    return out


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _check_address(address: str, timeout: float = 5.0) -> None:
    """Fail within seconds when a cluster address does not answer (instead of Ray's long retry)."""
    if address == "auto":
        return
    host, _, port = address.replace("ray://", "").rpartition(":")
    try:
        socket.create_connection((host or address, int(port or 6379)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise TunekitError(f"--address {address}: no Ray cluster answers there ({e}); start one with "
                           f"'ray start --head' or leave --address out for a local run") from None


def _check_resume(spec: SearchSpec, run_dir: Path, resume: bool) -> bool:
    """Whether ``run_dir`` holds a search to continue; refuse one made from another space."""
    exists = run_dir.is_dir() and tune.Tuner.can_restore(str(run_dir))
    if resume and not exists:
        raise TunekitError(f"--resume: there is no search named {spec.name!r} in {run_dir.parent}")
    if exists and (run_dir / SPEC_FILE).is_file():
        previous = json.loads((run_dir / SPEC_FILE).read_text()).get("fingerprint")
        if previous != spec.fingerprint():
            raise TunekitError(f"{run_dir} holds a search made from a different space; "
                               f"use another --name, or delete that folder to start over")
    return exists


def _plan(spec: SearchSpec, run_dir: Path, total_cpus: float, total_gpus: float, restoring: bool,
          auto_share: float | None = None) -> Plan:
    """The plan; under gpus_per_trial='auto', ``auto_share`` (the smallest share) stands for it."""
    gpus = auto_share if spec.gpus_per_trial == "auto" else spec.gpus_per_trial
    if gpus > 0 and total_gpus <= 0:
        raise TunekitError(f"gpus_per_trial={gpus:g} but no GPU is available: "
                           f"pass --num-gpus N, or --gpus-per-trial 0 to run on CPUs")
    if gpus > max(total_gpus, 0) and total_gpus > 0:
        raise TunekitError(f"gpus_per_trial={gpus:g} is more than the {total_gpus:g} GPU(s) available")
    if spec.cpus_per_trial > total_cpus:
        raise TunekitError(f"cpus_per_trial={spec.cpus_per_trial:g} is more than the {total_cpus:g} CPU(s) available")
    by_cpu = math.floor(total_cpus / spec.cpus_per_trial + 1e-9)
    by_gpu = math.floor(total_gpus / gpus + 1e-9) if gpus > 0 else by_cpu
    concurrency = max(1, min(by_cpu, by_gpu, spec.max_concurrent or by_cpu, spec.trial_count()))
    return Plan(spec.name, run_dir, spec.trial_count(), spec.total_epochs(), spec.cpus_per_trial,
                gpus, total_cpus, total_gpus, concurrency, spec.searcher, spec.asha, restoring,
                gpu_auto=spec.gpus_per_trial == "auto")


def _auto_shares_here(spec: SearchSpec, echo: Callable[[str], None]) -> dict[MemoryKey, Share] | None:
    """For a dry run: probe on this machine's GPU (None without one)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return probe_shares(memory_keys(spec), torch.device("cuda"), echo)[0]


def _smallest(shares: dict[MemoryKey, Share] | None) -> float:
    return min((s.gpus for s in shares.values()), default=1.0) if shares else 1.0


def _share_lines(shares: dict[MemoryKey, Share]) -> list[str]:
    return [f"  gpu share {key}: peak {share.peak_gib:.2f} GiB, room for {share.need_gib:.2f} GiB -> "
            f"{_fraction(share.gpus)} GPU" for key, share in shares.items()]


def _fraction(share: float) -> str:
    return "1" if share >= 1 else f"1/{round(1 / share)}"


def _save_spec(spec: SearchSpec, run_dir: Path) -> None:
    """The run folder reproduces the search on its own: a copy of the space file and the resolved spec."""
    if spec.path is not None and spec.path.resolve() != (run_dir / SPACE_COPY).resolve():
        shutil.copyfile(spec.path, run_dir / SPACE_COPY)
    (run_dir / SPEC_FILE).write_text(json.dumps(spec.describe(), indent=2, default=str))


# ---- data and weights, once per node -------------------------------------------------------------

def _check_local_data(spec: SearchSpec) -> None:
    """For a dry run: list and check the files of data on a local path (nothing downloaded or decoded)."""
    from .data import resolve_items

    data = DataSpec.parse(spec.data)
    if data.path is not None:
        resolve_items(data)


def _prepare_local(spec: SearchSpec, echo: Callable[[str], None]) -> None:
    jobs = _prepare_jobs(spec)
    echo(f"preparing: {spec.data}, {len(jobs['caches'])} resize/size combination(s), "
         f"{len(jobs['weights'])} pretrained model(s)")
    _, notes = _prepare_here(spec.data, jobs, None)
    for note in notes:
        echo(f"warning: {note}")


def _prepare_nodes(spec: SearchSpec, run_dir: Path, echo: Callable[[str], None]) -> bool:
    """On every node, before any trial: download and decode the data once, fetch pretrained weights,
    and check that the run folder is the same storage there. Returns whether checkpoints can be
    used: Ray (since 2.7) moves checkpoints between nodes only through shared storage."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    jobs = _prepare_jobs(spec)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    marker = run_dir / f".shared-{os.getpid()}-{time.time_ns()}"
    marker.write_text("")
    echo(f"preparing {len(nodes)} node(s): {spec.data}, {len(jobs['caches'])} resize/size combination(s), "
         f"{len(jobs['weights'])} pretrained model(s)")
    task = ray.remote(num_cpus=0)(_prepare_here)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            .remote(spec.data, jobs, str(marker)) for node in nodes]
    try:
        answers = ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(getattr(e, "cause", None), TunekitError) else None
        if cause is not None:
            raise cause from None
        raise
    finally:
        marker.unlink(missing_ok=True)
    for note in dict.fromkeys(note for _, notes in answers for note in notes):  # once, not once per node
        echo(f"warning: {note}")
    sees_marker = [seen for seen, _ in answers]
    if all(sees_marker):
        return True
    echo(f"warning: {run_dir.parent} is not shared storage for {sees_marker.count(False)} of {len(nodes)} "
         f"node(s): running without checkpoints, so a failed trial restarts from epoch 1 and an "
         f"interrupted search cannot continue its unfinished trials. Use a --storage-path on NFS "
         f"(or s3://, gs://) seen by every node to have both.")
    return False


def _prepare_jobs(spec: SearchSpec) -> dict[str, list]:
    from .train import resolve_img_size

    models = spec.values_of("model") or []
    resizes = spec.values_of("resize") or []
    sizes = spec.values_of("img_size")
    pretrained = spec.values_of("pretrained") or [True]
    caches = set()
    for model in models:
        for resize in resizes:
            for size in sizes or [None]:
                cfg = TrialConfig(data=spec.data, model=model, img_size=size, pretrained=False)
                caches.add((resize, resolve_img_size(cfg)))
    weights = sorted({m for m in models for p in pretrained if p is True})
    return {"caches": sorted(caches), "weights": weights}


def _prepare_here(data: str, jobs: dict[str, list], marker: str | None) -> tuple[bool, list[str]]:
    """Data caches and weights on this node. Returns whether ``marker`` is visible here, and the
    warnings raised (skipped images), which a Ray task's stderr would hide from the user."""
    import warnings

    from . import data as tkdata

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for model in jobs["weights"]:  # first: offline fails in a second, data can take minutes
            _fetch_weights(model)
        for resize, size in jobs["caches"]:
            tkdata.load(data, resize, size)
    ours = Path(__file__).parent
    notes = list(dict.fromkeys(str(w.message) for w in caught if Path(w.filename).is_relative_to(ours)))
    return marker is None or os.path.exists(marker), notes


def _fetch_weights(model: str) -> None:
    import timm

    from .model import cached_weights, require_reachable

    if cached_weights(model):
        return
    require_reachable(model)
    timm.create_model(model, pretrained=True, num_classes=0)


# ---- the Tuner -----------------------------------------------------------------------------------

def _tuner(spec: SearchSpec, storage: Path, restoring: bool, verbose: bool, echo: Callable[[str], None],
           plan: Plan, checkpoints: bool = True,
           shares: dict[MemoryKey, Share] | None = None) -> tuple[tune.Tuner, ProgressCallback]:
    from .trainable import run_trial

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # we add CSV + JSON, and our own TensorBoard
    if not verbose:
        # Ray warns when per-epoch checkpoints snapshot its state often: expected here.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        # Ray's newer console output prints its own boxes even at verbose=0; the classic one is quiet.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # After a Ctrl-C, Ray lists every never-started trial as a missing-results warning.
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
    threads = max(1, int(spec.cpus_per_trial))
    resources = (Resources(shares, spec.cpus_per_trial, spec.data) if shares is not None
                 else {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
    trainable = tune.with_resources(run_trial, resources)
    param_space = {**spec.param_space(), "threads": threads, CHECKPOINTS_KEY: checkpoints}
    progress = ProgressCallback(echo, spec.metric, spec.mode, plan.max_epochs, plan.trials, searched_keys(spec),
                                slots=plan.concurrency)
    callbacks = [CSVLoggerCallback(), JsonLoggerCallback(), TensorBoardCallback(), progress]
    if not spec.keep_checkpoints:
        callbacks.append(CheckpointCleanup(storage / spec.name))
    run_config = tune.RunConfig(
        name=spec.name, storage_path=str(storage), callbacks=callbacks, verbose=2 if verbose else 0,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        # each trial's working directory (tunekit_run.json) reaches the run folder from any node,
        # with every checkpoint and when the trial ends
        sync_config=tune.SyncConfig(sync_artifacts=True),
    )
    if restoring:
        tuner = tune.Tuner.restore(str(storage / spec.name), trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space)
        # Ray restores the first run's callbacks from its pickle (copies: progress lines would go to a
        # stale echo); it has no public way to pass new ones (ray-project/ray#41364).
        restored = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", lambda: None)()
        if restored is not None:
            restored.callbacks = callbacks
        return tuner, progress
    scheduler = None
    if spec.asha:
        scheduler = PromotingASHA(max_t=plan.max_epochs, grace_period=spec.asha["grace_period"],
                                  reduction_factor=spec.asha["reduction_factor"], total_trials=plan.trials)
    if spec.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=spec.search_seed))
        limit = spec.max_concurrent  # Ray wraps a Searcher in a ConcurrencyLimiter
    else:
        # A generator takes its own limit: Ray ignores max_concurrent_trials for one (with a warning
        # that a quiet search hides), and trials would run as many at once as resources allow.
        search_alg = BasicVariantGenerator(random_state=spec.search_seed, max_concurrent=spec.max_concurrent or 0)
        limit = None
    # reuse_actors: the next trial runs in a finished trial's worker (same resources), which has torch
    # and timm imported already: a new worker spent ~5s of every trial start here on a 2-core machine.
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler, search_alg=search_alg,
                                  num_samples=spec.num_samples, max_concurrent_trials=limit, reuse_actors=True)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config), progress


def finish(run_dir: Path, spec: SearchSpec, echo: Callable[[str], None], storage: Path) -> SearchResult:
    """Read the trials back, write the report into the run folder, print the ranked summary
    (and, for an interrupted search, how to continue it)."""
    from . import report

    if not spec.keep_checkpoints:  # Ray has saved its final state: finished trials are final
        for name, status in report.trial_states(run_dir).items():
            if status == "TERMINATED":
                remove_checkpoints(run_dir / name)
    result = SearchResult(run_dir, report.load_run(run_dir), spec.metric, spec.mode)
    try:
        built = report.build(result.trials)
        report.write(built, run_dir, tensorboard_dir=run_dir / "tunekit_report")
    except Exception as e:  # noqa: BLE001 - the search's results are safe on disk; the report is extra
        echo(f"warning: could not write the report ({type(e).__name__}: {e}); run 'tunekit report {run_dir}'")
    for line in summary(result):
        echo(line)
    if result.interrupted:
        echo(f"interrupted: {result.unfinished} trial(s) unfinished. Continue with:\n"
             f"  tunekit search {spec.path or 'SPACE.py'} "
             f"--storage-path {storage} --name {spec.name} --resume")
    return result


def summary(result: SearchResult, n: int = 5) -> list[str]:
    """A short ranked table of the best trials and where the results are."""
    df = result.trials
    counts = df["status"].map(lambda s: s.split(" (")[0]).value_counts().to_dict()
    lines = ["trials: " + ", ".join(f"{v} {k}" for k, v in counts.items())]
    best = result.best(n)
    if len(best):
        cols = [c for c in ("model", "pool", "head", "resize", "lr", "zero_init") if c in best]
        metric = f"best_{result.metric}"
        show = best[cols + [metric, "fit_time", "gpu_mem", "epochs_run"]].copy()
        show.insert(0, "rank", range(1, len(show) + 1))
        lines.append(f"best {min(n, len(show))} by {result.metric}:")
        lines += ["  " + line for line in show.to_string(index=False, float_format=lambda v: f"{v:.4g}").splitlines()]
    lines.append(f"results: {result.path} (report.md, report.html, results.csv, ranking.csv)")
    lines.append(f"curves:  tensorboard --logdir {result.path}")
    return lines


# ---- callbacks -----------------------------------------------------------------------------------

class TensorBoardCallback(LoggerCallback):
    """Per-epoch scalars under the metric names, and each trial's hyperparameters (hparams view)."""

    def __init__(self) -> None:
        self._writers: dict[str, Any] = {}

    def _writer(self, trial):
        from torch.utils.tensorboard import SummaryWriter

        if trial.trial_id not in self._writers:
            self._writers[trial.trial_id] = SummaryWriter(log_dir=trial.local_path, flush_secs=10)
        return self._writers[trial.trial_id]

    def log_trial_start(self, trial) -> None:
        self._writer(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        writer = self._writer(trial)
        step = int(result.get("epoch", iteration))
        for key in METRICS:
            value = result.get(key)
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, value, step)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = self._writer(trial)
        hp = {}
        for key in ("data", *SEARCH_KEYS):
            value = trial.config.get(key)
            if value is not None:
                hp[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
        last = trial.last_result or {}
        final = {f"final/{k}": float(last[k]) for k in ("error_rate", "valid_loss", "accuracy", "f2", "fit_time",
                                                          "gpu_mem") if isinstance(last.get(k), (int, float))}
        final["final/epochs"] = float(last.get("epoch", 0) or 0)
        for summary_proto in hparams(hp, final):
            writer.file_writer.add_summary(summary_proto)
        for key, value in final.items():
            writer.add_scalar(key, value, 0)
        writer.close()
        del self._writers[trial.trial_id]


class ProgressCallback(Callback):
    """One readable line per trial event and a best-so-far, instead of Ray's table flood; and the
    seconds each trial slot sat idle before its next trial's first training step."""

    def __init__(self, echo: Callable[[str], None], metric: str, mode: str, max_epochs: int, total: int,
                 searched: set[str], slots: int = 1) -> None:
        self.echo, self.metric, self.mode, self.max_epochs, self.total = echo, metric, mode, max_epochs, total
        self.searched = searched
        self.slots = slots
        self.start = time.perf_counter()
        self.number: dict[str, int] = {}
        self.best: tuple[float, int] | None = None
        self.counts = {"finished": 0, "stopped": 0, "errored": 0}
        # When each free trial slot became free, oldest first. Ray calls on_trial_start only once a
        # trial's worker is up, so the start is timed from the slot's release: what an idle GPU waits.
        self.free_since: list[float] = []
        self.holding: set[str] = set()  # trials running in a slot
        self.waiting: set[str] = set()  # trials paused by ASHA at a rung, waiting for promotion
        self.started_at: dict[str, float] = {}
        self.start_seconds: list[float] = []  # a free slot -> the trial's first training step

    def setup(self, **info) -> None:
        self.free_since = [time.time()] * self.slots

    def _release_slot(self, trial) -> None:
        if trial.trial_id in self.holding:
            self.holding.discard(trial.trial_id)
            self.free_since.append(time.time())

    def _say(self, trial, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        n = self.number.setdefault(trial.trial_id, len(self.number) + 1)
        self.echo(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] #{n:<3d} {text}")

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started_at[trial.trial_id] = self.free_since.pop(0) if self.free_since else time.time()
        self.holding.add(trial.trial_id)
        if trial.trial_id in self.waiting:
            self.waiting.discard(trial.trial_id)
            self._say(trial, f"promoted after epoch {_epoch(trial)}: continues from its checkpoint")
            return
        c = trial.config
        knobs = " ".join(f"{k}={_short(c[k])}" for k in SEARCH_KEYS if k != "model" and k in self.searched and k in c)
        self._say(trial, f"start    {c.get('model')} {knobs}".rstrip())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        started = self.started_at.pop(trial.trial_id, None)
        if started is not None and isinstance(result.get("ready_time"), float):
            self.start_seconds.append(result["ready_time"] - started)
        value = result.get(self.metric)
        if not isinstance(value, (int, float)):
            return
        n = self.number.setdefault(trial.trial_id, len(self.number) + 1)
        better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
        if better:
            self.best = (value, n)
        best = f"best {self.best[0]:.4f} (#{self.best[1]})"
        self._say(trial, f"epoch {result.get('epoch')}/{self.max_epochs} {self.metric} {value:.4f}   {best}")

    def start_summary(self) -> str | None:
        if not self.start_seconds:
            return None
        s = sorted(self.start_seconds)
        return (f"trial start: median {s[len(s) // 2]:.1f}s (min {s[0]:.1f}s, max {s[-1]:.1f}s) from a free "
                f"trial slot to the trial's first training step, over {len(s)} trial(s)")

    def on_step_end(self, iteration, trials, **info) -> None:
        for trial in trials:  # Ray calls no callback when a scheduler pauses a trial
            if trial.status == "PAUSED" and trial.trial_id in self.holding:
                self._release_slot(trial)
                self.waiting.add(trial.trial_id)
                self._say(trial, f"waits at epoch {_epoch(trial)} for a place in its rung's top (ASHA)")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._release_slot(trial)  # the failed run's slot; its retry takes one like any trial

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._release_slot(trial)
        self.waiting.discard(trial.trial_id)
        last = trial.last_result or {}
        epoch = last.get("epoch", 0)
        if last.get("diverged"):
            self.counts["stopped"] += 1
            self._say(trial, f"diverged at epoch {epoch} (non-finite loss)")
        elif epoch and epoch < self.max_epochs:
            self.counts["stopped"] += 1
            self._say(trial, f"stopped early by ASHA at epoch {epoch}")
        else:
            self.counts["finished"] += 1
            self._say(trial, f"finished: {self.metric} {last.get(self.metric, float('nan')):.4f}")
        self._status()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._release_slot(trial)
        self.waiting.discard(trial.trial_id)
        self.counts["errored"] += 1
        self._say(trial, f"errored: see {trial.path}/error.txt")
        self._status()

    def _status(self) -> None:
        done = sum(self.counts.values())
        self.echo(f"        {done}/{self.total} done: {self.counts['finished']} finished, "
                  f"{self.counts['stopped']} stopped early, {self.counts['errored']} errored")


class CheckpointCleanup(Callback):
    """Delete a finished trial's checkpoints, but only once Ray's saved experiment state records
    the trial as finished: a search killed before that snapshot resumes the trial from its last
    checkpoint, which must still exist. Unfinished and errored trials keep theirs."""

    def __init__(self, run_dir: Path, every_s: float = 5.0) -> None:
        self.run_dir, self.every_s = run_dir, every_s
        self.pending: set[str] = set()
        self.last = 0.0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.pending.add(Path(trial.path).name)

    def on_step_end(self, iteration, trials, **info) -> None:
        if self.pending and time.monotonic() - self.last > self.every_s:
            self.last = time.monotonic()
            self.sweep()

    def sweep(self) -> None:
        from .report import trial_states

        states = trial_states(self.run_dir)
        for name in [n for n in self.pending if states.get(n) == "TERMINATED"]:
            remove_checkpoints(self.run_dir / name)
            self.pending.discard(name)


def remove_checkpoints(trial_dir: Path) -> None:
    for entry in trial_dir.glob("checkpoint_*"):
        shutil.rmtree(entry, ignore_errors=True)


def searched_keys(spec: SearchSpec) -> set[str]:
    """Config keys the space varies (sampled, or more than one value): the ones worth printing."""
    return {k for k in spec.space if (values := spec.values_of(k)) is None or len(values) > 1}


def _epoch(trial) -> int:
    return int((trial.last_result or {}).get("epoch", 0) or 0)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


