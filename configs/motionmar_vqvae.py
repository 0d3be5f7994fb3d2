"""MotionMAR stage 1: the TMT VQ-VAE (scales 5/10/20 over 20-frame windows at 60 fps, learned
1024 x 64 codebook, width 512), on the Bandai benchmark.

    mmar train configs/motionmar_vqvae.py --workdir runs/motionmar_vqvae
"""
from configs.common import motionmar_experiment
from mmar.tasks.tmt_vqvae import TMTVQVAEModelConfig


def get_config():
    return motionmar_experiment("motionmar_vqvae", "tmt_vqvae", TMTVQVAEModelConfig(), lr=2e-4)
