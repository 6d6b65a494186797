from __future__ import annotations

import pytest

from tunekit.config import TrialConfig
from tunekit.errors import TunekitError


def test_from_dict_coerces_cli_strings():
    cfg = TrialConfig.from_dict({"lr": "0.02", "epochs": "3", "zero_init": "false", "pretrained": "no"})
    assert (cfg.lr, cfg.epochs, cfg.zero_init, cfg.pretrained) == (0.02, 3, False, False)
    assert cfg.total_epochs == 3  # from scratch: no frozen epoch
    assert TrialConfig(epochs=5, freeze_epochs=1).total_epochs == 6


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"modle": "resnet18"}, "unknown config key 'modle' (did you mean 'model'?)"),
        ({"pool": "max"}, "pool must be one of 'avg', 'concat', got 'max'"),
        ({"resize": "crp"}, "(did you mean 'crop'?)"),
        ({"lr": -0.1}, "lr must be a positive number, got -0.1"),
        ({"lr": "fast"}, "lr must be a number, got 'fast'"),
        ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 1}, "batch_size must be at least 2"),
        ({"zero_init": "maybe"}, "zero_init must be true or false"),
        ({"pretrained": "/no/such/weights.safetensors"}, "does not exist"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_bad_values_are_quoted(values, message):
    with pytest.raises(TunekitError) as err:
        TrialConfig.from_dict(values)
    assert message in str(err.value)
