"""MotionMAR ablation, stage 1: a TMT VQ-VAE with one scale (20 tokens, plain VQ).

    mmar train configs/motionmar_vqvae_1scale.py --workdir runs/motionmar_vqvae_1scale
"""
from configs.common import motionmar_experiment
from mmar.tasks.motionmar import MotionMARModelConfig


def get_config():
    return motionmar_experiment("motionmar_vqvae_1scale", MotionMARModelConfig(kind="tmt_vqvae", lengths=(20,)), lr=2e-4)
