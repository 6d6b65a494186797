"""The tunekit command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from click.testing import CliRunner

from tunekit.cli import main


def test_train_acceptance_run_learns_shapes():
    """The engine's done-when command, as a real process: 3 epochs, error_rate <= 0.35."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tunekit.cli", "train", "--data", "shapes", "--model", "test_resnet",
         "--no-pretrained", "--epochs", "3", "--json"],
        capture_output=True, text=True, timeout=900,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["error_rate"] <= 0.35, rows
    assert "test_resnet on cpu (fp32)" in proc.stderr  # setup summary goes to stderr, JSON to stdout
    print(f"acceptance run: {seconds:.1f}s wall, final error_rate {rows[-1]['error_rate']:.3f}")


def test_train_prints_an_epoch_table(small_shapes):
    result = CliRunner().invoke(main, [
        "train", "--data", f"folder:{small_shapes}", "--model", "test_resnet", "--no-pretrained",
        "--epochs", "2", "--img-size", "32", "--batch-size", "32", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "fit_time",
                                "images_per_s", "gpu_mem", "lr"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2"]


def test_data_shapes_and_prepare(tmp_path):
    runner = CliRunner()
    out = tmp_path / "shapes"
    result = runner.invoke(main, ["data", "shapes", str(out), "--n", "60", "--size", "24", "--seed", "1"])
    assert result.exit_code == 0 and f"--data folder:{out}" in result.output
    assert len(list(out.glob("*/*.jpg"))) == 60
    result = runner.invoke(main, ["data", "prepare", f"folder:{out}", "--resize", "squish", "--img-size", "24"])
    assert result.exit_code == 0, result.output
    assert "48 train / 12 valid images, 6 classes (single-label)" in result.output
    result = runner.invoke(main, ["data", "shapes", str(tmp_path / "ml"), "--n", "30", "--multilabel"])
    assert result.exit_code == 0 and (tmp_path / "ml" / "labels.csv").is_file()


def test_the_command_line_imports_no_torch_ray_or_timm_until_a_command_runs():
    """`tunekit --help` and bad input answer at once: the CLI's modules load none of the heavy libraries."""
    import subprocess
    import sys

    code = ("import sys, tunekit.cli; heavy = sorted(m for m in ('torch', 'ray', 'timm', 'pandas') if m in sys.modules);"
            " print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


EXIT = """
import gc
import sys

if sys.argv[1] == "tunekit":
    import tunekit, timm  # timm's own `import wandb` (where W&B is installed) finds nothing
    import timm.utils.summary
    print("wandb imported:", "wandb" in sys.modules, hasattr(timm.utils.summary, "wandb"))
    import wandb  # after timm: the whole package

    print("wandb after timm:", callable(getattr(wandb, "init", None)))


class Cycle:
    def __del__(self):
        print("collected at exit")


gc.disable()  # no collection before the exit's own (the interpreter's last collections run all the same)
cycle = Cycle()
cycle.me = cycle
del cycle  # garbage only Python's final collections would find
if sys.argv[1] == "tunekit":
    from tunekit.cli import entry

    sys.argv = ["tunekit", "--version"]
    entry()
"""


def test_the_command_ends_without_the_final_collections_and_timm_does_not_import_wandb():
    """The command's process ends as soon as its work is done (``tunekit._exit``): Python's last garbage
    collections, seconds with torch and timm loaded, are skipped (the same process without the command's entry
    collects its garbage at exit). timm's import does not import W&B (``tunekit._compat``)."""
    import importlib.util

    done = {how: subprocess.run([sys.executable, "-c", EXIT, how], capture_output=True, text=True, timeout=120)
            for how in ("tunekit", "python")}
    assert all(d.returncode == 0 for d in done.values()), {h: d.stderr[-2000:] for h, d in done.items()}
    assert "collected at exit" in done["python"].stdout and "collected at exit" not in done["tunekit"].stdout
    assert "version" in done["tunekit"].stdout, done["tunekit"].stdout
    assert importlib.util.find_spec("wandb") is not None  # the test extra installs it: timm would import it
    assert "wandb imported: False False" in done["tunekit"].stdout, done["tunekit"].stdout
    assert "wandb after timm: True" in done["tunekit"].stdout, done["tunekit"].stdout
