"""Shared fixtures: an isolated data root, small generated datasets, image-file helpers, one grid search that
test_search and test_export share; the suite's split over pytest-xdist's workers (the README's ``-n 2``)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tunekit  # noqa: F401  - first: installs the torchvision import workaround before timm loads
from tunekit.data.shapes import write_shapes

# Under pytest-xdist (setup.cfg: --dist loadgroup, --no-loadscope-reorder) a test file is one unit of work, run by
# one worker with its module fixtures (a Ray, a server, a search) set up once. Files that share more go together:
# test_demo and test_readme the demo's one run (a session fixture); test_compiled and test_search the compile's
# kernels (tunekit's Inductor cache is per data root, so per worker), which test_search's compile=auto search
# reuses, as in a serial run, where test_compiled comes first; test_export with them, its winners those of
# test_search's grid search (grid_run).
GROUPS = {"test_demo": "demo", "test_readme": "demo", "test_compiled": "compile", "test_search": "compile",
          "test_export": "compile"}
# The slowest files first (the whole suite's durations on the 2-core machine, benchmarks/RESULTS.md), so that no
# worker starts a minute-long file while the other has nothing left; the rest follow in their usual order (test_export
# among them: after test_search, in their unit).
SLOWEST_FIRST = ["test_cluster", "test_compiled", "test_search", "test_trackers", "test_demo", "test_readme",
                 "test_gpu_check", "test_asha", "test_stop", "test_cli", "test_examples", "test_loop", "test_resume",
                 "test_bench", "test_rank", "test_spec", "test_report_browser"]


def pytest_configure(config: pytest.Config) -> None:
    # The suite's compiles (tiny networks on the CPU: test_compiled's, every compile=auto measurement's) make
    # Inductor's scalar C++ kernels, not its vectorized ones: about half the cold compile's CPU (the vector tiling's
    # analysis, the longer C++), the same graphs, kernel cache and records, which is what the tests check (the
    # vectorized kernels a user's CPU gets are torch's to test). For the whole suite, so that its processes share one
    # kernel cache (each worker's, under its data root).
    os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "0")
    # The suite's Rays in a temp folder of their own, one per xdist worker: the simulated cluster leaves its address
    # there as `ray start` does (--address auto), and must neither reach another worker nor replace, or remove at
    # its end, the address of a developer's own `ray start` in /tmp/ray. Short, for Ray's socket paths.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix=f"ray-{worker or 'tests'}-", dir="/tmp")
    if worker:
        # the workers share the cores: torch's threads here and in the commands a test starts, a share each (Ray's
        # trials set their own, from their CPUs: two for a trial of 2 CPUs)
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        # and a thread that waits sleeps at once (OpenMP's passive policy): libgomp's default spins first, at every
        # parallel region's end, on a core the other worker needs (938 -> 736 s for the suite, benchmarks/RESULTS.md)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_unconfigure(config: pytest.Config) -> None:
    if "RAY_TMPDIR" in os.environ:
        shutil.rmtree(os.environ.pop("RAY_TMPDIR"), ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns the groups into the units of work
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "loadgroup", False):
        return
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a file's tests keep their order
    for item in items:
        if not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(GROUPS.get(item.path.stem, item.path.stem)))


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


GRID = """
from ray import tune
epochs = 3
searcher = "grid"
asha = {"grace_period": 1, "reduction_factor": 2}
keep_best = 3
space = {"model": "test_resnet", "pool": tune.grid_search(["avg", "concat"]),
         "lr": tune.grid_search([0.01, 1e-6]), "pretrained": False, "batch_size": 32, "img_size": 32}
"""


@pytest.fixture(scope="session")
def grid_run(small_shapes, tmp_path_factory):
    """One in-process search of 4 trials (pool x lr, 3 epochs, ASHA; the best 3 keep their weights) on the
    small shapes: test_search checks its search, test_export exports, evaluates and predicts with its winners
    (one xdist unit: GROUPS above). The trials run on a Ray already started (test_search's module Ray, when one of
    its tests made this first under xdist), else on the search's own (serially, test_export's tests come first)."""
    import signal

    from tunekit.tuner import search
    from tunekit.tuner.ray_api import ENV_SWITCHES

    tmp = tmp_path_factory.mktemp("grid")
    (tmp / "small.py").write_text(f"data = {f'folder:{small_shapes}'!r}\n" + GRID)
    lines: list[str] = []
    for key in ENV_SWITCHES:  # as a new process has them (an earlier search of this process restored them)
        os.environ.pop(key, None)
    sigint = signal.getsignal(signal.SIGINT)
    result = search(tmp / "small.py", storage_path=tmp / "runs", echo=lines.append)
    result.lines = lines
    result.sigint_kept = signal.getsignal(signal.SIGINT) is sigint
    result.environ_after = {key: os.environ.get(key) for key in ENV_SWITCHES if key in os.environ}
    return result


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
