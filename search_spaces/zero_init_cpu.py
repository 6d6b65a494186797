# The zero-init study on real data, on a CPU: does timm's zero_init_last (the last BatchNorm of each
# residual block starting at zero) change a short from-scratch ResNet-18 run?
#
# resnet18 from scratch on Fashion-MNIST (300 training and 100 validation images per class, the
# latter from the official test split) at 32 px, one one-cycle of 5 epochs, zero_init on vs off,
# 5 seeds each: 10 trials, all run to the end. The report's "What each searched axis did" pairs the
# runs that differ only in zero_init (same seed) and gives the mean difference with its interval.
# Cost: about 6 minutes on 2 CPU cores. Needs Fashion-MNIST (apt-get install dataset-fashion-mnist,
# else it is downloaded); no pretrained weights.
#
#   tunekit search search_spaces/zero_init_cpu.py
from ray import tune

data = "fashion_mnist?n_train=300&n_valid=100"
searcher = "grid"
asha = None  # every trial to the end: the comparison needs full runs
gpus_per_trial = 0
cpus_per_trial = 1

space = {
    "model": "resnet18",
    "pretrained": False,
    "zero_init": tune.grid_search([True, False]),
    "seed": tune.grid_search([0, 1, 2, 3, 4]),
    "epochs": 5,
    "lr": 0.008,
    "batch_size": 64,
    "img_size": 32,
}
