"""Import-time workarounds for broken but common installs; imported first by ``tunekit``.

torchvision wheels from PyPI are CUDA builds. Installed over a CPU-only torch (what a
machine that can only reach PyPI gets, with torch's CPU wheel), torchvision's compiled ops
cannot load, and torchvision >= 0.2x then fails at import on an unguarded fake-kernel
registration for ``torchvision::nms``. timm imports torchvision, so nothing would work.
We declare the two op schemas it registers unguarded and import again: torchvision's pure
Python parts (transforms, feature extraction), which timm uses, then work; its detection
ops (nms, roi_align) stay unavailable, and tunekit never calls them. On a normal install
(matching CPU or CUDA builds) the first import succeeds and nothing here happens.
"""

from __future__ import annotations

import sys

import torch

_libraries: list = []  # keep the Library objects alive: dropping one unregisters its ops


def ensure_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _libraries.append(lib)
    import torchvision  # noqa: F401


ensure_torchvision()
