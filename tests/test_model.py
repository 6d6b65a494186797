"""timm backbone + pool + head: pools and heads on CNN and token models, zero-init, weights, freezing."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from tunekit.catalog import check_model_name
from tunekit.config import TrialConfig
from tunekit.errors import TunekitError
from tunekit.model import NORM_TYPES, build_model

N_CLASSES = 5


def make(model: str, img_size: int = 32, **cfg):
    torch.manual_seed(0)
    return build_model(TrialConfig(model=model, pretrained=cfg.pop("pretrained", False), **cfg), N_CLASSES, img_size)


@pytest.mark.parametrize("model_name", ["test_resnet", "test_convnext", "test_vit", "test_mambaout"])
@pytest.mark.parametrize("pool", ["avg", "concat"])
@pytest.mark.parametrize("head", ["fastai", "linear"])
def test_every_pool_and_head_on_cnn_and_token_models(model_name, pool, head):
    model, info = make(model_name, pool=pool, head=head)
    assert info.layout == {"test_vit": "tokens", "test_mambaout": "NHWC"}.get(model_name, "NCHW")
    assert info.pooled_features == info.num_features * (2 if pool == "concat" else 1)
    model.train()
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, N_CLASSES)
    out.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == (2 if head == "fastai" else 1)
    if head == "fastai":  # fastai's create_head: BN, Dropout .25, Linear, ReLU, BN, Dropout .5, Linear
        kinds = [type(m).__name__ for m in model.head]
        assert kinds == ["BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
        assert [m.p for m in model.head if isinstance(m, nn.Dropout)] == [0.25, 0.5]
        assert linears[0].out_features == 512


def test_cnn_concat_pool_is_max_then_avg():
    model, _ = make("test_resnet", pool="concat")
    model.eval()
    f = model.body.forward_features(torch.randn(2, 3, 32, 32))
    pooled = model.pooled(f)
    c = f.shape[1]
    assert torch.allclose(pooled[:, :c], f.amax((2, 3))) and torch.allclose(pooled[:, c:], f.mean((2, 3)))


def test_token_pools_mean_own_summary_and_patch_max():
    """For a ViT, avg is timm's own pooling (the class token here); concat adds the max over
    the patch tokens, the class token excluded."""
    model, info = make("test_vit", pool="concat")
    model.eval()
    f = model.body.forward_features(torch.randn(2, 3, 32, 32))
    pooled = model.pooled(f)
    c = info.num_features
    assert torch.allclose(pooled[:, :c], model.body.forward_head(f, pre_logits=True))
    assert torch.allclose(pooled[:, :c], f[:, 0])  # test_vit pools with its class token
    assert torch.allclose(pooled[:, c:], f[:, model.num_prefix_tokens:].amax(1))


def test_fixed_size_models_are_built_for_the_image_size():
    model, _ = make("test_vit3", img_size=48)  # a timm ViT that asserts its input size
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, N_CLASSES)


def _last_bn_weights(model: nn.Module) -> list[torch.Tensor]:
    """The BN that zero_init_last zeroes in each timm ResNet block: bn3 (Bottleneck) or bn2 (Basic)."""
    blocks = [m for m in model.modules() if hasattr(m, "zero_init_last")]
    assert blocks
    return [(b.bn3 if hasattr(b, "bn3") else b.bn2).weight.detach() for b in blocks]


def test_zero_init_on_and_off_sets_the_last_bn_gamma():
    on, info_on = make("test_resnet", zero_init=True)
    off, info_off = make("test_resnet", zero_init=False)
    assert (info_on.zero_init, info_off.zero_init) == ("on", "off")
    assert all((w == 0).all() for w in _last_bn_weights(on))
    assert all((w == 1).all() for w in _last_bn_weights(off))
    # other BNs are untouched either way
    first_bns = [b.bn1.weight for b in on.modules() if hasattr(b, "zero_init_last")]
    assert all((w == 1).all() for w in first_bns)


def test_zero_init_not_applicable_is_recorded():
    with pytest.warns(UserWarning, match="zero_init=True: not supported by test_vit"):
        _, info = make("test_vit", zero_init=True)
    assert info.zero_init == "n/a (VisionTransformer has no zero_init_last)"
    _, info = make("test_resnet")
    assert info.zero_init == "backbone default"


def test_local_weights_file_loads_and_overwrites_zero_init(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", pretrained=False)  # with its 1000-class classifier
    with torch.no_grad():
        for w in _last_bn_weights(source):
            w.fill_(0.5)
    path = tmp_path / "test_resnet.safetensors"
    save_file(source.state_dict(), str(path))
    model, info = make("test_resnet", pretrained=str(path), zero_init=True)
    assert info.weights == f"file: {path}"
    assert info.zero_init == "on (overwritten by pretrained weights)"
    assert all(torch.allclose(w, torch.full_like(w, 0.5)) for w in _last_bn_weights(model))
    assert torch.equal(model.body.conv1[0].weight, source.conv1[0].weight)


def test_pretrained_unavailable_offline_names_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(TunekitError) as err:
        make("test_resnet", pretrained=True)
    msg = str(err.value)
    assert "could not get pretrained weights for 'test_resnet'" in msg
    assert "--weights FILE" in msg and "--no-pretrained" in msg


def test_hub_weights_in_the_local_cache_load_without_network(tmp_path, monkeypatch):
    """A Hugging Face cache laid out as the hub client writes it: models--ORG--NAME/snapshots/REV/FILE."""
    import huggingface_hub.constants

    from tunekit.catalog import timm_pretrained_cfg
    from tunekit.weights import cached_weights

    repo = timm_pretrained_cfg("test_resnet").hf_hub_id  # e.g. timm/test_resnet.r160_in1k
    snapshot = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    torch.manual_seed(2)
    source = timm.create_model("test_resnet", pretrained=False)
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert cached_weights("test_resnet") == str(snapshot / "model.safetensors")
    model, info = make("test_resnet", pretrained=True)
    assert info.weights == "timm hub"
    assert torch.equal(model.body.conv1[0].weight, source.conv1[0].weight)


def test_unknown_model_suggests_close_names():
    with pytest.raises(TunekitError, match=r"unknown timm model 'resnet51' \(did you mean .*'resnet50'"):
        check_model_name("resnet51")
    with pytest.raises(TunekitError, match="has no pretrained tag 'nope'"):
        check_model_name("resnet18.nope")
    check_model_name("resnet18.a1_in1k")


def test_freeze_body_keeps_norm_layers_and_head_trainable():
    model, _ = make("test_convnext")  # has LayerNorm2d (a LayerNorm) in its body
    model.freeze_body(True)
    for module in model.body.modules():
        for p in module.parameters(recurse=False):
            assert p.requires_grad == isinstance(module, NORM_TYPES)
    assert any(isinstance(m, nn.LayerNorm) for m in model.body.modules())
    assert all(p.requires_grad for p in model.head.parameters())
    model.freeze_body(False)
    assert all(p.requires_grad for p in model.parameters())
