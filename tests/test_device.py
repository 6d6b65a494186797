"""The device side (device.py): precision choice, the one AMP step the loop and the benchmark share."""

from __future__ import annotations

import pytest
import torch

from tunekit import bench
from tunekit.config import TrialConfig
from tunekit.device import Amp, resolve_device, resolve_precision
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
