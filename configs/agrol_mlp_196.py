"""AGRoL-MLP as published (window 196) on the Bandai benchmark.

    mmar train configs/agrol_mlp_196.py --workdir runs/agrol_mlp_196
"""
from configs.common import sparse_body_config
from mmar.tasks.agrol_mlp import AGRoLMLPModelConfig


def get_config():
    return sparse_body_config("agrol_mlp_196", "agrol_mlp", AGRoLMLPModelConfig(window=196))
