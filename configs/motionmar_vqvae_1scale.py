"""MotionMAR ablation, stage 1: a TMT VQ-VAE with one scale (20 tokens, plain VQ).

    mmar train configs/motionmar_vqvae_1scale.py --workdir runs/motionmar_vqvae_1scale
"""
from configs.common import motionmar_experiment
from mmar.tasks.tmt_vqvae import TMTVQVAEModelConfig


def get_config():
    return motionmar_experiment("motionmar_vqvae_1scale", "tmt_vqvae", TMTVQVAEModelConfig(lengths=(20,)), lr=2e-4)
