"""Shared fixtures: an isolated data root, small generated datasets, image-file helpers."""

from __future__ import annotations

import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tunekit  # noqa: F401  - first: installs the torchvision import workaround before timm loads
from tunekit.data.shapes import write_shapes


@pytest.fixture(scope="session", autouse=True)
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test shares one TUNEKIT_DATA (generated data and decode caches), never ~/.cache."""
    root = tmp_path_factory.mktemp("tunekit-data")
    old = os.environ.get("TUNEKIT_DATA")
    os.environ["TUNEKIT_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("TUNEKIT_DATA", None)
    else:
        os.environ["TUNEKIT_DATA"] = old


@pytest.fixture(scope="session")
def small_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 single-label images, 32px short side, in the folder layout."""
    return write_shapes(tmp_path_factory.mktemp("shapes") / "single", n=240, size=32, seed=3)


@pytest.fixture(scope="session")
def small_shapes_multilabel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 multi-label images, 32px short side, in the csv (Planet) layout."""
    return write_shapes(tmp_path_factory.mktemp("shapes") / "multi", n=240, size=32, seed=3, multilabel=True)


@pytest.fixture(scope="session")
def readme_user(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A new user's machine (tests/demo_run.py): the README's commands and the demo run there."""
    from demo_run import new_user

    return new_user(tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="session")
def first_demo(readme_user):
    """The README's first command, the demo, run once (tests/demo_run.py): its process and run folder."""
    from demo_run import run_first

    return run_first(readme_user)


@pytest.fixture
def study_csv(tmp_path: Path) -> Path:
    """A CSV in the study's export format: 8 models x 2 datasets x 3 runs (tests/studies.py)."""
    from studies import write_study_csv

    return write_study_csv(tmp_path)


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (downloads tested without the internet); yields (base_url, folder,
    list of requested paths)."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, requests
    httpd.shutdown()
