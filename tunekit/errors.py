"""User-facing errors: raised for bad input, shown by the CLI as one message, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TunekitError(Exception):
    """Bad input (file, key, value) that the user can fix; the message says what and where."""


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choices, or '' when none is close.

    Close means difflib-similar, or starting with what was typed (``grace`` -> ``grace_period``).
    """
    choices, text = list(choices), str(value)
    matches = difflib.get_close_matches(text, choices, n=3, cutoff=0.6)
    if len(text) >= 3:
        matches += [c for c in choices if c.startswith(text) and c not in matches]
    matches = matches[:3]
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"


def one_of(what: str, value: object, choices: Iterable[str]) -> TunekitError:
    """The error for a value outside a fixed set: quotes it, lists the set, suggests a match."""
    choices = list(choices)
    return TunekitError(
        f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}{did_you_mean(value, choices)}"
    )
