"""A search's experiment trackers: Ray's W&B and MLflow logger callbacks, set up the way tunekit logs
(one tracker run per trial, the config as params.json has it, each epoch's metrics under TensorBoard's
names with the epoch as the step, the trial's status as a tag), each behind a ``Detached`` guard.

    trackers = make_trackers(spec.trackers, spec.name, run_dir, echo)    # (tracking.check_ready first)
    callbacks += [t.callback for t in trackers]
    ...                                                                  # tuner.fit()
    for t in trackers: t.upload_report(run_dir, interrupted)             # after the report is written

Both callbacks run on the driver, so only the machine that runs ``tunekit search`` talks to the
tracker (W&B: Ray's one logging process per trial, placed on the driver's node; MLflow: HTTP calls
from the driver). A trial paused at an ASHA rung keeps its tracker run open, and a promoted trial
logs on into it: Ray calls the callbacks' start again, not their end (and a resumed search finds its
MLflow runs by their tags).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor  # (ray_api's table: why)
from ray.tune import Callback

from ..config import METRICS, total_epochs
from ..errors import TunekitError
from ..runfolder import Status, ended_status
from ..tracking import TRACKERS, wandb_mode
from .ray_api import trial_local_path

REPORT_FILES = ("report.html", "report.md", "ranking.csv", "effects.csv", "results.csv")
STATUS_TAG = "status"  # the tag (MLflow) / summary key (W&B) of a trial's status


def epoch_metrics(result: dict) -> dict[str, float]:
    """What a trial logs per epoch: the numeric metrics of the metric contract, as TensorBoard has them."""
    return {k: float(v) for k in METRICS
            if isinstance(v := result.get(k), (int, float)) and not isinstance(v, bool)}


def status_text(trial: Any, failed: bool) -> str:
    """completed, stopped early at epoch k (ASHA), diverged, errored: as results.csv will say."""
    if failed:
        return Status.ERRORED.value
    last = trial.last_result or {}
    epochs = int(last.get("epoch", 0) or 0)
    status = ended_status(epochs, total_epochs(trial.config), bool(last.get("diverged")))
    return f"{status.value} at epoch {epochs}" if status is Status.STOPPED else status.value


class Detached(Callback):
    """Runs a tracker callback's hooks on a thread of their own, in order, so the search never waits for
    a tracker (a slow server, a full queue): Ray's loop, and so every trial's next epoch, goes on. The
    first hook that fails, or a backlog of ``backlog`` hooks, turns the tracker off with one warning; at
    the end of the search its backlog gets ``drain_s`` to finish."""

    def __init__(self, tracker: Callback, title: str, echo: Callable[[str], None], backlog: int = 10_000,
                 drain_s: float = 120.0) -> None:
        self.tracker, self.title, self.echo = tracker, title, echo
        self.backlog, self.drain_s = backlog, drain_s
        self.failed: str | None = None
        self.calls: queue.Queue | None = None
        self.thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Ray pickles the Tuner's callbacks before the search starts: without the thread (made in setup)."""
        return {**self.__dict__, "calls": None, "thread": None}

    def _submit(self, hook: str, *args: Any, **kwargs: Any) -> None:
        if self.failed is not None:
            return
        if self.calls is None:  # not set up: Ray did not start the search
            return
        if self.calls.qsize() >= self.backlog:
            self._fail(f"{self.backlog} events behind")
            return
        self.calls.put((hook, args, kwargs))

    def _work(self) -> None:
        while (item := self.calls.get()) is not None:
            hook, args, kwargs = item
            if self.failed is None:
                try:
                    getattr(self.tracker, hook)(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - any tracker failure: the search goes on without it
                    self._fail(f"{type(e).__name__}: {e}")

    def _fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why
            self.echo(f"warning: {self.title}: {why}; the search goes on without it (the run folder has "
                      f"every result)")

    def setup(self, **info: Any) -> None:
        self.calls = queue.Queue()
        self.thread = threading.Thread(target=self._work, name=f"tunekit-{self.title}", daemon=True)
        self.thread.start()
        self._submit("setup", **info)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._submit("on_trial_start", iteration, [], trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._submit("on_trial_result", iteration, [], trial, dict(result))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._submit("on_trial_complete", iteration, [], trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._submit("on_trial_error", iteration, [], trial)

    def on_experiment_end(self, trials, **info) -> None:
        self._submit("on_experiment_end", list(trials))
        self.close()

    def close(self, drain_s: float | None = None) -> None:
        """Wait for the backlog (at most ``drain_s``, default the guard's), then stop the thread."""
        thread, self.thread = self.thread, None
        if thread is None:
            return
        wait = self.drain_s if drain_s is None else drain_s
        self.calls.put(None)
        thread.join(wait)
        if thread.is_alive():
            self._fail(f"still busy after {wait:.0f}s at the end of the search")

    def run(self, hook: Callable[[], None]) -> None:
        """``hook`` now, on the caller's thread, unless the tracker failed (a failure warns)."""
        if self.failed is None:
            try:
                hook()
            except Exception as e:  # noqa: BLE001
                self._fail(f"{type(e).__name__}: {e}")


def quiet_settings():
    """W&B's settings for a logging process: no system metrics, console, code or machine capture (they
    would describe the process that logs, on the driver's machine, not the trial), which on a 2-core
    machine took ~4 s of CPU per trial from the trials (the demo: 166 s with them, RESULTS.md)."""
    import wandb

    return wandb.Settings(x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True, console="off",
                          save_code=False, disable_git=True, disable_job_creation=True, silent=True)


class WandbRunActor(_WandbLoggingActor):
    """Ray's process that logs one trial to W&B, which also sets the trial's status when it ends."""

    STATUS = "tunekit_status"  # a result carrying only this and the step: the status, as tag and summary

    def _handle_result(self, result: dict) -> tuple[dict, dict]:
        status = result.pop(self.STATUS, None)
        if status is not None:
            self._wandb.run.tags = (status,)
            self._wandb.run.summary[STATUS_TAG] = status
        return super()._handle_result(result)


class WandbTracker(WandbLoggerCallback):
    """Ray's W&B callback: a run per trial in ``project``, grouped by the search (or ``group``); offline
    runs are written under the run folder's wandb/ (``wandb sync`` uploads them)."""

    _logger_actor_cls = WandbRunActor

    def __init__(self, settings: dict[str, str], search: str, run_dir: Path) -> None:
        self.mode = wandb_mode(settings)
        self.entity = {"entity": settings["entity"]} if "entity" in settings else {}
        super().__init__(project=settings["project"], group=settings.get("group", search), upload_timeout=60,
                         dir=str(run_dir), mode=self.mode, resume="allow", settings=quiet_settings(), **self.entity)
        self.open: set[Any] = set()

    def setup(self, *args: Any, **kwargs: Any) -> None:
        with _offline(self.mode):  # Ray's setup asks for an API key unless WANDB_MODE says offline
            super().setup(*args, **kwargs)
        # Ray's own class makes restartable logging processes, and Ray's core then logs an error line at the
        # first one ("constructor arguments in the object store and max_restarts > 0"): ours do not restart
        # (a W&B process that dies ends that trial's W&B run; the run folder has every result)
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        env = {"WANDB_API_KEY": os.environ["WANDB_API_KEY"]} if "WANDB_API_KEY" in os.environ else {}
        self._remote_logger_class = ray.remote(num_cpus=0, scheduling_strategy=here, max_restarts=0,
                                               runtime_env={"env_vars": env})(self._logger_actor_cls)

    def log_trial_start(self, trial) -> None:
        self.open.add(trial)
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        metrics = epoch_metrics(result)
        super().log_trial_result(iteration, trial, {**metrics, "training_iteration": int(metrics.get("epoch", 0))})

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self._status(trial, status_text(trial, failed))
        super().log_trial_end(trial, failed)

    def _status(self, trial, status: str) -> None:
        self.open.discard(trial)
        if trial in self._trial_queues:
            epoch = int((trial.last_result or {}).get("epoch", 0) or 0)
            super().log_trial_result(0, trial, {WandbRunActor.STATUS: status, "training_iteration": epoch})

    def on_experiment_end(self, trials, **info) -> None:
        for trial in list(self.open):  # a stopped search: Ray ends no trial, so no run would finish
            self._status(trial, Status.UNFINISHED.value)
            self._signal_logging_actor_stop(trial)
        super().on_experiment_end(trials, **info)

    def upload_report(self, run_dir: Path, result: Any) -> str:
        """The report as an artifact of one summary run in the search's group; returns where to look."""
        import wandb

        run = wandb.init(project=self.project, group=self.group, name=f"{run_dir.name} (report)", job_type="report",
                         dir=str(run_dir), mode=self.mode, reinit="create_new", settings=quiet_settings(),
                         **self.entity)
        artifact = wandb.Artifact(f"{run_dir.name}-report", type="report")
        for name in REPORT_FILES:
            if (run_dir / name).is_file():
                artifact.add_file(str(run_dir / name))
        run.log_artifact(artifact)
        run.summary.update(best_of(result))
        run.summary[STATUS_TAG] = "interrupted" if result.interrupted else "finished"
        run.finish()
        where = f"W&B project {self.project!r}, group {self.group!r}"
        if self.mode == "offline":
            return f"{where}: offline runs in {run_dir / 'wandb'}; upload: wandb sync {run_dir / 'wandb'}/offline-run-*"
        return where


class MlflowTracker(MLflowLoggerCallback):
    """Ray's MLflow callback: the search as a parent run in ``experiment`` (default: the search's name),
    each trial a run nested in it; the report goes to the parent run as artifacts. Ray's callback sets up
    the experiment; the runs are written here in batches (Ray's helper makes a request per key, and
    after a failed lookup of the run logs to a new one), with ``MlflowClient``: one request per epoch."""

    def __init__(self, settings: dict[str, str], search: str, run_dir: Path) -> None:
        super().__init__(tracking_uri=settings["tracking_uri"], experiment_name=settings.get("experiment", search))
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run otherwise
        self.search, self.run_dir = search, run_dir
        self.parent: str | None = None
        self.runs: dict[Any, str] = {}  # trial -> its MLflow run id

    def _find(self, tags: dict[str, str]) -> str | None:
        """The run of this experiment with these tags (a resumed search's), made by an earlier run of it."""
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = self.client.search_runs([self.experiment_id], query, max_results=1)
        if not found:
            return None
        self.client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id

    def setup(self, *args: Any, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        super().setup(*args, **kwargs)
        self.client = client = MlflowClient(self.tracking_uri)  # (made here: Ray pickles callbacks before)
        self.experiment_id = client.get_experiment_by_name(self.experiment_name).experiment_id
        mine = {"tunekit.run_folder": str(self.run_dir), "tunekit.role": "search"}
        self.parent = self._find(mine) or client.create_run(self.experiment_id, run_name=self.search,
                                                            tags=mine).info.run_id

    def log_trial_start(self, trial) -> None:
        from mlflow.entities import Param, RunTag
        from ray.tune.utils import flatten_dict

        if trial in self.runs:  # promoted from an ASHA rung: its run goes on
            return
        tags = {"mlflow.parentRunId": self.parent, "trial_name": str(trial)}
        run_id = self._find(tags)
        if run_id is None:
            tags.update({"tunekit.role": "trial", "trial_folder": Path(trial_local_path(trial)).name})
            run_id = self.client.create_run(self.experiment_id, run_name=str(trial), tags=tags).info.run_id
            params = [Param(k, str(v)) for k, v in flatten_dict(dict(trial.config)).items()]
            self.client.log_batch(run_id, params=params, tags=[RunTag("tunekit.search", self.search)])
        self.runs[trial] = run_id

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        import time

        from mlflow.entities import Metric

        metrics = epoch_metrics(result)
        step, now = int(metrics.get("epoch", iteration)), int(time.time() * 1000)
        self.client.log_batch(self.runs[trial], metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def _end(self, trial, status: str, state: str) -> None:
        run_id = self.runs.pop(trial)
        self.client.set_tag(run_id, STATUS_TAG, status)
        self.client.set_terminated(run_id, status=state)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial in self.runs:
            self._end(trial, status_text(trial, failed), "FAILED" if failed else "FINISHED")

    def on_experiment_end(self, trials, **info) -> None:
        for trial in list(self.runs):  # a stopped search: its open trials
            self._end(trial, Status.UNFINISHED.value, "KILLED")

    def upload_report(self, run_dir: Path, result: Any) -> str:
        """The report as artifacts of the search's parent run; returns where to look."""
        client = self.client
        for name in REPORT_FILES:
            if (run_dir / name).is_file():
                client.log_artifact(self.parent, str(run_dir / name))
        for key, value in best_of(result).items():
            (client.log_metric if isinstance(value, float) else client.set_tag)(self.parent, key, value)
        client.set_terminated(self.parent, status="KILLED" if result.interrupted else "FINISHED")
        return f"MLflow {self.tracking_uri}/#/experiments/{self.experiment_id} (experiment {self.experiment_name!r})"


@contextlib.contextmanager
def _offline(mode: str) -> Iterator[None]:
    """WANDB_MODE=offline meanwhile, for an offline tracker (W&B's own variable, as it was after)."""
    saved = os.environ.get("WANDB_MODE")
    if mode == "offline":
        os.environ["WANDB_MODE"] = "offline"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = saved


def check_login(trackers: dict[str, dict[str, str]]) -> None:
    """W&B online needs an API key: asked as Ray's callback asks for it, before the search starts."""
    if "wandb" in trackers and wandb_mode(trackers["wandb"]) == "online":
        try:
            WandbLoggerCallback(project=trackers["wandb"]["project"]).setup()
        except ValueError:
            raise TunekitError("--wandb: W&B needs a login to log online: run 'wandb login' or set WANDB_API_KEY; "
                               "or log offline (WANDB_MODE=offline, or trackers={'wandb': {'mode': 'offline'}}) "
                               "and upload later with 'wandb sync'") from None


KINDS = {"wandb": WandbTracker, "mlflow": MlflowTracker}


def make_trackers(trackers: dict[str, dict[str, str]], search: str, run_dir: Path,
                  echo: Callable[[str], None]) -> list[Detached]:
    """The search's trackers, each guarded (``Detached``): give Ray ``[t for t in make_trackers(...)]``."""
    return [Detached(KINDS[name](settings, search, run_dir), TRACKERS[name].title, echo)
            for name, settings in trackers.items()]


def best_of(result: Any) -> dict[str, float | str]:
    """The search's best trial, for the summary run: its metric and folder."""
    best = result.best(1)
    if best.empty:
        return {}
    return {f"best_{result.metric}": float(best[result.metric].iloc[0]), "best_trial": str(best["trial"].iloc[0])}


def upload_reports(trackers: list[Detached], run_dir: Path, result: Any, echo: Callable[[str], None]) -> None:
    """The written report to every tracker still working (a failure warns, once); a line says where."""
    for guard in trackers:
        guard.close()  # (Ray closed it at the end of the search, unless it never started)
        guard.run(lambda t=guard.tracker: echo(f"tracked: {t.upload_report(run_dir, result)}"))

