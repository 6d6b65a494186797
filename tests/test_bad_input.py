"""Every bad input of README's "When the input is wrong" table, through the real CLI.

Each case builds its input on disk, runs ``tunekit ...`` in-process (click's runner), and checks
the exit code, that the message names the problem, that no traceback is shown, and that no Ray
was started for it. The README's table lists each case by its id with the message the user sees;
``test_readme_table_lists_every_case`` keeps the two in step.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray
from click.testing import CliRunner
from PIL import Image

from tunekit.cli import main

README = Path(__file__).parent.parent / "README.md"
TINY = ["--no-pretrained", "--model", "test_resnet", "--epochs", "1", "--img-size", "32", "--batch-size", "16",
        "--quiet"]


@dataclass
class Case:
    id: str
    args: Callable[[Path], list[str]]  # tmp folder -> CLI arguments (writing the input there)
    expect: str  # regex the output must match
    code: int = 2
    absent: str | None = None  # text the output must not hold


def space(tmp: Path, body: str, name: str = "space.py") -> str:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / name
    path.write_text("from ray import tune\n" + textwrap.dedent(body))
    return str(path)


GOOD = 'space = {"model": "test_resnet", "pretrained": False}\n'


def image_folder(tmp: Path, classes: dict[str, int], size: int = 40, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    root = tmp / "imgs"
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / cls / f"{i}.png")
    return root


def bad_images(tmp: Path) -> Path:
    """Two good classes plus one file of each unreadable kind."""
    root = image_folder(tmp, {"a": 24, "b": 24})
    (root / "a" / "zero.jpg").write_bytes(b"")
    (root / "a" / "text.jpg").write_text("not an image\n")
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "b" / "corrupt.png").write_bytes(good[:80] + bytes(range(256)) * 8 + good[80 + 2048:])
    return root


def odd_images(tmp: Path) -> Path:
    """Grayscale, RGBA, palette, 16-bit, tiny and huge images: all converted, none skipped."""
    root = image_folder(tmp, {"a": 16, "b": 16})
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (30, 50), dtype=np.uint8), "L").save(root / "a" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (30, 50, 4), dtype=np.uint8), "RGBA").save(root / "a" / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).convert("P").save(root / "a" / "pal.png")
    Image.fromarray(rng.integers(0, 65535, (30, 50), dtype=np.uint16)).save(root / "b" / "sixteen.png")
    Image.fromarray(rng.integers(0, 255, (3, 5, 3), dtype=np.uint8)).save(root / "b" / "tiny.png")
    Image.new("RGB", (6000, 4000), (90, 120, 30)).save(root / "b" / "huge.jpg", quality=70)
    return root


def csv_data(tmp: Path, header: str, rows: list[str]) -> Path:
    root = image_folder(tmp, {"train": 6})
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


CASES = [
    # ---- search-space files
    Case("space-missing", lambda t: ["search", str(t / "nope.py")],
         r"search-space file '.*nope.py' does not exist"),
    Case("space-shorthand", lambda t: ["search", Path(space(t / "search_spaces", GOOD, "demo.py")).stem],
         r"search-space file 'demo' does not exist \(did you mean 'search_spaces/demo.py'\?\)"),
    Case("space-syntax", lambda t: ["search", space(t, "epochs = 3\nspace = {\n")],
         r"space.py:3: syntax error: '\{' was never closed"),
    Case("space-exception", lambda t: ["search", space(t, "epochs = 3\nspace = {'lr': 1 / 0}\n")],
         r"space.py:3: ZeroDivisionError: division by zero"),
    Case("space-no-space", lambda t: ["search", space(t, "epochs = 3\n")],
         r"no 'space' defined"),
    Case("space-unknown-setting", lambda t: ["search", space(t, "epoch = 3\n" + GOOD)],
         r"unknown setting 'epoch' \(did you mean 'epochs'\?\)"),
    Case("space-unknown-key", lambda t: ["search", space(t, 'space = {"modle": "test_resnet"}\n')],
         r"unknown key 'modle' in space \(did you mean 'model'\?\)"),
    Case("space-wrong-type", lambda t: ["search", space(t, 'space = {"batch_size": "big"}\n')],
         r"space\['batch_size'\]: batch_size must be a number, got 'big'"),
    Case("space-negative-lr", lambda t: ["search", space(t, 'space = {"lr": tune.choice([0.01, -0.1])}\n')],
         r"lr must be a positive number, got -0.1"),
    Case("space-gpus-over-one", lambda t: ["search", space(t, "gpus_per_trial = 2\n" + GOOD), "--dry-run"],
         r"gpus_per_trial=2: a trial trains on one GPU \(no data-parallel training\)"),
    Case("space-bad-choice", lambda t: ["search", space(t, 'space = {"pool": tune.grid_search(["avg", "foo"])}\n')],
         r"pool must be one of 'avg', 'concat', got 'foo'"),
    Case("space-grid-under-optuna",
         lambda t: ["search", space(t, 'searcher = "optuna"\nspace = {"lr": tune.grid_search([0.1, 0.2])}\n')],
         r"tune.grid_search in 'lr' cannot be used with searcher 'optuna' \(TPE samples\); use tune.choice"),
    Case("space-zero-trials", lambda t: ["search", space(t, 'space = {"lr": tune.grid_search([])}\n')],
         r"tune.grid_search for 'lr' is empty: the space has no trials"),
    Case("space-bad-override", lambda t: ["search", space(t, GOOD), "--set", "num_sample=4"],
         r"--set num_sample: unknown setting or config key \(did you mean 'num_samples'\?\)"),
    Case("space-bad-override-value", lambda t: ["search", space(t, GOOD), "--set", "model=convnext_tinny"],
         r"^Error: --set model=convnext_tinny: unknown timm model 'convnext_tinny' \(did you mean 'convnext_tiny'",
         absent="space.py"),
    # ---- models
    Case("model-unknown", lambda t: ["train", "--model", "resnet181", "--no-pretrained"],
         r"unknown timm model 'resnet181' \(did you mean 'resnet18'"),
    Case("model-unknown-in-space", lambda t: ["search", space(t, 'space = {"model": "convnext_tinny"}\n')],
         r"unknown timm model 'convnext_tinny' \(did you mean 'convnext_tiny'"),
    Case("model-weights-offline", lambda t: ["train", "--model", "resnet18", "--data", "shapes"],
         r"could not get pretrained weights for 'resnet18' \(HF_HUB_OFFLINE is set"),
    Case("model-no-zero-init", lambda t: ["train", "--data", f"folder:{image_folder(t, {'a': 24, 'b': 24})}",
                                          *TINY, "--model", "test_vit", "--zero-init"],
         r"warning: zero_init=True: not supported by test_vit \(VisionTransformer has no zero_init_last\)",
         code=0),
    # ---- data
    Case("data-missing", lambda t: ["train", "--data", f"folder:{t / 'nope'}", *TINY],
         r"data folder '.*nope' does not exist"),
    Case("data-not-a-spec", lambda t: ["train", "--data", str(image_folder(t, {"a": 2, "b": 2})), *TINY],
         r"is a directory: write 'folder:"),
    Case("data-unknown-kind", lambda t: ["train", "--data", "imagenet", *TINY],
         r"unknown data kind 'imagenet' .*did you mean 'imagenette'"),
    Case("data-unknown-option", lambda t: ["train", "--data", "shapes?nn=3", *TINY],
         r"unknown option 'nn' for data kind 'shapes' \(did you mean 'n'\?\); options: valid_pct, seed, strict, "),
    Case("data-empty", lambda t: ["train", "--data", f"folder:{(t / 'empty').mkdir() or t / 'empty'}", *TINY],
         r"no images found in '.*empty'"),
    Case("data-one-class", lambda t: ["train", "--data", f"folder:{image_folder(t, {'a': 10})}", *TINY],
         r"found 1 class\(es\) \['a'\]; need at least 2"),
    Case("data-csv-columns", lambda t: ["train", "--data", f"csv:{csv_data(t, 'file,label', ['0,x'])}", *TINY],
         r"has no column\(s\) \['image_name', 'tags'\]; its columns: \['file', 'label'\]"),
    Case("data-csv-missing-files",
         lambda t: ["train", "--data", f"csv:{csv_data(t, 'image_name,tags', ['0,x', 'gone,y'])}?suffix=.png",
                    *TINY],
         r"1 row\(s\) of '.*labels.csv' name missing files: .*gone.png"),
    Case("data-unreadable-skipped", lambda t: ["train", "--data", f"folder:{bad_images(t)}", *TINY],
         r"warning: skipped 4 unreadable image\(s\):\n  .*text.jpg: not an image .*\n  .*zero.jpg: empty file \(0 bytes\)"
         r"\n  .*corrupt.png: corrupt image .*\n  .*truncated.png: truncated image",
         code=0),
    Case("data-unreadable-strict", lambda t: ["train", "--data", f"folder:{bad_images(t)}", *TINY, "--strict"],
         r"4 unreadable image\(s\) \(strict mode\)"),
    Case("data-odd-images-converted", lambda t: ["train", "--data", f"folder:{odd_images(t)}", *TINY],
         r"error_rate", code=0, absent="skipped"),
    Case("data-batch-too-big", lambda t: ["train", "--data", f"folder:{image_folder(t, {'a': 5, 'b': 5})}",
                                          *TINY[:-3], "--batch-size", "64"],
         r"batch_size 64 is larger than the \d+ training images"),
    Case("search-batch-too-big",  # the default batch_size (64) on the 48 training images of shapes?n=60
         lambda t: ["search", space(t, 'data = "shapes?n=60"\nnum_samples = 120\nsearcher = "random"\n'
                                       'space = {"model": "test_resnet", "pretrained": False, "img_size": 16}\n')],
         r"(?m)^Error: batch_size 64 is larger than the 48 training images of data 'shapes\?n=60': every trial with it "
         r"would fail"),
    Case("search-batch-choices-too-big",
         lambda t: ["search", space(t, 'data = "shapes?n=60"\nspace = {"model": "test_resnet", "pretrained": False, '
                                       '"img_size": 16, "batch_size": tune.choice([16, 64, 128])}\n')],
         r"batch_size choice\(s\) 64, 128 of \[16, 64, 128\] are larger than the 48 training images"),
    Case("search-batch-range-too-big",
         lambda t: ["search", space(t, 'data = "shapes?n=60"\nspace = {"model": "test_resnet", "pretrained": False, '
                                       '"img_size": 16, "batch_size": tune.randint(8, 100)}\n')],
         r"batch_size is drawn up to 99, and data 'shapes\?n=60' has 48 training images"),
    Case("search-batch-too-big-dry-run",
         lambda t: ["search", space(t, f'data = "folder:{image_folder(t, {"a": 5, "b": 5})}"\n'
                                       'space = {"model": "test_resnet", "pretrained": False}\n'), "--dry-run"],
         r"batch_size 64 is larger than the 8 training images of data 'folder:"),
    Case("search-batch-too-big-dry-run-generated",  # the case as a dry run: counted, nothing generated
         lambda t: ["search", space(t, 'data = "shapes?n=60"\nspace = {"model": "test_resnet", "pretrained": False, '
                                       '"img_size": 16}\n'), "--dry-run"],
         r"batch_size 64 is larger than the 48 training images of data 'shapes\?n=60'"),
    Case("search-metric-not-in-data",
         lambda t: ["search", space(t, 'data = "shapes?n=60"\nmetric = "f2"\nmode = "max"\n'
                                       'space = {"model": "test_resnet", "pretrained": False, "img_size": 16, '
                                       '"batch_size": 16}\n')],
         r"metric 'f2' is for multi-label data, and data 'shapes\?n=60' is single-label"),
    # ---- command line
    Case("cli-bad-choice", lambda t: ["train", "--pool", "max"],
         r"Invalid value for '--pool': 'max' is not one of 'avg', 'concat'"),
    Case("cli-weights-and-no-pretrained", lambda t: ["train", "--weights", space(t, ""), "--no-pretrained"],
         r"--weights and --no-pretrained contradict each other"),
    Case("cli-option-and-set", lambda t: ["search", space(t, GOOD), "--gpus-per-trial", "0.5",
                                          "--set", "gpus_per_trial=0.25"],
         r"--gpus-per-trial 0.5 and --set gpus_per_trial=0.25 contradict each other"),
    Case("cli-too-many-gpus", lambda t: ["search", space(t, GOOD), "--num-gpus", "4"],
         r"--num-gpus 4: this machine has 0 GPU\(s\)"),
    Case("cli-address-silent", lambda t: ["search", space(t, GOOD), "--address", "127.0.0.1:9"],
         r"--address 127.0.0.1:9: no Ray cluster answers there"),
    Case("cli-address-auto-none", lambda t: ["search", space(t, GOOD), "--address", "auto"],
         r"--address auto: no Ray cluster to join \(.*\); start one with 'ray start --head'"),
    Case("cli-resume-missing", lambda t: ["search", space(t, GOOD), "--storage-path", str(t), "--resume"],
         r"--resume: there is no search named 'space' in"),
    Case("cli-resume-and-restart", lambda t: ["search", space(t, GOOD), "--resume", "--restart"],
         r"--resume and --restart contradict each other"),
]


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_early_with_a_clear_message(case: Case, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = case.args(tmp_path)
    start = time.perf_counter()
    result = CliRunner().invoke(main, args)
    seconds = time.perf_counter() - start
    output = result.output
    print(f"\n[{case.id}] exit {result.exit_code} in {seconds:.1f}s\n{output}")
    assert result.exit_code == case.code, output + repr(result.exception)
    assert re.search(case.expect, output), output
    assert "Traceback" not in output
    assert case.absent is None or case.absent not in output
    assert not ray.is_initialized()  # failed (or warned) before any Ray started


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(main, ["search", str(tmp_path / "nope.py"), "--debug"])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "TunekitError"  # raised as is, so Python prints its traceback


def test_readme_table_lists_every_case():
    text = README.read_text()
    table = text[text.index("### When the input is wrong"):]
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \|(.*)$", table, flags=re.M))
    assert [i for i in rows if i in {c.id for c in CASES}] == [c.id for c in CASES]  # all, in order
    for extra in set(rows) - {c.id for c in CASES}:  # cases that need a real run are tested elsewhere
        assert "(tests/" in rows[extra], extra
