"""MotionMAR stage 2 (the paper's model): MAN (depth 8, width 512) + SAC + MRN (2-layer Bi-GRU)
over the frozen TMT VQ-VAE of ``configs/motionmar_vqvae.py``.

    mmar train configs/motionmar_vqvae.py --workdir runs/motionmar_vqvae
    mmar train configs/motionmar.py --workdir runs/motionmar
    mmar eval --checkpoint runs/motionmar --split test                        # with MRN
    mmar eval --checkpoint runs/motionmar --split test --set model.refine=false   # ablation: no MRN
"""
from configs.common import motionmar_experiment
from mmar.tasks.motionmar import MotionMARModelConfig


def get_config():
    return motionmar_experiment(
        "motionmar", "motionmar", MotionMARModelConfig(vqvae_workdir="runs/motionmar_vqvae"), lr=2e-4)
