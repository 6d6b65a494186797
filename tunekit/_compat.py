"""Import-time workarounds for broken but common installs, and for a costly import; installed by ``import tunekit``.

torchvision wheels from PyPI are CUDA builds. Installed over a CPU-only torch (what a
machine that can only reach PyPI gets, with torch's CPU wheel), torchvision's compiled ops
cannot load, and torchvision >= 0.2x then fails at import on an unguarded fake-kernel
registration for ``torchvision::nms``. timm imports torchvision, so nothing would work.
We declare the two op schemas it registers unguarded and run its import again: torchvision's
pure Python parts (transforms, feature extraction), which timm uses, then work; its detection
ops (nms, roi_align) stay unavailable, and tunekit never calls them.

timm imports W&B at its own import where W&B is installed (``try: import wandb``, for a logging helper,
``timm.utils.update_summary(log_wandb=True)``, that tunekit never calls): 0.7 s of every process that imports
timm, each trial's worker among them, on the 2-core machine. While timm's own module runs, ``import wandb``
finds nothing (timm goes on without its helper's W&B: in a process that imported tunekit first, timm's
``update_summary(log_wandb=True)`` cannot log to W&B); W&B itself is untouched: imported before timm, or after, it
is the whole package as usual.

``import tunekit`` must stay cheap (``tunekit --help`` loads no torch), so both are import
hooks: they cost nothing until something, tunekit or the user's own ``import timm``, imports
torchvision or timm. On a normal install (matching CPU or CUDA builds) torchvision's first import succeeds and
nothing else happens.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from types import ModuleType

_libraries: list = []  # keep the Library objects alive: dropping one unregisters its ops


class _Around(importlib.abc.Loader):
    """A package's own loader, which ``exec_module`` runs in a way of its own."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)


class _Loader(_Around):
    """torchvision's own loader, run again after declaring the missing op schemas if it fails on them."""

    def exec_module(self, module: ModuleType) -> None:
        try:
            self.real.exec_module(module)
            return
        except RuntimeError as e:
            if "torchvision::nms" not in str(e):
                raise
        for name in [n for n in sys.modules if n.startswith("torchvision.")]:
            del sys.modules[name]
        import torch

        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        _libraries.append(lib)
        self.real.exec_module(module)


class _WithoutWandb(_Around):
    """timm's own loader, run while ``import wandb`` finds nothing (unless W&B is already imported)."""

    def exec_module(self, module: ModuleType) -> None:
        if "wandb" in sys.modules:
            self.real.exec_module(module)
            return
        sys.modules["wandb"] = None  # an ImportError for timm's `import wandb`
        try:
            self.real.exec_module(module)
        finally:
            if "wandb" in sys.modules and sys.modules["wandb"] is None:
                del sys.modules["wandb"]


class _Finder(importlib.abc.MetaPathFinder):
    """Finds one package as usual, once, and gives it a loader of ours around its own."""

    def __init__(self, name: str, loader: type[_Around]) -> None:
        self.name, self.loader = name, loader

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:  # another thread's import of it found us first
            return None
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = self.loader(spec.loader)
        return spec


def install() -> None:
    """Guard torchvision's next import and timm's (nothing to do for one already imported)."""
    for name, loader in (("torchvision", _Loader), ("timm", _WithoutWandb)):
        if name not in sys.modules and not any(isinstance(f, _Finder) and f.name == name for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder(name, loader))


install()
