"""A fit time the study's score can trust when trials share GPUs: each trial's work at the speed its
network trains alone on the machine (``fit_time_unshared``), beside the wall time it measured packed.

The study scores ``error_rate * (fit_time + 80)``. A packed trial's fit_time also holds the time the
trials beside it took from it (efficientnet_b0 measured 50.9 s for 4 epochs with 7 others on an H200), so a
packed search would rank models partly by what happened to run next to them. When a search packs trials
onto GPUs, its measurement stage (``measure``, before any trial, with the trials' backend settings: cuDNN's
autotuner on) times each network's steps alone: train, frozen train, validation, in seconds per image, eager
and, where the space compiles, compiled, with the compiles a run pays. They are kept in the run folder
(``runfolder.STEP_TIMES_FILE``, by ``machine.StepKey`` text, the precision resolved); each trial's work (its
images x epochs, frozen and not, and its validation passes) at its own network's speeds, compiled or eager
as it ran, and for a compiled trial its compiles (warm: what a trial pays after the stage), is its
``fit_time_unshared`` (``unshared_fit_time``). A trial with a GPU to itself ran unshared: its fit_time is its
unshared time.

The alone times are the bare steps' (``device.RandomSteps``), without the loop's data path, which
``tunekit bench`` measures at >= 0.9 of the step: fit_time_unshared is the time the trial's steps take,
a little below what the trial would measure alone, the same way for every trial of the search.
"""

from __future__ import annotations

import json
from pathlib import Path

from .compiled import Work, compile_costs, seconds

TIMES = ("train_s", "frozen_s", "eval_s")  # seconds per image: train step, frozen-body train step, eval


def unshared_fit_time(times: dict[str, float], n_train: int, n_valid: int, frozen_epochs: int,
                      epochs: int, compiled: bool = False) -> float:
    """Seconds of ``epochs`` epochs (the first ``frozen_epochs`` of them with the body frozen), each a pass
    over ``n_train`` images and a validation pass over ``n_valid``, at ``times``' speeds; ``compiled``: with
    the compiles such a run pays (``compiled.compile_costs``)."""
    work = Work.of(n_train, n_valid, 1, frozen_epochs, epochs)  # (what it ran: a run stopped frozen never unfroze)
    compiles = sum(times.get(k, 0.0) * share for k, share in compile_costs(work).items()) if compiled else 0.0
    return seconds(work, times) + compiles


def save(times: dict[str, dict[str, float]], path: Path) -> None:
    path.write_text(json.dumps(times, indent=1, sort_keys=True))


def load(path: Path) -> dict[str, dict[str, float]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
