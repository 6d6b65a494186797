# The demo search: what a search looks like, on a 2-core CPU, offline, in a few minutes.
#
# Three tiny timm models trained from scratch at 48px on the built-in `shapes` data (4,500
# generated 64px images, made on first use), searching the pooling head, the resize method,
# the learning rate and zero-init. 16 random trials of at most 8 epochs; ASHA stops the
# hopeless ones after 1 or 3 epochs, so only the promising few train to the end (about a third
# of the epochs of running every trial to the end). Cost: about 2 minutes on 2 CPU cores.
#
#   tunekit search search_spaces/demo.py
#   tensorboard --logdir ~/ray_results/demo
from ray import tune

data = "shapes"
epochs = 8
num_samples = 16
searcher = "random"
asha = {"grace_period": 1, "reduction_factor": 3}
cpus_per_trial = 1
gpus_per_trial = 0

space = {
    "model": tune.choice(["test_resnet", "test_convnext", "test_vit"]),
    "pool": tune.choice(["avg", "concat"]),
    "resize": tune.choice(["crop", "squish"]),
    "lr": tune.loguniform(3e-4, 3e-2),
    "zero_init": tune.choice([True, False]),
    "pretrained": False,  # no network here: from scratch
    "batch_size": 64,
    "img_size": 48,  # the shapes are 64px; 48 learns them as well (error 0.08) in 60% of the time
}
