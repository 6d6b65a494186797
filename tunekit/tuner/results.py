"""The finish stage of a search: the trials read back from the run folder, the best trials' weights
kept and the other checkpoints removed, the report written, the summary printed.

    finish(state)            # after tuner.fit(), or after a Ctrl-C: state.outcome is the SearchResult
    state.outcome.best(5)    # the best trials by the search's metric
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import runfolder
from ..errors import TunekitError
from ..export import ENDED
from ..runfolder import Status
from .callbacks import tidy_ended
from .state import Search


@dataclass
class SearchResult:
    path: Path
    trials: pd.DataFrame  # one row per trial: config, final and best metrics, epochs, status
    metric: str
    mode: str
    trial_start_s: list[float] = dataclasses.field(default_factory=list)  # a free slot -> first step, seconds
    start_phases: list[dict[str, float]] = dataclasses.field(default_factory=list)  # each start, by phase
    planned: int = 0  # the trials the space asks for (a searcher makes them as slots free up)

    def __post_init__(self) -> None:
        if self.metric not in self.trials:  # no trial finished an epoch (all failed at their first batch)
            self.trials = self.trials.assign(**{self.metric: float("nan")})

    @property
    def errored(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == Status.ERRORED.value]

    @property
    def failed(self) -> bool:
        """Most trials (or all that ended) errored: the search says why and exits with code 1."""
        ended = len(self.trials) - self.unfinished
        return len(self.errored) > 0 and (len(self.errored) * 2 > ended or self.best(1).empty)

    @property
    def unfinished(self) -> int:
        """Trials that did not end (a stopped or killed search); ``--resume`` continues them."""
        return int(self.trials["status"].isin([Status.UNFINISHED.value, Status.NOT_STARTED.value]).sum())

    @property
    def doomed(self) -> bool:
        """tunekit stopped it because its first trials all failed alike before any trained an epoch
        (``tuner.failures.Doomed``, which records it in the run folder)."""
        return (self.path / runfolder.STOPPED_FILE).is_file()

    @property
    def interrupted(self) -> bool:
        """Trials did not end, or the searcher had not made them all (a stopped search; not a doomed one)."""
        return not self.doomed and (self.unfinished > 0 or self.planned > len(self.trials))

    @property
    def not_started(self) -> int:
        """Trials never started: made and left (an interrupted search), or never made by the searcher."""
        made = int((self.trials["status"] == Status.NOT_STARTED.value).sum())
        return made + max(0, self.planned - len(self.trials))

    def best_model(self, rank: int = 1, device: str = "auto"):
        """The trial of this ``rank`` (1: the best) as a loaded model, from the weights the search kept."""
        import tempfile

        from ..export import export_trial
        from ..predict import load_model

        with tempfile.TemporaryDirectory() as tmp:
            export_trial(self.path, Path(tmp), rank=rank)
            return load_model(tmp, device)

    def best(self, n: int = 5) -> pd.DataFrame:
        """The ``n`` best trials by the search's metric at their last epoch (the number the report
        ranks), errored ones left out."""
        ok = self.trials[(self.trials["status"] != Status.ERRORED.value) & self.trials[self.metric].notna()]
        return ok.sort_values(self.metric, ascending=self.mode == "min").head(n)


def finish(state: Search, hurry: bool = False) -> None:
    """Read the trials back, keep the best trials' weights, write the report into the run folder, print
    the ranked summary (and, for an interrupted search, how to continue it). ``hurry`` (a second Ctrl-C:
    stop now): results.csv only, no report and no upload to the trackers, whose open runs get a few
    seconds to close as unfinished. A Ctrl-C while the results are read or the report is written hurries
    too, then goes on (exit code 130)."""
    if hurry:
        _stop_now(state)
        return
    result = None
    try:
        result = _read(state)
        _report(state, result)
    except KeyboardInterrupt:  # Ctrl-C again once Ray had stopped: stop now (the trials read once)
        _stop_now(state, result)
        raise
    _close(state, result)


def _read(state: Search) -> SearchResult:
    """The trials as Ray saved them (its final state: finished trials are final), the kept weights tidied."""
    from .. import report

    spec, run_dir = state.spec, state.run_dir
    result = SearchResult(run_dir, report.load_run(run_dir), spec.metric, spec.mode, state.trial_start_s,
                          state.start_phases, planned=state.plan.trials)
    trials = result.trials
    ok = trials[trials["status"].isin(ENDED) & trials[spec.metric].notna()]
    tidy_ended(run_dir, dict(zip(ok["trial"], ok[spec.metric].astype(float))), spec)
    return result


def _close(state: Search, result: SearchResult) -> None:
    """The ranked summary and what to do next; ``state.outcome`` set."""
    spec, echo = state.spec, state.echo
    for line in summary(result):
        echo(line)
    if result.doomed:
        echo(f"stopped: the first {len(result.errored)} trial(s) to end all failed with the same error before any "
             f"trial trained an epoch, so the other {result.not_started} were not started (tunekit stops a search "
             f"that cannot succeed). Fix the error, then search again (--restart starts over).")
    elif result.interrupted:
        echo(f"interrupted: {result.unfinished + max(0, result.planned - len(result.trials))} trial(s) unfinished or "
             f"not started. Continue with:\n"
             f"  tunekit search {spec.path or 'SPACE.py'} "
             f"--storage-path {state.storage} --name {spec.name} --resume")
    state.outcome = result


def _report(state: Search, result: SearchResult) -> None:
    """The report in the run folder, then to the trackers."""
    from .. import report

    run_dir, echo = state.run_dir, state.echo
    try:
        built = report.build(result.trials, screens=report.load_screens([run_dir]))
        report.write(built, run_dir, tensorboard_dir=run_dir / runfolder.REPORT_EVENTS_DIR)
    except Exception as e:  # noqa: BLE001 - the search's results are safe on disk; the report is extra
        echo(f"warning: could not write the report ({type(e).__name__}: {e}); run 'tunekit report {run_dir}'")
    if state.trackers:
        from .trackers import upload_reports

        upload_reports(state.trackers, run_dir, result, echo)


def _stop_now(state: Search, result: SearchResult | None = None) -> None:
    """A second Ctrl-C: results.csv only; the trackers' open runs get a few seconds to close (before the
    trials are read back, where ``result`` has not read them yet, so a third Ctrl-C leaves none open)."""
    if state.trackers:
        from .trackers import stop_trackers

        stop_trackers(state.trackers)
    if result is None:
        try:
            result = _read(state)
        except TunekitError:  # stopped while Ray stopped, before it had copied any trial's files to the run folder
            state.echo(f"stopped at once (a second Ctrl-C), before any trial's record reached {state.run_dir}: "
                       f"nothing to report; search again (--restart starts over)")
            return
    result.trials.to_csv(state.run_dir / "results.csv", index=False)
    state.echo(f"stopped at once (a second Ctrl-C): results.csv written, no report (tunekit report {state.run_dir} "
               f"writes it)")
    _close(state, result)


def summary(result: SearchResult, n: int = 5) -> list[str]:
    """A short ranked table of the best trials, why trials failed (if any did), where the results are."""
    df = result.trials
    counts = df["status"].value_counts().to_dict()
    lines = ["trials: " + ", ".join(f"{v} {k}" for k, v in counts.items())]
    lines += failure_lines(result) + compile_summary(df)
    best = result.best(n)
    if len(best):
        cols = [c for c in ("model", "pool", "head", "resize", "lr", "zero_init") if c in best]
        show = best[cols + [result.metric, "fit_time", "gpu_mem", "epochs_run"]].copy()
        show.insert(0, "rank", range(1, len(show) + 1))
        lines.append(f"best {min(n, len(show))} by {result.metric} at each trial's last epoch (as the report):")
        lines += ["  " + line for line in show.to_string(index=False, float_format=lambda v: f"{v:.4g}").splitlines()]
    written = "report.md, report.html, results.csv, ranking.csv" if (result.path / "report.md").is_file() \
        else "results.csv"
    lines.append(f"results: {result.path} ({written})")
    lines.append(f"curves:  tensorboard --logdir {result.path}")
    return lines


def compile_summary(trials: pd.DataFrame) -> list[str]:
    """compile="auto": how many trials compiled and how many ran eager, with the first one's reasons (each trial
    decides on its own expected work: ``compiled.decide``)."""
    if "compile_why" not in trials:
        return []
    auto = trials[trials["compile_why"].astype(str).str.startswith("auto")]
    if auto.empty:
        return []
    done = auto["compiled"].fillna(False).astype(bool)
    lines = [f"compile=auto: {int(done.sum())} trial(s) compiled, {int((~done).sum())} eager"]
    for flag in (True, False):
        rows = auto[done == flag]
        if len(rows):
            lines.append(f"  e.g. {rows['model'].iloc[0]}: {rows['compile_why'].iloc[0]}")
    return lines


def failure_lines(result: SearchResult, distinct: int = 3) -> list[str]:
    """How many trials failed, and the first ``distinct`` error messages, each with how many trials
    it ended and the folder of the first one (its error.txt holds the full traceback)."""
    errored = result.errored
    if errored.empty:
        return []
    messages = errored["error"].fillna("unknown error") if "error" in errored else "unknown error"
    groups = errored.assign(error=messages).groupby("error", sort=False)
    first = sorted(groups, key=lambda g: g[1].index.min())
    lines = [f"{len(errored)} of {len(result.trials)} trial(s) failed" + (":" if len(first) == 1 else
             f" with {len(first)} different errors:")]
    for message, trials in first[:distinct]:
        lines.append(f"  {len(trials)} x {message}")
        lines.append(f"      full traceback: {Path(trials['path'].iloc[0]) / runfolder.ERROR_FILE}")
    if len(first) > distinct:
        lines.append(f"  ... and {len(first) - distinct} other error(s): see the 'error' column of results.csv")
    return lines
