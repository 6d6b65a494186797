"""Where tunekit keeps what it makes on a machine (a contract module: imports nothing of tunekit).

    data_root()     datasets, generated data, decode-once caches: $TUNEKIT_DATA or ~/.cache/tunekit/data
    cache_root()    beside it: timm's name index, the GPU memory probes
    MachineFile(path).get(key) / .update(key, values)    a per-machine JSON file of measurements
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def data_root() -> Path:
    """Where datasets, generated data and decode caches live: $TUNEKIT_DATA or ~/.cache/tunekit/data."""
    return Path(os.environ.get("TUNEKIT_DATA") or Path.home() / ".cache" / "tunekit" / "data").expanduser()


def cache_root() -> Path:
    """Beside the data root: small per-machine caches (timm's name index, GPU memory probes)."""
    return data_root().parent


class MachineFile:
    """A JSON object of measurements kept on this machine (the GPU memory probes, step and compile times):
    ``{key: {name: value}}``. Each measurement is added as soon as it is made, under the file's lock (other
    processes may measure at once), and the file is replaced whole, so a reader never sees half of it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> dict:
        return dict(self.read().get(key, {}))

    def update(self, key: str, values: dict) -> None:
        """``values`` merged into ``key``'s (the latest of a name wins)."""
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            entries = self.read()
            entries[key] = {**entries.get(key, {}), **values}
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
