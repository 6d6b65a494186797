"""``tunekit train`` and ``tunekit search``: one configuration, or a search of a space file on Ray."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from ..config import COMPILES, DEFAULT_STORAGE, HEADS, POOLS, PRECISIONS, PROGRESS_DISPLAYS, RESIZES, TrialConfig
from ..data.spec import kinds_help
from .common import GpuShare, setup_logging, strict_option, strict_spec, user_errors

D = TrialConfig  # the defaults every option shows are TrialConfig's


@click.command()
@click.option("--data", default=D.data, show_default=True,
              help=f"Dataset spec: {kinds_help()}.")
@click.option("--model", default=D.model, show_default=True, help="timm model name.")
@click.option("--pool", type=click.Choice(POOLS), default=D.pool, show_default=True)
@click.option("--head", type=click.Choice(HEADS), default=D.head, show_default=True)
@click.option("--resize", type=click.Choice(RESIZES), default=D.resize, show_default=True)
@click.option("--lr", type=float, default=D.lr, show_default=True, help="Peak learning rate (head).")
@click.option("--zero-init/--no-zero-init", default=None,
              help="timm's zero_init_last (zero gamma of the last BN per residual block). [default: backbone's]")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True, help="Start from timm's hub weights.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False),
              help="Local weights file (implies pretrained).")
@click.option("--epochs", type=int, default=D.epochs, show_default=True,
              help="Epochs (unfrozen, with pretrained weights).")
@click.option("--freeze-epochs", type=int, default=D.freeze_epochs, show_default=True,
              help="Head-only epochs first (pretrained).")
@click.option("--batch-size", type=int, default=D.batch_size, show_default=True)
@click.option("--img-size", type=int, help="Image size. [default: the dataset's, else the model's]")
@click.option("--precision", type=click.Choice(PRECISIONS), default=D.precision, show_default=True)
@click.option("--compile", "compile", type=click.Choice(COMPILES), default=D.compile, show_default=True,
              help="torch.compile the step; auto: when the run's steps amortize the compile measured here.")
@click.option("--device", default=D.device, show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--seed", type=int, default=D.seed, show_default=True)
@click.option("--threads", type=int, help="torch CPU threads. [default: torch's]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per epoch instead of a table.")
@click.option("--quiet", "-q", is_flag=True, help="Only the epoch rows (no setup summary).")
@strict_option
@user_errors
def train(as_json: bool, quiet: bool, weights: str | None, strict: bool, **options: Any) -> None:
    """Fine-tune one configuration and print its metrics after every epoch.

    \b
    Example (CPU, offline, about a minute):
      tunekit train --data shapes --model test_resnet --no-pretrained --epochs 3
    """
    from ..data.spec import DataSpec

    setup_logging(verbose=not quiet)
    DataSpec.parse(options["data"]).check_path()  # at once: before torch and timm load
    from ..loop import fit

    if weights:
        if options["pretrained"] is False:
            raise click.UsageError("--weights and --no-pretrained contradict each other: --weights loads pretrained "
                                   "weights from a file")
        options["pretrained"] = weights
    if strict:
        options["data"] = strict_spec(options["data"])
    cfg = TrialConfig.from_dict(options)
    printer = _JsonPrinter() if as_json else _TablePrinter()
    result = fit(cfg, printer)
    if result.status == "diverged":
        click.echo(f"diverged: the loss became non-finite; try a lower --lr than {cfg.lr}", err=True)
        sys.exit(1)


class _JsonPrinter:
    def __call__(self, metrics: dict[str, Any], state: object) -> None:
        click.echo(json.dumps(metrics), nl=True)
        sys.stdout.flush()


class _TablePrinter:
    def __init__(self) -> None:
        self.columns: list[str] | None = None

    def __call__(self, metrics: dict[str, Any], state: object) -> None:
        if self.columns is None:
            from ..config import METRICS  # the metric contract, in its order

            self.columns = [c for c in METRICS if c in metrics]
            click.echo("  ".join(f"{c:>12}" for c in self.columns))
        click.echo("  ".join(f"{_fmt(metrics.get(c)):>12}" for c in self.columns))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


@click.command()
@click.argument("space", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--num-gpus", type=float, help="GPUs this search may use in total. [default: all visible]")
@click.option("--gpus-per-trial", type=GpuShare(),
              help="GPU share per trial: 0.25 packs 4 trials on a GPU; 'auto' sizes it per model by a memory probe.")
@click.option("--cpus-per-trial", type=float, help="CPU cores per trial (also its torch threads).")
@click.option("--num-samples", type=int, help="Samples of the space (times the grid size).")
@click.option("--address", help="Join a Ray cluster started with 'ray start' (ADDR:PORT or 'auto').")
@click.option("--storage-path", default=DEFAULT_STORAGE, show_default=True, help="Where run folders go.")
@click.option("--name", help="Run folder name. [default: the space file's name]")
@click.option("--resume", is_flag=True, help="Continue the interrupted search of this name.")
@click.option("--restart", is_flag=True,
              help="Move a previous search of this name aside (NAME.old-DATE) and start over.")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; start nothing, download nothing.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting or fix a config key.")
@click.option("--progress", type=click.Choice(PROGRESS_DISPLAYS), default="auto", show_default=True,
              help="events: a line per trial event; summary: one live status (a periodic line when not a "
                   "terminal); auto: summary beyond 50 trials. Every event goes to the run folder's events.log.")
@click.option("--wandb", metavar="PROJECT",
              help="Log every trial to this Weights & Biases project too (pip install 'tunekit[wandb]').")
@click.option("--mlflow", metavar="URI",
              help="Log every trial to this MLflow tracking server too (pip install 'tunekit[mlflow]').")
@click.option("--verbose", "-v", is_flag=True, help="Ray's own output too.")
@strict_option
@user_errors
def search(space: Path, sets: tuple[str, ...], verbose: bool, **options: Any) -> None:
    """Run the hyperparameter search of a search-space file on Ray Tune.

    \b
    Examples:
      tunekit search search_spaces/demo.py                      # CPU, built-in data, minutes
      tunekit search search_spaces/planet.py --num-gpus 4 --gpus-per-trial 0.5
      tunekit search search_spaces/planet.py --address auto     # on the head of a 'ray start' cluster
      tunekit search search_spaces/demo.py --dry-run --set num_samples=4
      tunekit search search_spaces/demo.py --mlflow http://127.0.0.1:5000 --wandb backbones
    """
    from ..spec import parse_override
    from ..tuner import search as run_search  # checks every rule (an option and a --set that clash, ...)

    setup_logging(verbose=verbose)
    overrides = dict(parse_override(s) for s in sets)
    try:
        result = run_search(space, overrides=overrides, verbose=verbose, echo=click.echo, **options)
    except KeyboardInterrupt:
        sys.exit(130)
    if getattr(result, "interrupted", False):
        sys.exit(130)
    if getattr(result, "failed", False):  # the summary above said how many and why
        sys.exit(1)
