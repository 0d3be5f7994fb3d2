"""AGRoL-MLP with a 41-frame window (Mem-MLP's base) on the Bandai benchmark.

    mmar train configs/agrol_mlp_41.py --workdir runs/agrol_mlp_41
"""
from configs.common import sparse_body_config
from mmar.tasks.agrol_mlp import AGRoLMLPModelConfig


def get_config():
    return sparse_body_config("agrol_mlp_41", "agrol_mlp", AGRoLMLPModelConfig(window=41))
