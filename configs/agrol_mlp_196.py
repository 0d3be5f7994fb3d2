"""AGRoL-MLP as published (window 196) on the Bandai benchmark.

    mmar train configs/agrol_mlp_196.py --workdir runs/agrol_mlp_196
"""
from configs.common import sparse_body_config
from mmar.tasks.sparse_body import SparseBodyModelConfig


def get_config():
    return sparse_body_config("agrol_mlp_196", SparseBodyModelConfig(kind="agrol_mlp", window=196))
