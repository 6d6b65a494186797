"""A search from Python over your own folder of images (``DIR/<class>/*.jpg``).

    python examples/search_folder.py ~/data/birds --models resnet26d,convnext_tiny --pretrained --epochs 5
    python examples/search_folder.py        # no folder: generated shapes, tiny models, CPU, a few minutes

The space is a plain dict (the same settings a search_spaces/*.py file assigns).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ray import tune

import tunekit
from tunekit.data.shapes import write_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--models", default="test_resnet,test_convnext")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pretrained", action="store_true", help="fine-tune timm's hub weights")
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--storage-path", default="~/ray_results")
    args = parser.parse_args()

    folder = args.folder or write_shapes(Path(tempfile.mkdtemp()) / "shapes", n=600, size=48)
    found = tunekit.search(
        {
            "name": "folder_search",
            "data": f"folder:{folder}",
            "epochs": args.epochs,
            "asha": {"grace_period": 1, "reduction_factor": 2},
            "space": {
                "model": tune.grid_search(args.models.split(",")),
                "pool": tune.grid_search(["avg", "concat"]),
                "lr": tune.choice([0.002, 0.008]),
                "pretrained": args.pretrained,
                "img_size": args.img_size,
            },
        },
        storage_path=args.storage_path,
    )
    best = found.best(1).iloc[0]
    print(f"best: {best['model']} pool={best['pool']} lr={best['lr']}: error_rate {best['error_rate']:.3f}")


if __name__ == "__main__":
    main()
