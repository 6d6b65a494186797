"""report.html in a real browser (Debian's chromium, headless): no JavaScript error, every chart drawn
with all its marks, and a screenshot kept (pytest's tmp folder; the path is printed).

``.ci/run`` installs chromium when it is missing; where it cannot be installed the test skips and says why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tunekit import report as rp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it: "
                                                          "apt-get install chromium)")
MODELS = ["resnet18", "resnet50", "convnext_tiny", "convnext_small", "vit_small_patch16_224", "vit_base_patch16_224",
          "swin_tiny_patch4_window7_224", "levit_256", "regnety_006", "efficientnet_b0"]


def browser(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless chromium as this machine allows it (root, no GPU, no network for its own services)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A two-dataset search of 10 backbones with sampled lrs, GPU memory measured: every chart kind."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset in ("pets", "planet"):
        for i, model in enumerate(MODELS):
            for _ in range(4):
                rows.append({"dataset": dataset, "model": model, "pool": rng.choice(["avg", "concat"]),
                             "lr": float(10 ** rng.uniform(-3.5, -1.5)), "error_rate": 0.05 + 0.01 * i + rng.uniform(0, 0.02),
                             "fit_time": 40 + 10 * i, "gpu_mem": 1 + 0.5 * i, "status": "completed", "run": "r"})
    runs = pd.DataFrame(rows)
    out = tmp_path_factory.mktemp("report")
    built = rp.build(runs)
    rp.write(built, out)
    runs.attrs["transfer"] = built.transfer  # the ImageNet-against-fine-tuning chart of each dataset
    return out / "report.html", runs


def test_report_html_renders_without_errors(page, tmp_path):
    html, runs = page
    proc = browser(tmp_path, "--dump-dom", html.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    dom = proc.stdout
    # eight charts: error against fit time and against GPU memory, the lr slice plot and fine-tuning against
    # ImageNet top-1, per dataset
    transfer = runs.attrs["transfer"]
    assert all(t is not None for t in transfer.values())
    assert dom.count('class="main-svg"') >= 8 and dom.count('class="plot-container plotly"') == 8
    points = len(re.findall(r'class="point plotly-customdata"', dom))
    models_per_dataset = runs.groupby("dataset")["model"].nunique().sum()
    on_imagenet = sum(len(t.models) for t in transfer.values())
    # every model in both study charts and the ImageNet one, every run in a slice
    assert points == 2 * models_per_dataset + len(runs) + on_imagenet
    legend_entries = len(re.findall(r'class="traces"', dom))
    families = runs.assign(family=runs["model"].map(rp.family)).groupby("dataset")["family"].nunique().sum()
    verdicts = sum(t.models["verdict"].nunique() for t in transfer.values())
    # a family per chart, each study chart's Pareto front, a trace per verdict in the ImageNet charts
    assert legend_entries == 3 * families + 2 * 2 + verdicts


def test_report_html_screenshot(page, tmp_path):
    html, _ = page
    shot = tmp_path / "report_html.png"
    proc = browser(tmp_path, "--window-size=1200,2600", f"--screenshot={shot}", html.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2600, 1200) and (pixels < 200).mean() > 0.02  # text, tables and charts, not blank
    print(f"screenshot: {shot}")


def test_the_models_plot_renders_every_tag_and_its_front(tmp_path):
    """`tunekit models --plot`: one page that opens offline, every tag with both values a point, the front drawn."""
    from click.testing import CliRunner

    from tunekit.cli import main
    from tunekit.timm_table import load, pareto

    html = tmp_path / "models.html"
    out = CliRunner().invoke(main, ["models", "--img-size", "224", "--max-params", "30", "--plot", str(html)])
    assert out.exit_code == 0 and html.is_file(), out.output
    proc = browser(tmp_path, "--dump-dom", html.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    rows = load().select(img_size=224, max_params=30)
    shown = [r for r in rows if r.top1 is not None and r.infer_samples_per_s is not None]
    assert len(re.findall(r'class="point"', proc.stdout)) == len(shown)  # the front's points are among them
    assert "the front" in proc.stdout and len(pareto(rows)) >= 5
