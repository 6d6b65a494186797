"""Put a search's best model to work on new images, from Python.

    python examples/use_the_winner.py ~/ray_results/demo ~/photos        # a run folder and images
    python examples/use_the_winner.py                                     # no run: a tiny search first (CPU, ~1 min)

The search kept its best trials' weights (``keep_best``, default 3); ``SearchResult.best_model()`` or
``tunekit.load_model(folder)`` (a folder from ``tunekit export``) gives a model with ``.predict``
(image paths, PIL images or uint8 arrays) and ``.module`` (the torch nn.Module).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import tunekit
from tunekit.data.shapes import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a run folder; default: a tiny search made here")
    parser.add_argument("images", nargs="*", type=Path, help="images to label; default: a few generated ones")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if args.run is None:
        found = tunekit.search({"name": "tiny", "data": "shapes?n=600&size=32", "epochs": 2, "asha": None,
                                "space": {"model": "test_resnet", "pretrained": False, "img_size": 32,
                                          "batch_size": 32}},
                               storage_path=tmp / "runs", echo=lambda line: None)
        model = found.best_model()
    else:
        from tunekit.export import export_trial

        export_trial(args.run.expanduser(), tmp / "best")  # what `tunekit export RUN tmp/best` does
        model = tunekit.load_model(tmp / "best")
    images = args.images or [render(i, 11, 40, False)[0] for i in range(4)]  # PIL images
    print(model)
    for prediction in model.predict(images, top=2):
        others = ", ".join(f"{label} {p:.2f}" for label, p in prediction.top[1:])
        print(f"{prediction.source}: {' '.join(prediction.labels)} ({prediction.probability:.2f}; then {others})")
    print(f"the module: {type(model.module).__name__}, "
          f"{sum(p.numel() for p in model.module.parameters()) / 1e6:.2f}M parameters")


if __name__ == "__main__":
    main()
