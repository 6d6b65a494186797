"""A search's experiment trackers, W&B and MLflow, set up the way tunekit logs (one tracker run per trial, the
config as params.json has it, each epoch's metrics under TensorBoard's names with the epoch as the step, the
trial's status as a tag), each a Ray logger callback behind a ``Detached`` guard. Their settings, defaults and
checks are ``tunekit.tracking``'s; this module only builds the callbacks from them.

    trackers = make_trackers(resolved, spec.name, run_dir, instance, echo)   # tracking.resolve, check_ready first
    callbacks += trackers
    ...                                                                      # tuner.fit()
    upload_reports(trackers, run_dir, result, echo)                          # after the report is written

Both run on the driver, so only the machine that runs ``tunekit search`` talks to the tracker. W&B: every
trial's run is written by this one process (W&B keeps several runs open in a process, served by one W&B service
process), so a search holds one W&B process whatever its trial count, also while many trials wait at an ASHA
rung (Ray's own callback started two processes per open trial: at 120 trials it lost most of them). MLflow:
HTTP calls from the driver. A trial paused at a rung keeps its run open, and a promoted trial logs on into it:
Ray calls the callbacks' start again, not their end. A search instance (``instance``: the run folder's, kept by
--resume and made anew by --restart) names the W&B runs and the default group, and finds a resumed search's
MLflow runs by their tags.
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
from ray.tune import Callback
from ray.tune.logger import LoggerCallback

from ..config import METRICS, total_epochs
from ..runfolder import Status, ended_status
from ..tracking import TRACKERS, MlflowSettings, Resolved, WandbSettings
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
    first hook that fails, or a backlog of ``backlog`` hooks, turns the tracker off with one warning (the runs
    it opened, the trials' and the search's own, are then closed where the tracker still can, off Ray's thread);
    at the end of the search its backlog gets ``drain_s`` to finish, which is said when there is one to wait for."""

    def __init__(self, tracker: Callback, title: str, echo: Callable[[str], None], backlog: int = 10_000,
                 drain_s: float = 30.0) -> None:
        self.tracker, self.title, self.echo = tracker, title, echo
        self.backlog, self.drain_s = backlog, drain_s
        self.failed: str | None = None
        self.calls: queue.Queue | None = None
        self.thread: threading.Thread | None = None
        self.worker: threading.Thread | None = None  # the thread the hooks run on (self.thread until closed)
        self.closer: threading.Thread | None = None  # closing a failed tracker's runs, when not on its own thread
        self.ended = False  # the search's own run closed (its report uploaded, or ended as stopped)

    def __getstate__(self) -> dict[str, Any]:
        """Ray pickles the Tuner's callbacks before the search starts: without the threads (made in setup)."""
        return {**self.__dict__, "calls": None, "thread": None, "worker": None, "closer": None}

    def _submit(self, hook: str, *args: Any, **kwargs: Any) -> None:
        if self.failed is not None or self.calls is None:  # failed, or not set up (Ray did not start the search)
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

    def _fail(self, why: str, after: str = "the search goes on without it") -> None:
        """The tracker off, said once; what it opened is closed on its own thread (a hook that failed) or on one
        made for it (Ray's loop, or the end of the search, never waits on a tracker's retries)."""
        if self.failed is not None:
            return
        self.failed = why
        self.echo(f"warning: {self.title}: {why}; {after} (the run folder has every result)")
        if threading.current_thread() is self.worker:
            self._abandon()
        else:
            self.closer = threading.Thread(target=self._abandon, name=f"tunekit-{self.title}-close", daemon=True)
            self.closer.start()

    def _abandon(self) -> None:
        self.ended = True
        with contextlib.suppress(Exception):  # where the tracker still can be reached
            self.tracker.abandon()

    def setup(self, **info: Any) -> None:
        self.calls = queue.Queue()
        self.thread = self.worker = threading.Thread(target=self._work, name=f"tunekit-{self.title}", daemon=True)
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

    def close(self, drain_s: float | None = None, stopping: bool = False) -> None:
        """End the tracker's open runs as unfinished (a stopped search: Ray may end no trial), wait for the backlog
        (at most ``drain_s``, default the guard's, said when there is a backlog), then stop the thread."""
        thread, self.thread = self.thread, None
        if thread is not None:
            wait = self.drain_s if drain_s is None else drain_s
            self.calls.put(("end_open", (Status.UNFINISHED.value,), {}))
            self.calls.put(None)
            thread.join(min(wait, 1.0))
            if thread.is_alive() and self.failed is None:  # a backlog worth saying it is waited on
                self.echo(f"{self.title}: writing what it has left ({self.calls.qsize()} event(s)), at most "
                          f"{wait:.0f} s")
                thread.join(max(0.0, wait - 1.0))
            if thread.is_alive():
                self._fail(f"still busy after {wait:.0f}s at the end of the search",
                           "what it has not written is left" if stopping else "the search ends without it")
        if self.closer is not None:
            self.closer.join(5.0)

    def run(self, hook: Callable[[], None], limit_s: float | None = None) -> None:
        """``hook`` now, unless the tracker failed (a failure warns), on a thread of its own given at most
        ``limit_s`` (default the guard's ``drain_s``): past that the search ends without it, said."""
        if self.failed is not None:
            return
        limit = self.drain_s if limit_s is None else limit_s
        errors: list[Exception] = []

        def call() -> None:
            try:
                hook()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        worker = threading.Thread(target=call, name=f"tunekit-{self.title}-end", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            self._fail(f"still busy after {limit:.0f}s", "the search ends without it")
        elif errors:
            self._fail(f"{type(errors[0]).__name__}: {errors[0]}")
        if self.closer is not None:
            self.closer.join(5.0)

    def end(self, hook: Callable[[], None], limit_s: float | None = None) -> None:
        """The search's own run closed by ``hook`` (the report's upload, or its end as stopped), once."""
        if not self.ended:
            self.ended = True
            self.run(hook, limit_s)


def quiet_settings():
    """W&B's settings for the search's runs: no system metrics, console, code or machine capture (they would
    describe the driver that logs, not the trial), which on a 2-core machine took ~4 s of CPU per trial from the
    trials (the demo: 166 s with them, RESULTS.md)."""
    import wandb

    return wandb.Settings(x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True, console="off",
                          save_code=False, disable_git=True, disable_job_creation=True, silent=True)


class WandbTracker(LoggerCallback):
    """W&B: a run per trial in ``project``, grouped (``WandbSettings.group``), all written by this process; offline
    runs under W&B's dir (``wandb sync`` uploads them). A run's id is the search instance's and the trial's, so a
    resumed search goes on in its runs (``resume='allow'``)."""

    def __init__(self, settings: WandbSettings, search: str, run_dir: Path, instance: str) -> None:
        self.settings, self.search, self.run_dir, self.instance = settings, search, run_dir, instance
        self.runs: dict[str, Any] = {}  # trial id -> its open W&B run

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "runs": {}}

    def _init(self, **kwargs: Any) -> Any:
        import wandb

        s = self.settings
        with _wandb_mode(s.mode):
            return wandb.init(project=s.project, group=s.group, dir=s.dir, mode=s.mode, reinit="create_new",
                              settings=quiet_settings(), **({"entity": s.entity} if s.entity else {}), **kwargs)

    def log_trial_start(self, trial) -> None:
        if trial.trial_id in self.runs:  # promoted from an ASHA rung: its run goes on
            return
        from ray.tune.utils import flatten_dict

        config = {k: v for k, v in flatten_dict(dict(trial.config)).items() if not callable(v)}
        # a search begun before instances (instance ""): its runs' ids are the trials' own, as they were then
        run_id = f"{self.instance}-{trial.trial_id}" if self.instance else trial.trial_id
        self.runs[trial.trial_id] = self._init(name=str(trial), id=run_id, resume="allow", config=config,
                                               job_type="trial")

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        run = self.runs.get(trial.trial_id)
        if run is not None:
            metrics = epoch_metrics(result)
            run.log(metrics, step=int(metrics.get("epoch", iteration)))

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self._end(trial.trial_id, status_text(trial, failed), failed)

    def _end(self, trial_id: str, status: str, failed: bool = False) -> None:
        run = self.runs.pop(trial_id, None)
        if run is not None:
            run.tags = (status,)
            run.summary[STATUS_TAG] = status
            run.finish(exit_code=1 if failed else 0)

    def end_open(self, status: str) -> None:
        """Every run still open ends with ``status`` (a stopped search, or the tracker turned off)."""
        for trial_id in list(self.runs):
            self._end(trial_id, status)

    def on_experiment_end(self, trials, **info) -> None:
        self.end_open(Status.UNFINISHED.value)

    def end_search(self) -> None:
        """The search stopped at once (no report, so no summary run): nothing more to close."""

    def abandon(self) -> None:
        """The tracker turned off mid-search: every run it has open ends as unfinished."""
        self.end_open(Status.UNFINISHED.value)

    def upload_report(self, run_dir: Path, result: Any) -> str:
        """The report as an artifact of one summary run in the search's group; returns where to look."""
        import wandb

        run = self._init(name=f"{run_dir.name} (report)", job_type="report",
                         id=f"{self.instance}-report" if self.instance else None, resume="allow")
        artifact = wandb.Artifact(f"{run_dir.name}-report", type="report")
        for name in REPORT_FILES:
            if (run_dir / name).is_file():
                artifact.add_file(str(run_dir / name))
        run.log_artifact(artifact)
        run.summary.update(best_of(result))
        run.summary[STATUS_TAG] = "interrupted" if result.interrupted else "finished"
        run.finish()
        s = self.settings
        where = f"W&B project {s.project!r}, group {s.group!r}"
        if s.mode == "offline":
            return f"{where}: offline runs in {s.dir}/wandb; upload: wandb sync {s.dir}/wandb/offline-run-*"
        return where


def quoted(value: str) -> str:
    """A value in an MLflow search filter, quoted (single quotes, or double where it holds one)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"an MLflow filter cannot quote {value!r} (it holds both quote marks)")


class MlflowTracker(MLflowLoggerCallback):
    """MLflow: the search as a parent run in ``experiment``, each trial a run nested in it; the report goes to
    the parent run as artifacts. Ray's callback sets up the experiment; the runs are written here in batches
    (Ray's helper makes a request per key, and after a failed lookup of the run logs to a new one), with
    ``MlflowClient``: one request per epoch. The parent and the trials' runs carry the search instance as a tag:
    a resumed search goes on in them, a --restart (a new instance) makes new ones."""

    def __init__(self, settings: MlflowSettings, search: str, run_dir: Path, instance: str) -> None:
        super().__init__(tracking_uri=settings.tracking_uri, experiment_name=settings.experiment)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run otherwise
        self.search, self.run_dir, self.instance = search, run_dir, instance
        self.parent: str | None = None
        self.runs: dict[Any, str] = {}  # trial -> its MLflow run id

    def _find(self, tags: dict[str, str]) -> str | None:
        """The run of this experiment with these tags (a resumed search's), made by an earlier run of it."""
        query = " and ".join(f"tags.`{k}` = {quoted(v)}" for k, v in tags.items())
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
        # a search begun before instances: its parent is found by its run folder, as it was then
        mine = {"tunekit.instance": self.instance} if self.instance else {"tunekit.run_folder": str(self.run_dir)}
        mine["tunekit.role"] = "search"
        self.parent = self._find(mine) or client.create_run(
            self.experiment_id, run_name=self.search,
            tags={**mine, "tunekit.run_folder": str(self.run_dir)}).info.run_id

    def log_trial_start(self, trial) -> None:
        from mlflow.entities import Param, RunTag
        from ray.tune.utils import flatten_dict

        if trial in self.runs:  # promoted from an ASHA rung: its run goes on
            return
        tags = {"mlflow.parentRunId": self.parent, "trial_name": str(trial)}
        run_id = self._find(tags)
        if run_id is None:
            tags.update({"tunekit.role": "trial", "tunekit.instance": self.instance,
                         "trial_folder": Path(trial_local_path(trial)).name})
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

    def end_open(self, status: str) -> None:
        """Every trial run still open ends as KILLED with ``status`` (a stopped search, the tracker turned off)."""
        for trial in list(self.runs):
            self._end(trial, status, "KILLED")

    def on_experiment_end(self, trials, **info) -> None:
        self.end_open(Status.UNFINISHED.value)

    def end_search(self) -> None:
        """The search stopped at once (no report): its parent run ends as KILLED, as an interrupted one."""
        if self.parent is not None:
            self.client.set_terminated(self.parent, status="KILLED")

    def abandon(self) -> None:
        """The tracker turned off mid-search: the open trial runs end as KILLED, the search's own as FAILED."""
        self.end_open(Status.UNFINISHED.value)
        if self.parent is not None:
            self.client.set_terminated(self.parent, status="FAILED")

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
def _wandb_mode(mode: str) -> Iterator[None]:
    """WANDB_MODE as the tracker's mode meanwhile (W&B's own variable, as it was after)."""
    saved = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = mode
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = saved


KINDS = {"wandb": WandbTracker, "mlflow": MlflowTracker}


def make_trackers(resolved: Resolved, search: str, run_dir: Path, instance: str,
                  echo: Callable[[str], None]) -> list[Detached]:
    """The search's trackers, each guarded (``Detached``), for Ray's callbacks."""
    return [Detached(KINDS[name](settings, search, run_dir, instance), TRACKERS[name].title, echo)
            for name, settings in resolved.items()]


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
        guard.end(lambda t=guard.tracker: echo(f"tracked: {t.upload_report(run_dir, result)}"))


def stop_trackers(trackers: list[Detached], drain_s: float = 5.0) -> None:
    """A search stopped at once (a second Ctrl-C, an error): the open runs get ``drain_s`` to end as unfinished
    and the search's own run ends as stopped."""
    for guard in trackers:
        guard.close(drain_s=drain_s, stopping=True)
        guard.end(guard.tracker.end_search, limit_s=drain_s)
