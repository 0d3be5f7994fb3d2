"""MotionMAR ablation, stage 2: one scale instead of three (all 20 tokens predicted in one pass
from the sparse condition) over ``configs/motionmar_vqvae_1scale.py``.

    mmar train configs/motionmar_1scale.py --workdir runs/motionmar_1scale
"""
from configs.common import motionmar_experiment
from mmar.tasks.motionmar import MotionMARModelConfig


def get_config():
    return motionmar_experiment("motionmar_1scale", "motionmar", MotionMARModelConfig(
        lengths=(20,), vqvae_workdir="runs/motionmar_vqvae_1scale"), lr=2e-4)
