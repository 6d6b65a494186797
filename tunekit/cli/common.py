"""What every command shares: bad input as one line and exit code 2, --debug, --strict, logging."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from ..errors import TunekitError


class InputError(click.ClickException):
    """A TunekitError shown as one line, exit code 2 (bad input), no traceback."""

    exit_code = 2


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input (a TunekitError) is one line on stderr and exit code 2; ``--debug`` shows its traceback."""

    @click.option("--debug", is_flag=True, help="On an error, show the full traceback.")
    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TunekitError as e:
            if debug:
                raise
            raise InputError(str(e)) from None

    return wrapper


def strict_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--strict", is_flag=True,
                        help="Fail on unreadable images instead of skipping them with a warning.")(command)


def strict_spec(spec: str) -> str:
    """The data spec with ``strict=1``: unreadable images are an error."""
    from ..data.spec import DataSpec

    return str(DataSpec.parse(spec).with_options(strict=True))


class GpuShare(click.ParamType):
    """A number of GPUs (0.25: a quarter), or 'auto'."""

    name = "FRACTION|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> float | str:
        if value == "auto" or isinstance(value, float):
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


def setup_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    warnings.showwarning = lambda message, *args, **kwargs: click.echo(f"warning: {message}", err=True)
