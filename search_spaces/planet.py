# The study's search on the Planet sample (multi-label satellite tiles, ~1,000 images).
#
# Strong small backbones from "The best vision models for fine-tuning", pretrained, with
# fastai's fine_tune recipe (1 frozen + 5 epochs); pooling concat vs avg, resize crop vs
# squish, lr 0.008 vs 0.02: a 6 x 2 x 2 x 2 grid = 48 trials. Half a GPU per trial packs two
# trials on each GPU. ASHA stops the clearly worse configs after 2 of 6 epochs.
# Cost: roughly 15-25 minutes on 4 modern GPUs (the dataset is small; model start-up dominates).
# Needs network once per machine (the dataset and the weights), then runs offline.
#
#   tunekit search search_spaces/planet.py --num-gpus 4
from ray import tune

data = "planet"
metric = "error_rate"  # 1 - accuracy_multi at threshold 0.5; f2 is reported too
searcher = "grid"
asha = {"grace_period": 2, "reduction_factor": 3}
gpus_per_trial = 0.5
cpus_per_trial = 2

space = {
    "model": tune.grid_search([
        "convnext_tiny", "vit_small_patch16_224", "resnet26d", "regnety_006", "levit_256",
        "swin_tiny_patch4_window7_224",
    ]),
    "pool": tune.grid_search(["concat", "avg"]),
    "resize": tune.grid_search(["crop", "squish"]),
    "lr": tune.grid_search([0.008, 0.02]),
    "pretrained": True,
    "freeze_epochs": 1,
    "epochs": 5,
    "batch_size": 64,
    "img_size": 224,
}
