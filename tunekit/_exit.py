"""A process that has done its work ends at once: no last garbage collections over torch's, timm's and Ray's
objects at the interpreter's exit.

Python's exit collects every reference cycle it can find before it tears the modules down; with torch, timm
and Ray loaded that is 2-3 s of one core (measured on the 2-core machine: a ``tunekit search`` of 2 trials
returned its prompt 2.8 s after its last line, 0.5 s with this), after the search's output is complete.
``gc.freeze``, the last exit handler to run, moves every object to the collector's permanent generation: the
exit handlers before it (Ray's, W&B's, logging's) and the modules' teardown run as before, and only the final
collections find nothing to do. Objects still alive at exit are then not collected, as Python already allows
(it does not promise ``__del__`` for objects that exist when the interpreter exits).

Used by the ``tunekit`` command and by trials' workers (each a process Ray ends after its last trial); not by
``import tunekit``: a user's own program keeps Python's usual exit.
"""

from __future__ import annotations

import atexit
import gc

_registered = False


def skip_final_collections() -> None:
    """Have this process's exit skip the final garbage collections (once per process; see the module)."""
    global _registered
    if not _registered:
        atexit.register(gc.freeze)  # first registered, so the last to run
        _registered = True
