"""``python -m tunekit.cli``: the same as the ``tunekit`` command."""

from . import entry

entry()
