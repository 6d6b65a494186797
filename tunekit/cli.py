"""The ``tunekit`` command: a thin click layer over the library.

    tunekit train --data shapes --model test_resnet --no-pretrained --epochs 3
    tunekit data shapes ./shapes --n 4500
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .config import HEADS, POOLS, PRECISIONS, RESIZES, TrialConfig
from .errors import TunekitError

D = TrialConfig  # the defaults every option shows are TrialConfig's


class InputError(click.ClickException):
    """A TunekitError shown as one line, exit code 2 (bad input), no traceback."""

    exit_code = 2


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input (a TunekitError) is one line on stderr and exit code 2; ``--debug`` shows its traceback."""

    @click.option("--debug", is_flag=True, help="On an error, show the full traceback.")
    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TunekitError as e:
            if debug:
                raise
            raise InputError(str(e)) from None

    return wrapper


def strict_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--strict", is_flag=True,
                        help="Fail on unreadable images instead of skipping them with a warning.")(command)


def _strict(spec: str) -> str:
    """The data spec with ``strict=1``: unreadable images are an error."""
    from .data.spec import DataSpec

    return str(DataSpec.parse(spec).with_options(strict=True))


class GpuShare(click.ParamType):
    """A number of GPUs (0.25: a quarter), or 'auto'."""

    name = "FRACTION|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> float | str:
        if value == "auto" or isinstance(value, float):
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


def _setup_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    warnings.showwarning = lambda message, *args, **kwargs: click.echo(f"warning: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tunekit")
def main() -> None:
    """Which timm backbone, with which recipe, fine-tunes best on your data, for what cost?"""


@main.command()
@click.option("--data", default=D.data, show_default=True,
              help="Dataset spec: folder:PATH, csv:PATH, regex:PATH, pets[:PATH], planet[:PATH], shapes, "
                   "shapes-multilabel.")
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
    from .data.spec import DataSpec

    _setup_logging(verbose=not quiet)
    DataSpec.parse(options["data"]).check_path()  # at once: before torch and timm load
    from .loop import fit

    if weights:
        if options["pretrained"] is False:
            raise click.UsageError("--weights and --no-pretrained contradict each other: --weights loads pretrained "
                                   "weights from a file")
        options["pretrained"] = weights
    if strict:
        options["data"] = _strict(options["data"])
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
            from .config import METRICS  # the metric contract, in its order

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


@main.command()
@click.argument("space", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--num-gpus", type=float, help="GPUs this search may use in total. [default: all visible]")
@click.option("--gpus-per-trial", type=GpuShare(),
              help="GPU share per trial: 0.25 packs 4 trials on a GPU; 'auto' sizes it per model by a memory probe.")
@click.option("--cpus-per-trial", type=float, help="CPU cores per trial (also its torch threads).")
@click.option("--num-samples", type=int, help="Samples of the space (times the grid size).")
@click.option("--address", help="Join a Ray cluster started with 'ray start' (ADDR:PORT or 'auto').")
@click.option("--storage-path", default="~/ray_results", show_default=True, help="Where run folders go.")
@click.option("--name", help="Run folder name. [default: the space file's name]")
@click.option("--resume", is_flag=True, help="Continue the interrupted search of this name.")
@click.option("--restart", is_flag=True,
              help="Move a previous search of this name aside (NAME.old-DATE) and start over.")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; start nothing, download nothing.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting or fix a config key.")
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
    """
    from .spec import load_spec, parse_override

    _setup_logging(verbose=verbose)
    overrides = dict(parse_override(s) for s in sets)
    for key in ("gpus_per_trial", "cpus_per_trial", "num_samples", "name"):
        value = options.pop(key)
        if key in overrides and value is not None and overrides[key] != value:
            flag = "--" + key.replace("_", "-")
            raise click.UsageError(f"{flag} {value} and --set {key}={overrides[key]} contradict each other; give one")
        if value is not None:
            overrides[key] = value
    if options["resume"] and options["restart"]:
        raise click.UsageError("--resume and --restart contradict each other: continue the search, or start it over")
    spec = load_spec(space, overrides)  # bad input fails here, before Ray is imported
    from .tuner import search as run_search

    try:
        result = run_search(spec, verbose=verbose, echo=click.echo, **options)
    except KeyboardInterrupt:
        sys.exit(130)
    if getattr(result, "interrupted", False):
        sys.exit(130)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the report files. [default: the run folder, for one run; else ./tunekit_report]")
@click.option("--constant", type=float, default=80.0, show_default=True,
              help="Score = error_rate * (fit_time + CONSTANT).")
@user_errors
def report(sources: tuple[str, ...], out: Path | None, constant: float) -> None:
    """Rank backbones by error, time and memory from runs or CSVs; write tables and plots.

    SOURCES are run folders (~/ray_results/NAME) or CSV files (tunekit's results.csv, or the
    study's export: dataset, model_name, error_rate, fit_time, GPU_mem). Several are merged,
    and each dataset gets its own section.

    \b
    Examples:
      tunekit report ~/ray_results/demo
      tunekit report ~/ray_results/pets ~/ray_results/planet --out report/
      tunekit report study_sweep.csv --out study/
    """
    from . import report as rp

    _setup_logging(verbose=False)  # warnings (a source that could not be read) as one line each
    runs = rp.load_sources(list(sources))
    built = rp.build(runs, constant)
    single_run = len(sources) == 1 and Path(sources[0]).expanduser().is_dir()
    target = out or (Path(sources[0]).expanduser() if single_run else Path("tunekit_report"))
    files = rp.write(built, target, tensorboard_dir=target / "tunekit_report" if single_run and not out else None)
    for line in rp.terminal_summary(built):
        click.echo(line)
    click.echo(f"wrote {len(files)} files to {target}: " + ", ".join(f.name for f in files[:4]) + ", ...")


@main.command()
@click.option("--models", default="test_resnet,test_convnext,test_vit", show_default=True,
              help="Comma-separated timm model names.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--img-size", type=int, default=64, show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--n-images", type=int, default=4500, show_default=True, help="Generated images for the loop.")
@click.option("--threads", type=int, help="torch CPU threads. [default: torch's]")
@click.option("--pack", help="Also run this many trials of the first model at once on the device, e.g. 1,2,4: "
                             "aggregate images/s and peak memory of packed trials.")
@click.option("--trial-start", type=click.IntRange(min=3), is_flag=False, flag_value=8, default=None,
              metavar="[N]", help="Also measure a trial's start over N small trials (default 8; the first "
                                  "two start new workers): a free slot -> its first training step (needs Ray).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the records here.")
@user_errors
def bench(models: str, json_path: Path | None, pack: str | None, trial_start: int | None, **options: Any) -> None:
    """Measure the bare train step (ceiling), tunekit's loop and the data path on this machine.

    \b
    Examples:
      tunekit bench --models test_resnet,test_convnext,test_vit --img-size 64 --device cpu
      tunekit bench --models resnet18,convnext_tiny,vit_small_patch16_224 --img-size 224 --device cuda \\
        --precision bf16 --pack 1,2,4 --json gpu.json
    """
    from .bench import bench as run_bench
    from .model import check_model_name

    _setup_logging(verbose=False)
    names = [m.strip() for m in models.split(",") if m.strip()]
    for name in names:
        check_model_name(name)
    try:
        counts = [int(k) for k in pack.split(",")] if pack else None
    except ValueError:
        raise click.BadParameter(f"{pack!r}: give trial counts such as 1,2,4", param_hint="--pack") from None
    records = run_bench(names, echo=click.echo, pack=counts, **options)
    if trial_start and records:  # under Ray: measured where searches live
        from .tuner.trial_start import measure_trial_start

        records[0].trial_start_s = measure_trial_start(names[0], click.echo, trials=trial_start)
    if json_path:
        json_path.write_text(json.dumps([r.as_dict() for r in records], indent=2))
        click.echo(f"wrote {json_path}")


@main.group()
def data() -> None:
    """Datasets: generate the built-in data, download and decode a dataset ahead of a search."""


@data.command("shapes")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--multilabel", is_flag=True, help="Several shapes per image, csv (Planet) layout.")
@click.option("--n", type=int, default=4500, show_default=True, help="Number of images.")
@click.option("--size", type=int, default=64, show_default=True, help="Short side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def data_shapes(directory: Path, multilabel: bool, n: int, size: int, seed: int) -> None:
    """Write the built-in generated shapes dataset as real JPEG files.

    \b
    Example:
      tunekit data shapes ./shapes && tunekit train --data folder:./shapes --no-pretrained --model test_resnet
    """
    from .data.shapes import write_shapes

    if n < 12 or size < 16:
        raise click.UsageError("--n must be at least 12 and --size at least 16")
    write_shapes(directory, n=n, size=size, seed=seed, multilabel=multilabel)
    layout = f"csv:{directory}" if multilabel else f"folder:{directory}"
    click.echo(f"wrote {n} images to {directory} (use --data {layout})")


@data.command("prepare")
@click.argument("spec")
@click.option("--resize", type=click.Choice(RESIZES), default=D.resize, show_default=True)
@click.option("--img-size", type=int, default=224, show_default=True)
@strict_option
@user_errors
def data_prepare(spec: str, resize: str, img_size: int, strict: bool) -> None:
    """Download (if needed) and decode a dataset into the shared cache; print what it holds.

    \b
    Example:
      tunekit data prepare planet --resize squish --img-size 224
    """
    from . import data as tkdata

    _setup_logging(verbose=True)
    ds = tkdata.load(_strict(spec) if strict else spec, resize, img_size)
    kind = "multi-label" if ds.multilabel else "single-label"
    click.echo(f"{spec}: {len(ds.train_index)} train / {len(ds.valid_index)} valid images, "
               f"{len(ds.classes)} classes ({kind}); cache {ds.cache.path}")


if __name__ == "__main__":
    main()
