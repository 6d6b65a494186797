"""Where tunekit keeps what it makes on a machine (a contract module: imports nothing of tunekit).

    data_root()     datasets, generated data, decode-once caches: $TUNEKIT_DATA or ~/.cache/tunekit/data
    cache_root()    beside it: timm's name index, the GPU memory probes
"""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """Where datasets, generated data and decode caches live: $TUNEKIT_DATA or ~/.cache/tunekit/data."""
    return Path(os.environ.get("TUNEKIT_DATA") or Path.home() / ".cache" / "tunekit" / "data").expanduser()


def cache_root() -> Path:
    """Beside the data root: small per-machine caches (timm's name index, GPU memory probes)."""
    return data_root().parent
