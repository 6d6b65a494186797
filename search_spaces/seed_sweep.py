# The study's full sweep: its list of timm models that take 224px images, fine-tuned with
# fastai's recipe (1 frozen + 5 epochs), pooling concat vs avg, squish, lr 0.008 vs 0.02, 3 runs
# each (seeds 0-2): 85 x 2 x 2 x 3 = 1,020 trials, every one run to the end as in the study.
# Model names are the study's, in timm 1.0's spelling (e.g. convnext_tiny_in22k is now
# convnext_tiny.fb_in22k). Pets by default; --set data=planet for the other dataset.
# Cost: days of GPU time (the study's runs took ~1-4 minutes each on one GPU); pack small models
# with --gpus-per-trial 0.25 and spread the search over a 'ray start' cluster.
# Needs network once per machine for the dataset and each model's weights.
#
#   tunekit search search_spaces/seed_sweep.py --address auto --gpus-per-trial 0.5
from ray import tune

data = "pets"
searcher = "grid"
asha = None
gpus_per_trial = 0.5
cpus_per_trial = 2

MODELS = [
    'convnext_base', 'convnext_small', 'convnext_tiny', 'convnext_tiny_hnf',
    'efficientnet_b0', 'efficientnet_es', 'efficientnet_es_pruned', 'efficientnet_lite0',
    'levit_128', 'levit_128s', 'levit_192', 'levit_256',
    'levit_384', 'regnetx_002', 'regnetx_004', 'regnetx_006',
    'regnetx_008', 'regnetx_016', 'regnetx_032', 'regnetx_040',
    'regnetx_064', 'regnetx_080', 'regnetx_120', 'regnetx_160',
    'regnety_002', 'regnety_004', 'regnety_006', 'regnety_008',
    'regnety_016', 'regnety_120', 'resnet101', 'resnet152',
    'resnet18', 'resnet18d', 'resnet26', 'resnet26d',
    'resnet34', 'resnet34d', 'resnet50', 'resnet50d',
    'resnet50_gn', 'resnetblur50', 'resnetrs50', 'resnetv2_101',
    'resnetv2_50', 'resnetv2_50x1_bit.goog_distilled_in1k', 'vit_base_patch16_224', 'vit_base_patch16_224_miil',
    'vit_base_patch16_224.sam_in1k', 'vit_base_patch32_224', 'vit_base_patch32_224.sam_in1k', 'vit_small_patch16_224',
    'vit_small_patch32_224', 'vit_small_r26_s32_224', 'vit_tiny_patch16_224', 'vit_tiny_r_s16_p8_224',
    'swin_base_patch4_window7_224', 'swin_base_patch4_window7_224.ms_in22k', 'swin_large_patch4_window7_224', 'swin_large_patch4_window7_224.ms_in22k',
    'swin_s3_base_224', 'swin_s3_small_224', 'swin_s3_tiny_224', 'swin_small_patch4_window7_224',
    'swin_tiny_patch4_window7_224', 'swinv2_cr_small_224', 'swinv2_cr_small_ns_224', 'swinv2_cr_tiny_ns_224',
    'convnext_base.fb_in22k', 'convnext_large.fb_in22k', 'convnext_small.fb_in22k', 'convnext_tiny.fb_in22k',
    'efficientnetv2_rw_m', 'efficientnetv2_rw_s', 'efficientnetv2_rw_t', 'mobilevit_s',
    'mobilevit_xs', 'mobilevit_xxs', 'regnetz_040', 'regnetz_040_h',
    'regnetz_b16', 'regnetz_c16', 'regnetz_d32', 'regnetz_d8',
    'regnetz_e8',
]

space = {
    "model": tune.grid_search(MODELS),
    "pool": tune.grid_search(["concat", "avg"]),
    "resize": "squish",
    "lr": tune.grid_search([0.008, 0.02]),
    "seed": tune.grid_search([0, 1, 2]),
    "pretrained": True,
    "freeze_epochs": 1,
    "epochs": 5,
    "batch_size": 64,
    "img_size": 224,
}
