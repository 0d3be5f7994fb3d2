"""AGRoL-MLP with a 41-frame window (Mem-MLP's base) on the Bandai benchmark.

    mmar train configs/agrol_mlp_41.py --workdir runs/agrol_mlp_41
"""
from configs.common import sparse_body_config
from mmar.tasks.sparse_body import SparseBodyModelConfig


def get_config():
    return sparse_body_config("agrol_mlp_41", SparseBodyModelConfig(kind="agrol_mlp", window=41))
