"""timm's catalog (catalog.py): model names with close matches, renamed models, the name index, a user's models."""

from __future__ import annotations

import json

import pytest

from tunekit import catalog
from tunekit.errors import TunekitError


@pytest.mark.parametrize(("name", "message"), [
    ("resnet181", "unknown timm model 'resnet181' \\(did you mean 'resnet18'"),
    ("convnext_tiny_in22ft1k", "timm model 'convnext_tiny_in22ft1k' was renamed: use 'convnext_tiny.fb_in22k_ft_in1k'"),
    ("resnet18.no_such_tag", "timm model 'resnet18' has no pretrained tag 'no_such_tag'"),
])
def test_a_bad_model_name_says_what_to_use(name, message):
    catalog._index.cache_clear()
    with pytest.raises(TunekitError, match=message):
        catalog.check_model_name(name)


def test_the_index_holds_timm_own_models_only(tmp_path, monkeypatch):
    """A model registered in this process passes its check here, but is not written into the index that
    other processes trust without timm (a trial's worker would not know it)."""
    import timm
    from timm.models import register_model

    monkeypatch.setenv("TUNEKIT_DATA", str(tmp_path / "data"))
    catalog._index.cache_clear()

    @register_model
    def catalog_test_user_net(pretrained=False, **kwargs):
        return timm.models.resnet.test_resnet(pretrained=pretrained, **kwargs)

    catalog.check_model_name("catalog_test_user_net")
    assert catalog.registered_by("catalog_test_user_net") == __name__
    assert catalog.registered_by("resnet18") is None and catalog.registered_by("resnet18.a1_in1k") is None
    path = catalog.write_index()
    names = json.loads(path.read_text())["names"]
    assert "resnet18" in names and "resnet18.a1_in1k" in names and "catalog_test_user_net" not in names
    catalog._index.cache_clear()
