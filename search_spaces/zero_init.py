# The zero-init study: does timm's zero_init_last (the last BatchNorm of each residual block
# starting at zero) help a short from-scratch run? The finding it reproduces: in a 5-epoch
# from-scratch ResNet-18 run it cost about 5 points of accuracy.
#
# resnet18 from scratch on Imagenette (10 ImageNet classes, 160px images, trained at 128px),
# one one-cycle of 5 epochs, zero_init on vs off, 3 seeds each: 6 trials, all run to the end.
# Cost: about 10 minutes on one modern GPU (0.5 GPU per trial); hours on a CPU.
# Needs network once (Imagenette, ~100 MB); no pretrained weights.
#
#   tunekit search search_spaces/zero_init.py --num-gpus 1
#   tunekit search search_spaces/zero_init.py --set data=shapes --set gpus_per_trial=0   # CPU toy
from ray import tune

data = "imagenette"
searcher = "grid"
asha = None  # every trial to the end: the comparison needs full runs
gpus_per_trial = 0.5
cpus_per_trial = 2

space = {
    "model": "resnet18",
    "pretrained": False,
    "zero_init": tune.grid_search([True, False]),
    "seed": tune.grid_search([0, 1, 2]),
    "epochs": 5,
    "lr": 0.008,
    "batch_size": 64,
    "img_size": 128,
}
