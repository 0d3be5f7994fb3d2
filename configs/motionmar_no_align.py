"""MotionMAR ablation: SAC without per-scale temporal alignment (the sparse features only enter
through the pooled global AdaLN condition, nothing is added to the tokens of each scale).

    mmar train configs/motionmar_no_align.py --workdir runs/motionmar_no_align
"""
from configs.common import motionmar_experiment
from mmar.tasks.motionmar import MotionMARModelConfig


def get_config():
    return motionmar_experiment("motionmar_no_align", "motionmar", MotionMARModelConfig(
        sac_align=False, vqvae_workdir="runs/motionmar_vqvae"), lr=2e-4)
