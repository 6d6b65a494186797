"""User-facing errors: raised for bad input, shown by the CLI as one message, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TunekitError(Exception):
    """Bad input (file, key, value) that the user can fix; the message says what and where."""


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choices, or '' when none is close."""
    matches = difflib.get_close_matches(str(value), list(choices), n=3, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"


def one_of(what: str, value: object, choices: Iterable[str]) -> TunekitError:
    """The error for a value outside a fixed set: quotes it, lists the set, suggests a match."""
    choices = list(choices)
    return TunekitError(
        f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}{did_you_mean(value, choices)}"
    )
