"""``tunekit models``: timm's published tables (``tunekit.timm_table``), filtered and sorted: which backbones to
try, before any forward pass, and a search-space file for them with the study's recipe."""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from .common import user_errors

SORTS = {"top1": ("top1", True), "throughput": ("infer_samples_per_s", True), "params": ("params_m", False),
         "name": ("model", False)}


@click.command()
@click.option("--name", metavar="PATTERN", help="Keep tags matching this glob (*convnext*), or containing this text.")
@click.option("--max-params", type=float, metavar="M", help="At most this many million parameters.")
@click.option("--img-size", type=int, metavar="PX", help="Only tags whose native input size is this (224).")
@click.option("--min-throughput", type=float, metavar="IMG_S",
              help="At least this many images/s of inference (timm's benchmark: RTX 4090, AMP).")
@click.option("--pretrain", metavar="DATA", help="What they were (pre)trained on: in1k, in12k, in22k, laion2b, ...")
@click.option("--pareto", is_flag=True, help="Only the front of ImageNet top-1 against inference throughput.")
@click.option("--sort", "sort_by", type=click.Choice(list(SORTS)), default="top1", show_default=True)
@click.option("--top", type=int, metavar="N", help="The first N after sorting (the table on screen shows 25).")
@click.option("--csv", "as_csv", is_flag=True, help="Every column as CSV, for scripts.")
@click.option("--json", "as_json", is_flag=True, help="Every column as JSON, for scripts.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.html",
              help="Top-1 against throughput (plotly, opens offline), the front highlighted.")
@click.option("--space", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.py",
              help="Write a search-space file for these models with the study's recipe.")
@click.option("--data", "data_spec", default="pets", show_default=True, help="The dataset --space searches on.")
@user_errors
def models(name: str | None, max_params: float | None, img_size: int | None, min_throughput: float | None,
           pretrain: str | None, pareto: bool, sort_by: str, top: int | None, as_csv: bool, as_json: bool,
           plot: Path | None, space: Path | None, data_spec: str) -> None:
    """Which backbones to try: timm's own tables (ImageNet top-1/top-5, params, native size, pretrain data,
    throughput), one row per pretrained tag, with no forward pass.

    \b
    Examples:
      tunekit models --pareto --img-size 224 --max-params 30
      tunekit models --name '*convnext*' --pretrain in22k --csv > convnexts.csv
      tunekit models --pareto --img-size 224 --max-params 30 --space search_spaces/front.py --data pets
      tunekit models --img-size 224 --plot models.html
    """
    from ..errors import TunekitError
    from ..timm_table import load, source
    from ..timm_table import pareto as front_of

    if as_csv and as_json:
        raise TunekitError("--csv and --json contradict each other: give one")
    table = load()
    rows = table.select(name, max_params, img_size, min_throughput, pretrain)
    front = {r.model for r in front_of(rows)}
    if pareto:
        rows = [r for r in rows if r.model in front]
    key, descending = SORTS[sort_by]

    def order(r) -> tuple:  # missing values last, then by the column, then by name
        v = getattr(r, key)
        return (v is None, 0 if v is None else -v if descending else v, r.model)

    rows.sort(key=order)
    if top is not None:
        rows = rows[:top]
    if not rows:
        raise TunekitError("no pretrained tag passes these filters (tunekit models --help lists them)")
    if as_csv or as_json:
        _dump(rows, front, as_json)
    else:
        _table(rows, len(table), front, source(), top)
    if plot is not None:
        _plot(rows, front, plot)
        click.echo(f"plot: {plot}", err=as_csv or as_json)
    if space is not None:
        _space(rows, space, data_spec, img_size)
        click.echo(f"space: {space} ({len(rows)} models; check it with tunekit search {space} --dry-run)",
                   err=as_csv or as_json)


def _installed() -> tuple[str, frozenset[str]]:
    """The installed timm's version and names (arch and arch.tag), from tunekit's index of them: written the
    first time (importing timm once, seconds), then read without timm."""
    from importlib import metadata

    from .. import catalog

    if not catalog._index():
        catalog.write_index()
        catalog._index.cache_clear()
    return metadata.version("timm"), catalog._index()


def _dump(rows: list, front: set[str], as_json: bool) -> None:
    version, known = _installed()
    records = [{**asdict(r), "pareto": r.model in front, "installed_timm": version,
                "in_installed_timm": r.model in known if known else None} for r in rows]
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in rec.items()} for rec in records)


def _fmt(value: Any, spec: str) -> str:
    """``value`` formatted by ``spec`` (a width first), or '-' at that width."""
    return format(value, spec) if value is not None else "-".rjust(int(spec.split(".")[0] or 0))


def _table(rows: list, total: int, front: set[str], src: dict, top: int | None) -> None:
    shown = rows if top is not None else rows[:25]
    width = max(len(r.model) for r in shown)
    click.echo(f"{len(rows)} of {total} pretrained tags (timm's tables, commit {src['commit']}, {src['licence']}); "
               f"img/s: inference on an {src['infer']['gpu']} ({src['infer']['precision']}), training on an "
               f"{src['train']['gpu']} ({src['train']['precision']}, where timm lists it); * on the front of top-1 "
               f"against inference throughput")
    click.echo(f"  {'model':{width}s}  {'top1':>6s}  {'params M':>8s}  {'size':>4s}  {'infer img/s':>11s}  "
               f"{'train img/s':>11s}  pretrain")
    for r in shown:
        mark = "*" if r.model in front else " "
        click.echo(f"{mark} {r.model:{width}s}  {_fmt(r.top1, '6.2f')}  {_fmt(r.params_m, '8.1f')}  {r.img_size:4d}  "
                   f"{_fmt(r.infer_samples_per_s, '11.0f')}  {_fmt(r.train_samples_per_s, '11.0f')}  "
                   f"{r.pretrain or '-'}")
    if len(shown) < len(rows):
        click.echo(f"  ... {len(rows) - len(shown)} more (--top N shows N; --csv or --json all of them)")


def _plot(rows: list, front: set[str], path: Path) -> None:
    from ..report.charts import prior_chart

    path.write_text(prior_chart(rows, front))


SPACE = '''# Written by `{command}` on {date}: {n} backbone(s) from timm's published tables
# (ImageNet top-1, throughput), fine-tuned with the study's recipe: fastai's fine_tune (1 frozen + 5 epochs),
# pooling concat vs avg, squish, lr 0.008 vs 0.02, every trial to the end: {n} x 2 x 2 = {trials} trials.
# Check it first (nothing starts): tunekit search {path} --dry-run
from ray import tune

data = {data!r}
searcher = "grid"
asha = None  # the study ran every trial to the end; {{"grace_period": 1, "reduction_factor": 3}} stops the worst early
gpus_per_trial = 0.5

MODELS = [
{models}
]

space = {{
    "model": tune.grid_search(MODELS),
    "pool": tune.grid_search(["concat", "avg"]),
    "resize": "squish",
    "lr": tune.grid_search([0.008, 0.02]),
    "pretrained": True,
    "freeze_epochs": 1,
    "epochs": 5,
    "batch_size": 64,
    "img_size": {img_size},
}}
'''


def _space(rows: list, path: Path, data: str, img_size: int | None) -> None:
    sizes = [img_size] if img_size else sorted({r.img_size for r in rows})
    command = "tunekit models " + " ".join(a for a in sys.argv[2:]) if sys.argv[1:2] == ["models"] else "tunekit models"
    path.write_text(SPACE.format(command=command, date=time.strftime("%Y-%m-%d"), n=len(rows), trials=4 * len(rows),
                                 path=path, data=data, models="\n".join(f"    {r.model!r}," for r in rows),
                                 img_size=sizes[-1] if len(sizes) == 1 else 224))
