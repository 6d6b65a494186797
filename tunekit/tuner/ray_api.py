"""What tunekit relies on in Ray beyond its public API, in one place: each use, why, since when.

setup.cfg bounds ``ray[tune]`` to the versions these were checked on (2.60); ``check()`` says what an
installed Ray no longer has, and ``tests/test_ray_api.py`` runs it (and reads a real run's experiment
state), so an upgrade that breaks one of these fails there with the name of the thing that moved
rather than deep inside a search.

=====================================  ===========================================================
use                                    why
=====================================  ===========================================================
``TuneContext.get_storage()``          the trial's working directory, which Ray syncs to the run
(DeveloperAPI, Ray >= 2.7)             folder from any node (tunekit_run.json goes there)
``Tuner._local_tuner.get_run_config``  a restored Tuner unpickles the first run's callbacks; the
(private, Ray >= 2.5)                   resumed search must use this run's (ray-project/ray#41364)
``TuneController._mark_trial_to_``     a trial the scheduler stops while paused has no worker, and
``checkpoint`` (private, Ray >= 2.5)   Ray would leave it PAUSED in its saved state
``TrialScheduler._supports_``          PromotingASHA decides on every epoch's result, so Ray must
``buffered_results`` (private)         not batch results (tuner.asha)
``Trial.set_status``, ``Trial.is_``    PromotingASHA: a resumed trial waiting at a rung is filed as
``saving`` (DeveloperAPI),             PAUSED (Ray requeues it PENDING and would start it), a retried
``TuneController._set_trial_status``,  one through the controller's setter (it is in the controller's
``._pending_trials`` (private)         set of PENDING trials by then); a waiting trial whose
                                       checkpoint is being saved can still be stopped
``TuneController.stop_trial``          PromotingASHA stops a waiting trial that can no longer make
(DeveloperAPI)                         the cut, from inside the scheduler
``TuneController._search_alg``,        a trial whose first failure is a configuration error is ended
``._callbacks``, ``._iteration``,      at once (tuner.failures.give_up), as Ray ends one out of
``._trials`` (private)                 retries: the searcher and the callbacks told
``TuneController._stopper`` (private)  a resumed search's stopper (from Ray's experiment snapshot)
                                       shares the scheduler's verdict again (tuner.failures)
``Trial.local_path``, ``Trial.has_``   the trial's folder on the driver (TensorBoard files), and
``reported_at_least_once``             whether it has one yet (a resumed trial's history)
(DeveloperAPI)
``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` tunekit adds its own TensorBoard logger (Ray's env vars)
``TUNE_WARN_EXCESSIVE_EXPERIMENT_``    per-epoch checkpoints snapshot the experiment often: expected
``CHECKPOINT_SYNC_THRESHOLD_S``
``RAY_AIR_NEW_OUTPUT=0``               the classic console output, which is quiet at verbose=0
``ray.air._internal.usage.``           not run during tunekit's fits (``tune.run`` calls it through
``tag_callbacks`` (private)            the module): Ray's telemetry tag of a Tuner's callback classes
                                       imports MLflow's, Comet's and Aim's Ray integrations to compare
                                       against (MLflow's imports mlflow: 1.3 s of every search's
                                       start where it is installed); another thread's Tuner in the
                                       same process, during a fit, records no such tag either
``RAY_enable_worker_prestart=0``,      no idle workers started with a search's own Ray (set while it
``RAY_prestart_worker_first_driver=0`` starts, RayConfig's variables, which a Ray without them ignores):
                                       Ray starts one per CPU for the first driver, and Tune's trial
                                       actors start workers of their own (measured: none of the 2 was
                                       used; 0.6-0.7 s of a core each, per search, on the 2-core machine)
``ray._private.services.find_``        ``--address auto`` joins the cluster ``ray start`` started on
``bootstrap_address`` (private)        this machine (the address it leaves in Ray's temp folder), never
                                       another process's local Ray, which Ray's own ``auto`` falls back
                                       to (tuner.session.resolve_auto)
``experiment_state-*.json`` layout     trial status and config without unpickling anything
(runfolder.ray_trials)                 (``trial_data``: [trial JSON, metadata JSON] pairs)
``tune.run``'s SIGINT handler          put back by ``own_sigint`` when a fit returns: Ray restores the
                                       previous one only when a Ctrl-C lands; wrapped (a callback's
                                       setup runs after Ray installs it) to answer the first Ctrl-C,
                                       known by its name (``is_ray_sigint``)
=====================================  ===========================================================
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

TESTED = "2.60"  # the Ray minor version everything here was checked on (setup.cfg's bound)
# a search's own local Ray (tuner.session): no idle workers prestarted (the table above)
NO_PRESTART = {"RAY_enable_worker_prestart": "0", "RAY_prestart_worker_first_driver": "0"}


def started_cluster_address() -> str | None:
    """The address of the cluster ``ray start`` last started on this machine (None if none, or it was stopped)."""
    from ray._private.services import find_bootstrap_address

    return find_bootstrap_address(None)


def trial_working_directory() -> Path:
    """Inside a trial: its working directory, synced to the run folder from whichever node runs it.
    Not ``get_trial_dir()``: that is the driver's staging path for a new worker (lost on another
    node) and this directory for a reused one."""
    from ray import tune

    return Path(tune.get_context().get_storage().trial_working_directory)


def replace_callbacks(tuner: Any, callbacks: list) -> bool:
    """Give a restored Tuner this run's callbacks (Ray restores the first run's pickled copies,
    whose progress lines would go to a stale echo). False if this Ray has no such hook."""
    run_config = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", lambda: None)()
    if run_config is None:
        return False
    run_config.callbacks = callbacks
    return True


def mark_for_snapshot(tune_controller: Any, trial: Any) -> None:
    """Have Ray's next experiment-state snapshot record ``trial`` (stopped while it had no worker)."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    mark = getattr(controller, "_mark_trial_to_checkpoint", None)
    if mark is not None:
        mark(trial)


def file_as_paused(tune_controller: Any, trial: Any) -> None:
    """File a PENDING trial as PAUSED without a worker to pause: a trial being added (Ray files it by
    its status after the scheduler's hook) directly, one Ray requeued after a failure (already filed as
    PENDING) through the controller's own setter, which keeps its sets of trials by status."""
    from ray.tune.experiment import Trial

    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    if trial in controller._pending_trials:  # (an AttributeError here: Ray renamed it; see check())
        controller._set_trial_status(trial, Trial.PAUSED)
    else:
        trial.set_status(Trial.PAUSED)


def give_up(tune_controller: Any, trial: Any) -> None:
    """End a trial Ray has just requeued for a retry as failed for good, as Ray ends one whose retries are
    used up: filed ERROR, the searcher told it ended with an error, the callbacks' ``on_trial_error`` called
    (Ray calls their ``on_trial_recover`` after, for the requeue it had begun). Its worker is already being
    stopped (Ray stops a failed trial's worker before it requeues the trial)."""
    from ray.tune.experiment import Trial

    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    controller._set_trial_status(trial, Trial.ERROR)
    controller._search_alg.on_trial_complete(trial.trial_id, error=True)
    controller._callbacks.on_trial_error(iteration=controller._iteration, trials=controller._trials, trial=trial)
    controller._mark_trial_to_checkpoint(trial)  # the next snapshot has it ERROR


def is_saving(trial: Any) -> bool:
    """Whether Ray is saving the trial's checkpoint (a trial pausing at a rung is, for a moment)."""
    return bool(trial.is_saving)


def stop_trial(tune_controller: Any, trial: Any) -> None:
    """Stop ``trial`` from inside a scheduler (its checkpoints go with it)."""
    tune_controller.stop_trial(trial)


def trial_local_path(trial: Any) -> str:
    """The trial's folder on the driver (where its TensorBoard files go)."""
    return trial.local_path


def has_reported(trial: Any) -> bool:
    """Whether the trial has reported a result yet (before that it has no folder with a history)."""
    return bool(trial.has_reported_at_least_once)


ENV_SWITCHES = ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S",
                "RAY_AIR_NEW_OUTPUT")


@contextlib.contextmanager
def quiet_environment(verbose: bool) -> Iterator[None]:
    """Ray's switches for a readable search, set while it builds and runs, then as they were (a
    ``tune.Tuner`` of the caller's own, later in the same process, keeps Ray's automatic loggers):
    no automatic loggers (tunekit brings its own); unless verbose, no checkpoint-sync warning and
    the classic, quiet console output; and no telemetry census of the callbacks (the table above), Ray's own
    function put back after."""
    try:
        from ray.air._internal import usage
    except ImportError:  # Ray moved it: no census to skip (check() says so)
        usage = None
    census = getattr(usage, "tag_callbacks", None)
    with environment_kept(ENV_SWITCHES):
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        if not verbose:
            os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
            os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        if census is not None:
            usage.tag_callbacks = _no_callback_census
        try:
            yield
        finally:
            if census is not None:
                usage.tag_callbacks = census


@contextlib.contextmanager
def environment_kept(keys: Iterable[str]) -> Iterator[None]:
    """These environment variables as they were once the block ends, whatever it set."""
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _no_callback_census(callbacks: Any) -> bool:
    """Ray's ``tag_callbacks``, not run: no usage tag recorded (its telemetry's count of callback classes)."""
    return False


class Interrupts:
    """Ctrl-C during a fit, as tunekit answers it: ``again`` once a second Ctrl-C came while Ray was stopping;
    ``active`` while a fit runs inside ``own_sigint`` (outside it, a handler left behind answers nothing)."""

    def __init__(self) -> None:
        self.again = False
        self.active = False


_INTERRUPTS = Interrupts()


@contextlib.contextmanager
def own_sigint() -> Iterator[Interrupts]:
    """Ctrl-C around a Tuner's fit. After it, Ctrl-C is as it was before: Ray's Tune loop swaps in its own
    SIGINT handler (the first Ctrl-C stops the search gracefully) and puts the previous one back only when a
    Ctrl-C lands, so after a search that ended by itself its handler would swallow the first Ctrl-C of the
    report stage. Yields what ``answer_first_interrupt`` records: whether a second Ctrl-C came during the fit
    (then the caller stops at once, as soon as the fit has returned)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield Interrupts()
        return
    saved = signal.getsignal(signal.SIGINT)
    _INTERRUPTS.again, _INTERRUPTS.active = False, True
    try:
        yield _INTERRUPTS
    finally:
        _INTERRUPTS.active = False
        signal.signal(signal.SIGINT, saved)


def stopper_of(tune_controller: Any) -> Any:
    """The experiment's stopper as the controller holds it: a resumed search's comes from Ray's experiment
    snapshot (the controller's state keeps it), not from the Tuner's pickle the scheduler came from."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    return getattr(controller, "_stopper", None)


def is_ray_sigint(handler: Any) -> bool:
    """Whether ``handler`` is the SIGINT handler ``tune.run`` installs (a closure of its
    ``_setup_signal_catching``; not there with TUNE_DISABLE_SIGINT_HANDLER)."""
    return (getattr(handler, "__module__", "") == "ray.tune.tune"
            and getattr(handler, "__qualname__", "").startswith("_setup_signal_catching."))


def write_now(text: str) -> None:
    """A line straight to the standard output's file, as a signal handler may write (it must not re-enter a
    print it interrupted); where there is no such file (output captured), nothing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(sys.stdout.fileno(), (text + "\n").encode())


def answer_first_interrupt(message: str, again: str, say: Callable[[str], None] = write_now) -> None:
    """Inside a Tuner's fit run in ``own_sigint`` (from a callback's ``setup``: Ray has put its SIGINT handler in
    place by then): the first Ctrl-C goes to Ray's handler (the search stops gracefully) and ``message`` is said at
    once; a second one, while Ray is still stopping, says ``again`` and is acted on once the fit returns
    (``own_sigint``'s ``again``), so Ray still copies the trials' records to the run folder; a third raises at
    once. Only Ray's own handler is wrapped, once; ``say`` runs in the signal handler."""
    if threading.current_thread() is not threading.main_thread():
        return
    ray_handler = signal.getsignal(signal.SIGINT)
    if not is_ray_sigint(ray_handler):
        return

    def first(sig: int, frame: Any) -> None:
        ray_handler(sig, frame)  # sets Ray's stop and puts the previous handler back
        if not _INTERRUPTS.active:  # a fit outside own_sigint: Ray's handling only
            return
        previous = signal.getsignal(signal.SIGINT)

        def second(sig: int, frame: Any) -> None:
            _INTERRUPTS.again = True
            signal.signal(signal.SIGINT, previous)  # a third Ctrl-C: at once
            say(again)

        signal.signal(signal.SIGINT, second)  # before the answer: a Ctrl-C after it meets this one
        say(message)

    signal.signal(signal.SIGINT, first)


CONTROLLER_ATTRIBUTES = ("_pending_trials", "_search_alg", "_callbacks", "_iteration", "_trials", "_stopper")


def check_controller(controller: Any) -> list[str]:
    """What a live TuneController lacks of the attributes used above (they are set per instance)."""
    controller = getattr(controller, "_tune_controller", controller)
    return [f"TuneController.{name} is gone" for name in CONTROLLER_ATTRIBUTES if not hasattr(controller, name)]


def check() -> list[str]:
    """What the installed Ray lacks of the above (empty when all is there; the controller's own attributes:
    ``check_controller``, on a live one)."""
    import ray
    from ray._private import services
    from ray.train._internal.storage import StorageContext
    from ray.tune import TuneContext
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial
    from ray.tune.impl.tuner_internal import TunerInternal
    from ray.tune.schedulers import TrialScheduler

    problems = []
    if not ray.__version__.startswith(TESTED + "."):
        problems.append(f"Ray {ray.__version__} installed; tunekit's uses of Ray internals were checked on {TESTED}")
    wanted = [(TuneContext, "get_storage"), (TunerInternal, "get_run_config"),
              (TuneController, "_mark_trial_to_checkpoint"), (TrialScheduler, "_supports_buffered_results"),
              (TuneController, "stop_trial"), (TuneController, "_set_trial_status"), (Trial, "set_status"),
              (Trial, "is_saving"), (Trial, "local_path"), (Trial, "has_reported_at_least_once")]
    problems += [f"{cls.__module__}.{cls.__name__}.{name} is gone" for cls, name in wanted if not hasattr(cls, name)]
    problems += _census_problems()
    if not callable(getattr(services, "find_bootstrap_address", None)):
        problems.append("ray._private.services.find_bootstrap_address is gone")
    if "trial_working_directory" not in dir(StorageContext):
        problems.append("ray.train._internal.storage.StorageContext.trial_working_directory is gone")
    return problems


def _census_problems() -> list[str]:
    """What stops ``quiet_environment`` from skipping Ray's callback census: the function gone, or ``tune.run``
    no longer calling it through its module (a replaced attribute would then not be the one called)."""
    try:
        import ray.tune.tune as tune_module
        from ray.air._internal import usage
    except ImportError as e:
        return [f"Ray's callback census cannot be skipped: {e}"]
    if not callable(getattr(usage, "tag_callbacks", None)):
        return ["ray.air._internal.usage.tag_callbacks is gone"]
    if getattr(tune_module, "air_usage", None) is not usage:
        return ["ray.tune.tune no longer calls ray.air._internal.usage.tag_callbacks through its module"]
    return []
