"""``tunekit bench`` (what this machine does with these backbones) and ``tunekit data`` (datasets ahead of a search)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..config import PRECISIONS, RESIZES, TrialConfig
from .common import setup_logging, strict_option, strict_spec, user_errors

D = TrialConfig


@click.command()
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
@click.option("--compile", "compile", is_flag=True,
              help="Also through torch.compile: compiled step and loop, compile time (kept in the machine's book).")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True,
              help="Ceiling and loop runs per model, alternated, each keeping its best (1: a quick look).")
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
    from ..bench import bench as run_bench
    from ..catalog import check_model_name

    setup_logging(verbose=False)
    names = [m.strip() for m in models.split(",") if m.strip()]
    for name in names:
        check_model_name(name)
    try:
        counts = [int(k) for k in pack.split(",")] if pack else None
    except ValueError:
        raise click.BadParameter(f"{pack!r}: give trial counts such as 1,2,4", param_hint="--pack") from None
    records = run_bench(names, echo=click.echo, pack=counts, **options)
    if trial_start and records:  # under Ray: measured where searches live
        from ..tuner.trial_start import measure_trial_start

        records[0].trial_start_s = measure_trial_start(names[0], click.echo, trials=trial_start)
    if json_path:
        json_path.write_text(json.dumps([r.as_dict() for r in records], indent=2))
        click.echo(f"wrote {json_path}")


@click.group()
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
    from ..data.shapes import write_shapes

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
    from .. import data as tkdata

    setup_logging(verbose=True)
    ds = tkdata.load(strict_spec(spec) if strict else spec, resize, img_size)
    kind = "multi-label" if ds.multilabel else "single-label"
    click.echo(f"{spec}: {len(ds.train_index)} train / {len(ds.valid_index)} valid images, "
               f"{len(ds.classes)} classes ({kind}); cache {ds.cache.path}")


@click.group()
def weights() -> None:
    """Pretrained weights offline: import a file where pretrained=True finds it, list what is here."""


@weights.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", required=True, help="The timm model the weights are for, e.g. tf_efficientnet_lite0.")
@user_errors
def weights_import(file: Path, model: str) -> None:
    """Map a foreign weights file onto a timm model and install it in this machine's Hugging Face cache.

    The tensors are matched by name, else by order and shape; any mismatch is refused. Afterwards
    pretrained=True (tunekit's searches, or timm's own) loads them offline. On a cluster, import on
    every node (a search checks every node's weights before any trial).

    \b
    Example:
      tunekit weights import efficientnet-lite0-57934424.pth --model tf_efficientnet_lite0
    """
    from ..errors import TunekitError

    setup_logging(verbose=False)
    if not file.expanduser().is_file():  # at once, before torch and timm load
        raise TunekitError(f"weights file {str(file)!r} does not exist")
    from ..weights import import_weights

    path, how = import_weights(file, model)
    click.echo(f"{file} -> {model} (mapped {how}); installed as {path}")


@weights.command("list")
@click.argument("space", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--models", help="Comma-separated timm model names (instead of a space file's).")
@user_errors
def weights_list(space: Path | None, models: str | None) -> None:
    """Say, per model, whether its pretrained weights are on this machine (offline) or would be downloaded.

    \b
    Examples:
      tunekit weights list search_spaces/planet.py
      tunekit weights list --models tf_efficientnet_lite0,resnet18
    """
    from ..weights import availability, hub_cache

    setup_logging(verbose=False)
    if (space is None) == (models is None):
        raise click.UsageError("give a space file or --models (one of them)")
    if space is not None:
        from ..spec import load_spec

        names = load_spec(space).values_of("model") or []
    else:
        names = [m.strip() for m in models.split(",") if m.strip()]
    rows = availability(names)
    width = max((len(r.model) for r in rows), default=5)
    for r in rows:
        click.echo(f"{r.model:{width}s}  {r.status:8s}  {r.where}")
    here = sum(r.status == "offline" for r in rows)
    click.echo(f"{here} of {len(rows)} model(s) have their weights here (Hugging Face cache: {hub_cache()})")


@click.command()
@click.argument("data", required=False)
@click.option("--models", required=True, metavar="M1,M2,...|SPACE.py",
              help="Comma-separated timm model names, or a space file (its model choices).")
@click.option("--method", type=click.Choice(["prior", "logme", "hybrid"]), default="prior", show_default=True,
              help="prior: timm's ImageNet top-1, no forward pass; logme: LogME on DATA; hybrid: the prior's "
                   "shortlist (2 x --keep, else half) checked by LogME.")
@click.option("--keep", type=click.IntRange(min=1), help="How many would be kept (sizes the hybrid's shortlist).")
@click.option("--img-size", type=int, help="Image size. [default: as a trial of each model would train]")
@click.option("--max-images", type=click.IntRange(min=2),
              help="Training images per model, the same share of every class. [default: a tenth of them, at "
                   "least 500]")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True,
              help="--no-pretrained: the same architectures randomly initialised (a baseline; LogME only).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@user_errors
def rank(data: str | None, models: str, method: str, keep: int | None, as_json: bool, **options: Any) -> None:
    """Rank backbones before fine-tuning them: by timm's ImageNet top-1 (free), or by LogME on DATA's
    training images (a forward pass each, seconds), or the prior's shortlist checked by LogME.

    The prior is the default: on the published transferability benchmark it ranks fine-tuned results about as
    well as NLEEP and better than LogME (benchmarks/RESULTS.md). A filter, not an oracle: search what it keeps
    (prescreen = {"keep": N, "method": ...} in a space file does both).

    \b
    Examples:
      tunekit rank --models resnet50.tv_in1k,densenet121.tv_in1k,inception_v3.tv_in1k
      tunekit rank "fashion_mnist?n_train=300" --models tf_efficientnet_lite0,tf_efficientnet_lite1 --method logme
      tunekit rank folder:~/data/birds --models search_spaces/pets.py --method hybrid --keep 2
    """
    from ..prior import rank_by

    names = _model_list(models)
    if not options["pretrained"] and method != "logme":
        raise click.UsageError("--no-pretrained scores random initialisations: only with --method logme")

    def logme_of(todo: list[str]) -> list[Any]:
        if data is None:
            raise click.UsageError(f"--method {method}: LogME of {', '.join(todo)} needs DATA (timm's table has no "
                                   f"ImageNet top-1 for them, or the method asks for it)")
        from ..rank import rank_models

        setup_logging(verbose=False)
        echo_row = None if as_json else (lambda r: click.echo(f"  {r.model}: " + (
            f"LogME {r.logme:.4f} ({r.images} images, {r.seconds:.1f} s)" if r.logme is not None else r.status),
            err=True))
        return rank_models(data, todo, on_row=echo_row, **options)

    choices = rank_by(names, method, keep=keep, logme_of=logme_of)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in choices], indent=1))
        return
    click.echo(ranking_table(choices))
    if not any(c.top1 is not None or c.logme is not None for c in choices):
        click.echo("no model could be ranked: 'tunekit weights list --models ...' says where weights are missing, "
                   "and --method logme --no-pretrained scores random initialisations")


def ranking_table(choices) -> str:
    width = max(len(c.model) for c in choices)
    lines = [f"{'rank':>4s}  {'model':{width}s}  {'top-1':>6s}  {'LogME':>8s}  by"]
    for c in choices:
        top1 = f"{c.top1:6.2f}" if c.top1 is not None else f"{'-':>6s}"
        logme = f"{c.logme:8.4f}" if c.logme is not None else f"{'-':>8s}"
        lines.append(f"{c.rank or '-':>4}  {c.model:{width}s}  {top1}  {logme}  {c.by}")
    return "\n".join(lines)


def _model_list(models: str) -> list[str]:
    if models.endswith(".py"):
        from ..spec import load_spec

        names = load_spec(Path(models)).values_of("model")
        if not names:
            raise click.BadParameter(f"{models} has no list of model choices to rank", param_hint="--models")
        return [str(n) for n in names]
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise click.BadParameter("give model names, e.g. resnet18,convnext_tiny", param_hint="--models")
    return names


@click.command()
@click.option("--address", help="Also check the Ray cluster started with 'ray start' there (ADDR:PORT or 'auto').")
def doctor(address: str | None) -> None:
    """Can this machine (and cluster) run a search? Python, packages, GPUs, data root, offline weights.

    One line per check: ok, note (worth knowing), FAIL (why a search cannot run). Exit code 0 when a
    search can run, 1 when not.

    \b
    Examples:
      tunekit doctor
      tunekit doctor --address auto        # on the head node of a 'ray start' cluster
    """
    import sys

    from ..doctor import FAIL, diagnose

    setup_logging(verbose=False)
    checks = diagnose(address)
    for check in checks:
        click.echo(check.line())
    failed = [c for c in checks if c.status == FAIL]
    click.echo(f"{len(failed)} problem(s): a search cannot run here until they are fixed" if failed
               else "this machine can run a search")
    sys.exit(1 if failed else 0)
