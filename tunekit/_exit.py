"""A process that has done its work ends at once: no last garbage collections over torch's, timm's and Ray's
objects at the interpreter's exit.

Python's exit collects every reference cycle it can find before it tears the modules down; with torch, timm
and Ray loaded that is 2-3 s of one core (measured on the 2-core machine with py-spy: ``gc_collect_main`` at
exit; a ``tunekit search`` of 2 trials returned its prompt 2.8 s after its last line, 0.5 s with this), after
the command's output is complete. ``gc.freeze``, run as an exit handler, moves every object then alive to the
collector's permanent generation: every exit handler (Ray's shutdown, W&B's, logging's; before or after it)
and the modules' teardown run as before, and the final collections find nothing to do. Registered before any
heavy import (the command's), it runs after the other handlers; registered later (a trial's worker, which has
imported torch and Ray by then), before some of them, which changes nothing: they still run, and the objects
they free are freed by reference counting. What is left is objects in reference cycles at exit: never
finalized, so a ``__del__`` that would have flushed or removed something does not run. Python already allows
that (it does not promise ``__del__`` for objects that exist when the interpreter exits); tunekit's own files
are closed explicitly, not by ``__del__``.

Used by the ``tunekit`` command and by trials' workers (each a process Ray ends with ``sys.exit`` after its last
trial); not by ``import tunekit``: a user's own program keeps Python's usual exit.
"""

from __future__ import annotations

import atexit
import gc

_registered = False


def skip_final_collections() -> None:
    """Have this process's exit skip the final garbage collections (once per process; see the module)."""
    global _registered
    if not _registered:
        atexit.register(gc.freeze)
        _registered = True
