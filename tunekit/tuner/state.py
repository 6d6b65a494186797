"""What a search's stages (``tuner.flow``) pass along: the ``Search`` (what was asked, found and decided),
its ``Plan`` and what its run folder already held (``Previous``).

    state = Search(spec, SearchOptions(dry_run=True), storage, session)
    state.previous, state.plan, state.shares, state.step_times, state.outcome      # filled in by the stages
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_STORAGE
from ..gpu_share import fraction_text
from ..spec import SearchSpec

if TYPE_CHECKING:
    from ..gpu_share import AutoShares
    from ..prepare import DataFacts
    from ..prescreen import Screen
    from .session import RaySession


@dataclass
class SearchOptions:
    """How to run a search (``tunekit search``'s options; the space's own settings are in the spec)."""

    num_gpus: float | None = None  # GPUs the search may use in total (a limit, also on a cluster)
    address: str | None = None  # join the Ray cluster there ('auto': the one on this machine)
    storage_path: str | Path = DEFAULT_STORAGE
    resume: bool = False  # continue the interrupted search of this name
    restart: bool = False  # move a previous search of this name aside and start over
    dry_run: bool = False  # plan and print; start and download nothing
    verbose: bool = False  # Ray's own output too
    strict: bool = False  # unreadable images are an error, not a warning
    progress: str = "auto"  # events | summary | auto (tuner.progress)
    echo: Callable[[str], None] = print


@dataclass
class Search:
    """One search as it goes through its stages."""

    spec: SearchSpec  # what runs (after a pre-screen: the kept models)
    options: SearchOptions
    storage: Path
    session: RaySession
    original: SearchSpec | None = None  # the space as its file gave it (a pre-screened search's fingerprint)
    previous: Previous | None = None
    screen: Screen | None = None
    plan: Plan | None = None
    shares: AutoShares | None = None  # gpus_per_trial='auto': the measured share of each model (tuner.measure)
    step_times: dict | None = None  # packed trials: each network's steps timed alone (tuner.measure), by StepKey text
    facts: DataFacts | None = None  # what the prepared data holds (one machine: tuner.nodes.prepare_local)
    checkpoints: bool = True  # False: the storage is not shared by every node
    notes: list[str] = field(default_factory=list)  # what a dry run adds to the plan's lines
    trial_start_s: list[float] = field(default_factory=list)  # each trial: a free slot -> its first step
    start_phases: list[dict[str, float]] = field(default_factory=list)  # each trial run's start, by phase
    trackers: list = field(default_factory=list)  # tuner.trackers.Detached: W&B, MLflow (the report goes there too)
    resolved: dict = field(default_factory=dict)  # tracking.resolve: each tracker's settings, defaults filled in
    tracker_notes: list = field(default_factory=list)  # and what resolve said of them (a tracker turned off)
    instance: str = ""  # this search's identity: kept by --resume, new for a new search or --restart
    outcome: Any = None  # set by the stage that ends the search: its SearchResult, or a dry run's Plan

    @property
    def run_dir(self) -> Path:
        return self.storage / self.spec.name

    @property
    def restoring(self) -> bool:
        return self.previous is not None and self.previous.exists

    def echo(self, line: str) -> None:
        self.options.echo(line)


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
    finished: bool = False  # the run folder holds this search, finished
    capped: bool = False  # Ray runs at most ``concurrency`` trials at once (--num-gpus below what Ray counts)
    asked_gpus: float | None = None  # the share asked for, before it was spread over the GPUs

    @property
    def max_concurrent(self) -> int | None:
        """The limit on trials at once to hand to Ray: the plan's, where Ray would not keep to it."""
        return self.concurrency if self.capped else None

    @property
    def gpu_text(self) -> str:
        if self.gpu_auto:
            return f"auto GPU share (at least {fraction_text(self.gpus_per_trial)})"
        # Ray places fractions best-fit, filling one GPU before the next: the share is what spreads them
        why = f"{self.concurrency} trial(s) at once on {self.total_gpus:g} GPU(s)"
        spread = (f" (raised from {fraction_text(self.asked_gpus)}: {why})"
                  if self.asked_gpus is not None and self.asked_gpus != self.gpus_per_trial else "")
        return f"{fraction_text(self.gpus_per_trial)} GPU{spread}"

    @property
    def epoch_budget(self) -> int:
        return self.trials * self.max_epochs

    def lines(self, spec: SearchSpec) -> list[str]:
        asha = (f"ASHA on epochs (grace {self.asha['grace_period']}, reduction {self.asha['reduction_factor']}, "
                f"max {self.max_epochs})" if self.asha else "no early stopping")
        return [
            f"search {self.name!r} -> {self.path}"
            + (" (already finished)" if self.finished else " (resuming)" if self.resume else ""),
            f"  space    {spec.path or '-'}: {self.trials} trial(s), searcher {self.searcher}, {asha}",
            f"  data     {spec.data}",
            f"  metric   {spec.metric} ({spec.mode})",
            f"  per trial {self.cpus_per_trial:g} CPU, {self.gpu_text}; "
            f"up to {self.concurrency} at once on {self.total_cpus:g} CPU / {self.total_gpus:g} GPU",
            f"  budget   at most {self.epoch_budget} epochs ({self.trials} x {self.max_epochs})",
        ]


@dataclass
class Previous:
    """What a run folder already holds for a search of this name."""

    path: Path
    exists: bool  # a search Ray can continue
    same_space: bool = True
    finished: bool = False  # every trial of the space ended (completed, stopped, errored)
    trials: int = 0
    errored: int = 0  # trials that failed (--resume retries them)
    when: str = ""  # when its state was last saved
    stopped: str = ""  # tunekit stopped it: its first trials all failed with this error (tuner.failures)
    instance: str = ""  # the search instance it holds (its trackers' identity)

    def done(self, resume: bool) -> bool:
        """Finished, and not to be continued (``--resume`` of a finished search retries its errored trials;
        a search stopped because it could not succeed is done, and refused to ``--resume``)."""
        return self.exists and (bool(self.stopped) or self.finished and not (resume and self.errored))

    def refusal(self) -> str:
        if self.stopped:
            return (f"--resume: {self.path} holds a search tunekit stopped because its first trials all failed "
                    f"with {self.stopped!r}: fix that, then search again with --restart (its other trials "
                    f"were never made, and continuing would fail alike)")
        return (f"{self.path} holds a search made from a different space; use another --name, or --restart to "
                f"move that folder aside and start over")

    def finished_lines(self) -> list[str]:
        if self.stopped:
            return [f"search {self.path.name!r} was stopped on {self.when}: its first {self.errored} trial(s) all "
                    f"failed with the same error; results in {self.path}",
                    f"once the error is fixed, search again: --restart (moves {self.path.name} aside to "
                    f"{self.path.name}.old-DATE and starts over)"]
        errored = f", {self.errored} errored (--resume retries them)" if self.errored else ""
        return [f"search {self.path.name!r} already finished on {self.when}: {self.trials} trial(s){errored}; "
                f"results in {self.path}",
                f"to search again: --name NEW, or --restart (moves {self.path.name} aside to "
                f"{self.path.name}.old-DATE and starts over)"]
