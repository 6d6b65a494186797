"""The device side (device.py): device and precision choice, memory shares, the one AMP step.

CI has no GPU, so each CUDA decision is a function of what the machine reports (device count,
compute capability, Ray's GPU ids, memory sizes), tested here with those reports written out; the
GPU itself is checked by benchmarks/gpu_check.py.
"""

from __future__ import annotations

import pytest
import torch

from tunekit import bench
from tunekit.config import TrialConfig
from tunekit.device import (
    Amp,
    cuda_index,
    model_peak_gib,
    pick_device,
    pick_precision,
    resolve_device,
    resolve_precision,
)
from tunekit.errors import TunekitError
from tunekit.loop import fit


def test_precision_auto_is_fp32_on_a_cpu():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    fp32, bf16 = Amp.create("fp32", torch.device("cpu")), Amp.create("bf16", torch.device("cpu"))
    assert fp32.dtype is None and bf16.dtype is torch.bfloat16
    assert not fp32.scaler.is_enabled() and fp32.scaler_state() is None


def test_cuda_without_cuda_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TunekitError, match="CUDA is not available here"):
        resolve_device("cuda")


def test_a_step_descends_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    amp = Amp.create("fp32", torch.device("cpu"))
    losses = [amp.step(model, x, y, torch.nn.functional.cross_entropy, opt).item() for _ in range(5)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0]
    assert all(p.grad is None for p in model.parameters())  # zeroed (set to None) after each step


def test_the_loop_and_the_benchmark_ceiling_take_the_same_step(monkeypatch, small_shapes):
    """bench's ceiling is the loop's own step: both go through Amp.step, and nothing else steps."""
    calls = []
    real = Amp.step

    def counting(self, *args, **kwargs):
        calls.append(self.precision)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Amp, "step", counting)
    bench.ceiling("test_resnet", torch.device("cpu"), batch_size=8, img_size=32, precision="fp32", warmup=1, steps=2)
    assert calls == ["fp32"] * 3
    calls.clear()
    result = fit(TrialConfig(data=f"folder:{small_shapes}", model="test_resnet", pretrained=False, epochs=1,
                             batch_size=32, img_size=32, threads=2))
    assert len(calls) == result.info.n_train // 32  # one step per full training batch


@pytest.mark.parametrize(("requested", "machine", "expected"), [
    # no Ray: the first GPU, indexed (torch's per-device queries refuse a bare "cuda")
    ("auto", {"cuda_count": 2, "mps": False}, "cuda:0"),
    ("cuda", {"cuda_count": 2, "mps": False}, "cuda:0"),
    ("cuda:1", {"cuda_count": 2, "mps": False}, "cuda:1"),
    ("auto", {"cuda_count": 0, "mps": True}, "mps"),
    ("auto", {"cuda_count": 0, "mps": False}, "cpu"),
    ("cpu", {"cuda_count": 4, "mps": False}, "cpu"),
    # under Ray: the GPU Ray assigned, as this process sees it (Ray lists it in CUDA_VISIBLE_DEVICES)
    ("auto", {"cuda_count": 1, "mps": False, "ray_gpus": ["3"], "visible": "3"}, "cuda:0"),
    ("auto", {"cuda_count": 2, "mps": False, "ray_gpus": ["5"], "visible": "4,5"}, "cuda:1"),
    ("auto", {"cuda_count": 4, "mps": False, "ray_gpus": ["2"], "visible": None}, "cuda:2"),
    # a trial Ray gave no GPU trains on the CPU, even where CUDA is visible (Ray 2.60 no longer hides it)
    ("auto", {"cuda_count": 4, "mps": False, "ray_gpus": [], "visible": None}, "cpu"),
    # a node that declares GPUs torch cannot use (a test cluster's fake GPUs)
    ("auto", {"cuda_count": 0, "mps": False, "ray_gpus": ["0"], "visible": "0"}, "cpu"),
])
def test_a_device_is_always_indexed_and_is_the_one_ray_assigned(requested, machine, expected):
    assert pick_device(requested, **machine) == expected


@pytest.mark.parametrize(("requested", "machine", "message"), [
    ("cuda:3", {"cuda_count": 2, "mps": False}, r"'cuda:3' requested, but this machine has 2 CUDA device\(s\) "
                                                 r"\(cuda:0 to cuda:1\)"),
    ("cuda:x", {"cuda_count": 2, "mps": False}, "expected cuda:N with N a GPU number"),
    ("cuda", {"cuda_count": 0, "mps": False}, "CUDA is not available here"),
    ("cuda:0", {"cuda_count": 0, "mps": False}, "CUDA is not available here"),
    ("mps", {"cuda_count": 0, "mps": False}, "MPS is not available here"),
    ("cuda", {"cuda_count": 2, "mps": False, "ray_gpus": []}, "Ray assigned this trial no GPU"),
    ("tpu", {"cuda_count": 0, "mps": False}, "device must be 'auto', 'cpu', 'cuda"),
])
def test_a_device_that_is_not_here_is_one_clear_error(requested, machine, message):
    with pytest.raises(TunekitError, match=message):
        pick_device(requested, **machine)


def test_ray_gpu_ids_map_to_this_process_index():
    assert cuda_index("2", None) == 2 and cuda_index(2, "") == 2
    assert cuda_index("6", "6,7") == 0 and cuda_index("7", " 6, 7") == 1
    with pytest.raises(TunekitError, match="not among this process's visible devices"):
        cuda_index("1", "6,7")


@pytest.mark.parametrize(("device_type", "capability", "precision"), [
    ("cuda", (9, 0), "bf16"),  # H100/H200
    ("cuda", (8, 0), "bf16"),  # A100
    ("cuda", (8, 6), "bf16"),  # RTX 30xx
    ("cuda", (7, 5), "fp16"),  # T4: torch calls bf16 "supported" there, but emulates it
    ("cuda", (7, 0), "fp16"),  # V100
    ("cuda", (6, 1), "fp16"),
    ("cpu", None, "fp32"),
    ("mps", None, "fp32"),
])
def test_precision_follows_the_gpu_compute_capability(device_type, capability, precision):
    assert pick_precision(device_type, capability) == precision


def test_the_model_memory_leaves_out_the_resident_images():
    gib = 2**30
    # 3 GiB reserved at the peak, 1 GiB of it the resident images: the model's peak is 2 GiB
    assert model_peak_gib(3 * gib, gib) == pytest.approx(2.0)
    # the allocator reserves large blocks in 2 MiB steps: 1 byte over 1 GiB reserves 1 GiB + 2 MiB
    assert model_peak_gib(3 * gib, gib + 1) == pytest.approx(2.0 - 2 / 1024)
    assert model_peak_gib(gib, 0) == pytest.approx(1.0) and model_peak_gib(0, gib) == 0.0


# torch.cuda functions that fall back to the "current device" when given none, or refuse an
# unindexed one: each call in tunekit names the run's device (argument position of the device)
_DEVICE_ARGUMENT = {
    "get_per_process_memory_fraction": 0, "set_per_process_memory_fraction": 1, "get_device_properties": 0,
    "max_memory_reserved": 0, "memory_reserved": 0, "max_memory_allocated": 0, "memory_allocated": 0,
    "reset_peak_memory_stats": 0, "synchronize": 0, "get_rng_state": 0, "set_rng_state": 1,
    "get_device_name": 0, "get_device_capability": 0, "mem_get_info": 0, "set_device": 0,
}


def test_every_cuda_call_names_its_device():
    """The root of the first GPU crash: a bare torch.device("cuda") reached a call that needs an index.
    Every torch.cuda call in the package that takes a device passes one, none asks for the "current"
    device, and no code builds an unindexed CUDA device (resolve_device is the one place that decides)."""
    import ast
    from pathlib import Path

    import tunekit

    problems = []
    for path in sorted(Path(tunekit.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.name}:{node.lineno}"
            func = ast.unparse(node.func)
            name = func.rpartition(".")[2]
            if func.startswith("torch.cuda.") and name in _DEVICE_ARGUMENT:
                if len(node.args) <= _DEVICE_ARGUMENT[name] and not any(k.arg == "device" for k in node.keywords):
                    problems.append(f"{where}: {func}() without a device")
            if func in ("torch.cuda.current_device", "torch.cuda.device_of"):
                problems.append(f"{where}: {func}()")
            if func == "torch.device" and node.args and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value == "cuda" and len(node.args) == 1:
                problems.append(f"{where}: torch.device('cuda') without an index")
    assert problems == []


def test_resolve_device_on_this_machine_is_indexed_or_the_cpu():
    device = resolve_device("auto")
    assert device.type != "cuda" or device.index is not None
    assert resolve_device("cpu", ray_gpus=[]) == torch.device("cpu")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize(("trained", "device_type", "capability", "precision"), [
    ("bf16", "cuda", (9, 0), "bf16"),
    ("bf16", "cuda", (7, 5), "fp16"),  # trained on an H100, predicting on a T4
    ("fp16", "cuda", (9, 0), "fp16"),
    ("fp32", "cuda", (9, 0), "fp32"),
    ("bf16", "cpu", None, "fp32"),  # on a CPU bf16 is slow; the weights are fp32 anyway
    (None, "cuda", (8, 0), "bf16"),  # exported before the manifest recorded it: auto
])
def test_an_exported_model_predicts_in_the_precision_it_trained_in(trained, device_type, capability, precision):
    from tunekit.device import inference_precision

    assert inference_precision(trained, device_type, capability) == precision
