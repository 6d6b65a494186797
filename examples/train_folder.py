"""Fine-tune one configuration on your own folder of images, from Python.

    python examples/train_folder.py ~/data/birds --model convnext_tiny --epochs 5
    python examples/train_folder.py            # no folder: writes and uses the built-in shapes data

A folder is ``DIR/<class>/*.jpg`` (validation from ``DIR/valid`` if present, else a random 20%).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import tunekit
from tunekit.data.shapes import write_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pretrained", action="store_true", help="start from timm's hub weights")
    parser.add_argument("--n", type=int, default=1200, help="images to generate when no folder is given")
    args = parser.parse_args()

    folder = args.folder or write_shapes(Path(tempfile.mkdtemp()) / "shapes", n=args.n, size=48)
    result = tunekit.train(
        data=f"folder:{folder}", model=args.model, pretrained=args.pretrained, epochs=args.epochs,
        report=lambda metrics, state: print(f"epoch {metrics['epoch']}: error_rate {metrics['error_rate']:.3f}"),
    )
    info = result.info
    print(f"{args.model} on {info.device} ({info.precision}), {info.n_train} train / {info.n_valid} valid "
          f"images, {len(info.classes)} classes: final error_rate {result.history[-1]['error_rate']:.3f}")


if __name__ == "__main__":
    main()
