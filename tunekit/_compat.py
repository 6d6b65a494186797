"""Import-time workarounds for broken but common installs; installed by ``import tunekit``.

torchvision wheels from PyPI are CUDA builds. Installed over a CPU-only torch (what a
machine that can only reach PyPI gets, with torch's CPU wheel), torchvision's compiled ops
cannot load, and torchvision >= 0.2x then fails at import on an unguarded fake-kernel
registration for ``torchvision::nms``. timm imports torchvision, so nothing would work.
We declare the two op schemas it registers unguarded and run its import again: torchvision's
pure Python parts (transforms, feature extraction), which timm uses, then work; its detection
ops (nms, roi_align) stay unavailable, and tunekit never calls them.

``import tunekit`` must stay cheap (``tunekit --help`` loads no torch), so the fix is an import
hook: it costs nothing until something, tunekit or the user's own ``import timm``, imports
torchvision. On a normal install (matching CPU or CUDA builds) the first import succeeds and
nothing else happens.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from types import ModuleType

_libraries: list = []  # keep the Library objects alive: dropping one unregisters its ops


class _Loader(importlib.abc.Loader):
    """torchvision's own loader, run again after declaring the missing op schemas if it fails on them."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

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


class _Finder(importlib.abc.MetaPathFinder):
    """Finds torchvision as usual, once, and gives it the loader above."""

    def find_spec(self, name, path, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


class _LazyWandb(importlib.abc.MetaPathFinder):
    """W&B's package, executed when first used rather than when imported: timm imports it (where it is
    installed) at its own import, for a logging helper tunekit never calls, which cost 0.7 s of every process
    that imports timm (each trial's worker, on the 2-core machine); ``wandb.init`` loads it whole."""

    def find_spec(self, name, path, target=None):
        if name != "wandb":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("wandb")
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def install() -> None:
    """Guard torchvision's next import, and defer W&B's (nothing to do for one already imported)."""
    for name, finder in (("torchvision", _Finder), ("wandb", _LazyWandb)):
        if name not in sys.modules and not any(isinstance(f, finder) for f in sys.meta_path):
            sys.meta_path.insert(0, finder())


install()
