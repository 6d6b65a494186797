r"""Dataset spec strings: ``KIND[:PATH][?OPTION=VALUE&...]``, used alike by the CLI and space files.

======================  ====================================================================
``folder:PATH``         ImageFolder tree ``PATH/<class>/*.jpg``; ``PATH/valid`` (or ``val``)
                        with ``PATH/train`` when present, else a seeded random split.
``csv:PATH``            Planet layout: ``PATH/labels.csv`` (``image_name,tags``, tags
                        space-separated, multi-label), images in ``PATH/train/<name>.jpg``.
``regex:PATH``          labels from file names (Oxford-IIIT Pets: ``Breed_Name_123.jpg``).
``pets[:PATH]``         Oxford-IIIT Pets, downloaded on first use (or read from PATH).
``planet[:PATH]``       the fastai Planet sample, downloaded on first use (or read from PATH).
``imagenette[:PATH]``   fastai's Imagenette (160px), 10 ImageNet classes, train/val folders.
``fashion_mnist[:PATH]`` Fashion-MNIST's IDX files (Debian's package, or downloaded), 10 classes.
``shapes``              built-in generated single-label data, made on first use.
``shapes-multilabel``   built-in generated multi-label data (csv layout).
======================  ====================================================================

Options (URL-query style: ``&`` between options, the first ``=`` ends a name, ``%XX`` decoded, and
nothing else: a ``+`` stays a plus, so a regex reads as written) per kind are the keys of
:data:`OPTIONS`; an unknown option is an error with a suggestion. ``str(spec)`` writes them back
with ``%``, ``&``, ``#`` and white space percent-encoded, so any value round-trips::

    DataSpec.parse("csv:~/data/planet?label_col=tags&suffix=.png&valid_pct=0.1")
    DataSpec.parse(r"regex:~/pets?pattern=^(.*)_\d+\.jpg$")        # '+' kept; '&' would be %26
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..errors import TunekitError, did_you_mean

_SPLIT = {"valid_pct": 0.2, "seed": 42, "strict": False}
_CSV = {
    "labels": "labels.csv", "fn_col": "image_name", "label_col": "tags", "folder": "train",
    "suffix": ".jpg", "delimiter": " ", "valid_col": "",
}
_REGEX = {"pattern": r"^(.*)_\d+\.\w+$"}
_SHAPES = {"n": 4500, "size": 64, "shapes_seed": 0}

# Every option a kind accepts, with its default (which also fixes its type).
OPTIONS: dict[str, dict[str, Any]] = {
    "folder": {**_SPLIT},
    "csv": {**_SPLIT, **_CSV},
    "regex": {**_SPLIT, **_REGEX},
    "pets": {**_SPLIT, **_REGEX},
    "planet": {**_SPLIT, **_CSV},
    "imagenette": {**_SPLIT},
    "fashion_mnist": {**_SPLIT, "n_train": 0, "n_valid": 0},  # per class, 0: all; the official split
    "shapes": {**_SPLIT, **_SHAPES},
    "shapes-multilabel": {**_SPLIT, **_SHAPES},
}
NEEDS_PATH = ("folder", "csv", "regex")
GENERATED = ("shapes", "shapes-multilabel")  # made by tunekit: no PATH


def kinds_help() -> str:
    """Every kind as it is written: ``folder:PATH``, ``pets[:PATH]``, ``shapes``."""
    return ", ".join(k + (":PATH" if k in NEEDS_PATH else "" if k in GENERATED else "[:PATH]") for k in OPTIONS)


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def opt(self, name: str) -> Any:
        """An option's value, or the kind's default for it."""
        return self.options.get(name, OPTIONS[self.kind][name])

    @classmethod
    def parse(cls, spec: str | dict[str, Any] | DataSpec) -> DataSpec:
        """Parse a spec string (or a dict ``{"kind": ..., "path": ..., **options}``)."""
        if isinstance(spec, DataSpec):
            return spec
        if isinstance(spec, dict):
            raw = dict(spec)
            kind, path = raw.pop("kind", None), raw.pop("path", None)
            return cls._make(str(kind), None if path is None else str(path), raw, repr(spec))
        if not isinstance(spec, str) or not spec.strip():
            raise TunekitError(f"data must be a spec string such as 'folder:PATH' or 'shapes', got {spec!r}")
        head, _, query = spec.strip().partition("?")
        kind, _, path = head.partition(":")
        if kind not in OPTIONS and not path and Path(kind).expanduser().is_dir():
            raise TunekitError(f"data {spec!r} is a directory: write 'folder:{spec}' (or csv:/regex:)")
        options = parse_options(query)
        return cls._make(kind, path or None, options, repr(spec))

    @classmethod
    def _make(cls, kind: str, path: str | None, options: dict[str, Any], shown: str) -> DataSpec:
        if kind not in OPTIONS:
            raise TunekitError(
                f"unknown data kind {kind!r} in {shown}{did_you_mean(kind, OPTIONS)}; "
                f"known kinds: {', '.join(OPTIONS)}"
            )
        if kind in NEEDS_PATH and not path:
            raise TunekitError(f"data {shown} needs a path: '{kind}:PATH'")
        defaults = OPTIONS[kind]
        typed = {}
        for name, value in options.items():
            if name not in defaults:
                raise TunekitError(
                    f"unknown option {name!r} for data kind {kind!r}{did_you_mean(name, defaults)}; "
                    f"options: {', '.join(defaults)}"
                )
            typed[name] = _typed(name, value, defaults[name], shown)
        if not 0.0 < typed.get("valid_pct", 0.2) < 1.0:
            raise TunekitError(f"valid_pct must be between 0 and 1, got {typed['valid_pct']!r} in {shown}")
        return cls(kind, Path(path).expanduser() if path else None, typed)

    def check_path(self) -> None:
        """A local path that does not exist fails at once, before any model or weights work."""
        if self.path is not None and not self.path.exists():
            raise TunekitError(f"data folder {str(self.path)!r} does not exist")

    def with_options(self, **options: Any) -> DataSpec:
        """A copy with ``options`` set (validated like parsed ones)."""
        return self._make(self.kind, None if self.path is None else str(self.path), {**self.options, **options},
                          repr(str(self)))

    def __str__(self) -> str:
        text = self.kind + (f":{self.path}" if self.path else "")
        if self.options:
            text += "?" + "&".join(f"{k}={_encode(v)}" for k, v in sorted(self.options.items()))
        return text


def parse_options(query: str) -> dict[str, str]:
    """``a=1&b=x%26y`` -> {"a": "1", "b": "x&y"}. Only ``%XX`` escapes are decoded (not ``+``, which
    form encoding reads as a space); a name without ``=`` has the empty value (``?strict``: on)."""
    options = {}
    for field_ in query.split("&"):
        if field_:
            name, _, value = field_.partition("=")
            options[unquote(name)] = unquote(value)
    return options


_ENCODE = {c: f"%{ord(c):02X}" for c in "%&# \t\n\r"}


def _encode(value: Any) -> str:
    """An option value as :func:`parse_options` reads it back (booleans as 1/0)."""
    text = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return "".join(_ENCODE.get(c, c) for c in text)


def _typed(name: str, value: Any, default: Any, shown: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on", ""):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
    else:
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            pass
    raise TunekitError(f"option {name}={value!r} in data {shown} must be a {type(default).__name__}")
