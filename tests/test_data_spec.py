"""Dataset spec strings (data/spec.py): kinds, options, errors, round trips."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from PIL import Image

from tunekit.cli import main
from tunekit.data.spec import DataSpec
from tunekit.errors import TunekitError


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("folder", "needs a path"),
        ("floder:/x", "unknown data kind 'floder'"),
        ("shapes?nn=5", "unknown option 'nn' for data kind 'shapes' (did you mean 'n'?)"),
        ("shapes?n=many", "must be a int"),
        ("folder:/x?valid_pct=1.5", "valid_pct must be between 0 and 1"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(TunekitError, match=None) as err:
        DataSpec.parse(spec)
    assert message in str(err.value)


def test_directory_without_kind_gets_a_hint(tmp_path):
    with pytest.raises(TunekitError, match="write 'folder:"):
        DataSpec.parse(str(tmp_path))


@pytest.mark.parametrize(("query", "value"), [
    (r"pattern=^(.*)_\d+\.jpg$", r"^(.*)_\d+\.jpg$"),  # '+' is a plus, not a space (form decoding)
    ("pattern=a%26b%3Dc%25d%20e", "a&b=c%d e"),  # percent escapes decode
    ("pattern=x=y", "x=y"),  # the first '=' ends the name
    ("pattern=(a|b)+ [0-9]{2,}?", "(a|b)+ [0-9]{2,}?"),
])
def test_option_values_parse_as_written_and_round_trip(query, value):
    spec = DataSpec.parse(f"regex:/data/pets?{query}")
    assert spec.opt("pattern") == value
    assert DataSpec.parse(str(spec)) == spec


def test_typed_options_round_trip():
    spec = DataSpec.parse("csv:/d?delimiter=%3B&strict=1&valid_pct=0.1&valid_col=is valid")
    assert (spec.opt("delimiter"), spec.opt("strict"), spec.opt("valid_pct")) == (";", True, 0.1)
    again = DataSpec.parse(str(spec))
    assert again == spec and again.opt("valid_col") == "is valid"
    assert DataSpec.parse("shapes?strict").opt("strict") is True  # a bare flag turns it on


def test_a_regex_with_plus_works_from_the_cli(tmp_path):
    for name in ("Bengal_12.jpg", "Bengal_7.jpg", "Boxer_123.jpg", "Boxer_4.jpg", "Boxer_55.jpg"):
        Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / name)
    spec = fr"regex:{tmp_path}?pattern=^(.*)_\d+\.jpg$&valid_pct=0.4"
    result = CliRunner().invoke(main, ["data", "prepare", spec, "--img-size", "16"])
    assert result.exit_code == 0, result.output
    assert "2 classes (single-label)" in result.output
