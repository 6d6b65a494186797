"""What a search leaves: ``tunekit report``, and the winner as a model: ``export``, ``predict``, ``evaluate``."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import PRECISIONS
from .common import setup_logging, user_errors

precision_option = click.option(
    "--precision", type=click.Choice(("trained", *PRECISIONS)), default="trained", show_default=True,
    help="trained: the trial's own where this device has it (bf16 as fp16 on GPUs without it; fp32 on a CPU).")


@click.command()
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
    from .. import report as rp

    setup_logging(verbose=False)  # warnings (a source that could not be read) as one line each
    runs = rp.load_sources(list(sources))
    built = rp.build(runs, constant, rp.load_screens(list(sources)))
    single_run = len(sources) == 1 and Path(sources[0]).expanduser().is_dir()
    target = out or (Path(sources[0]).expanduser() if single_run else Path("tunekit_report"))
    files = rp.write(built, target, tensorboard_dir=target / "tunekit_report" if single_run and not out else None)
    for line in rp.terminal_summary(built):
        click.echo(line)
    click.echo(f"wrote {len(files)} files to {target}: " + ", ".join(f.name for f in files[:4]) + ", ...")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rank", type=int, help="The trial's rank by the search's metric at its last epoch. [default: 1]")
@click.option("--trial", "trial_id", metavar="ID", help="The trial whose folder name contains ID (e.g. 3f2a1_00004).")
@user_errors
def export(run_dir: Path, out_dir: Path, rank: int | None, trial_id: str | None) -> None:
    """Write one trial of a search as a standalone model folder (model.safetensors, tunekit_model.json).

    Loading it needs neither Ray nor the run folder nor network: tunekit predict, tunekit evaluate,
    or tunekit.load_model(OUT_DIR) in Python.

    \b
    Examples:
      tunekit export ~/ray_results/demo best/                 # the best trial
      tunekit export ~/ray_results/demo second/ --rank 2
      tunekit export ~/ray_results/demo mine/ --trial 3f2a1_00004
    """
    from ..export import export_trial

    if rank is not None and trial_id is not None:
        raise click.UsageError("--rank and --trial contradict each other: give one")
    setup_logging(verbose=False)
    m = export_trial(run_dir, out_dir, rank=rank, trial=trial_id)
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in m["metrics"].items())
    click.echo(f"exported {m['source']['trial']} (rank {m['source']['rank']}, {m['source']['status']}): "
               f"{m['model']}, pool {m['pool']}, head {m['head']}, {len(m['classes'])} classes, {m['img_size']}px "
               f"{m['resize']}; {shown}")
    click.echo(f"model folder: {out_dir} (model.safetensors, tunekit_model.json)")


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also list the K likeliest classes.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the predictions to this CSV file instead of the terminal.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@precision_option
@user_errors
def predict(model_dir: Path, paths: tuple[Path, ...], top: int, csv_path: Path | None, batch_size: int,
            device: str, precision: str) -> None:
    """Label images with an exported model: files and folders (searched recursively).

    One line per image: path, label, probability (and the --top K classes with theirs); a multi-label
    model lists every label over its threshold. Unreadable files are listed and skipped; the exit code
    is then 1.

    \b
    Examples:
      tunekit predict best/ photo.jpg
      tunekit predict best/ ~/photos --top 3 --csv predictions.csv
    """
    import csv
    import sys

    from ..errors import TunekitError
    from ..export import read_manifest

    setup_logging(verbose=False)
    read_manifest(model_dir)  # the model folder first: it is the first argument
    for path in paths:  # at once, before torch and timm load
        if not path.expanduser().exists():
            raise TunekitError(f"{path.expanduser()} does not exist")
    from ..predict import image_paths, load_model

    files = image_paths(paths)
    model = load_model(model_dir, device, precision)
    header = ["path", "label", "probability"] + [f"{kind}_{k}" for k in range(1, top + 1) for kind in ("top", "p")]
    out = open(csv_path, "w", newline="") if csv_path is not None else sys.stdout  # noqa: SIM115 - or stdout
    writer, written, skipped = csv.writer(out), 0, []
    writer.writerow(header)
    try:
        for predictions, bad in model.predict_chunks(files, top, batch_size, progress=True):
            writer.writerows([p.source, " ".join(p.labels), f"{p.probability:.4f}"]
                             + [v for label, prob in p.top[:top] for v in (label, f"{prob:.4f}")] for p in predictions)
            written, skipped = written + len(predictions), skipped + bad
    finally:
        if csv_path is not None:
            out.close()
    if csv_path is not None:
        click.echo(f"wrote {written} prediction(s) to {csv_path}")
    if skipped:
        click.echo(f"warning: skipped {len(skipped)} unreadable image(s):\n  " + "\n  ".join(skipped), err=True)
        sys.exit(1)


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", "spec", required=True, help="A labelled dataset spec, e.g. folder:~/data/test.")
@click.option("--split", type=click.Choice(["all", "valid", "train"]), default="all", show_default=True,
              help="all: every labelled image; valid/train: the split as training made it from this spec.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for metrics.json, confusion.csv, confusion.png. [default: MODEL_DIR/evaluation]")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@precision_option
@user_errors
def evaluate(model_dir: Path, spec: str, split: str, out: Path | None, batch_size: int, device: str,
             precision: str) -> None:
    """Error rate, accuracy (f2 for multi-label) and a confusion matrix of an exported model on labelled data.

    \b
    Examples:
      tunekit evaluate best/ --data folder:~/data/test
      tunekit evaluate best/ --data shapes --split valid        # the trial's own validation
    """
    from ..data.spec import DataSpec
    from ..export import read_manifest

    setup_logging(verbose=False)
    read_manifest(model_dir)
    DataSpec.parse(spec).check_path()  # at once, before torch and timm load
    from ..evaluation import evaluate as run_evaluate
    from ..predict import load_model

    model = load_model(model_dir, device, precision)
    result = run_evaluate(model, spec, split, batch_size, progress=True)
    files = result.write(out or model_dir / "evaluation")
    shown = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    click.echo(f"{result.n_images} {split} images of {spec}: {shown}")
    if len(result.confusion) <= 12:
        click.echo(result.confusion.to_string())
    click.echo(f"wrote {', '.join(f.name for f in files)} to {files[0].parent}")
