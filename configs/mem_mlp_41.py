"""Mem-MLP-41 (the paper's default) on the Bandai benchmark.

    mmar train configs/mem_mlp_41.py --workdir runs/mem_mlp_41
"""
from configs.common import sparse_body_config
from mmar.tasks.sparse_body import SparseBodyModelConfig


def get_config():
    return sparse_body_config("mem_mlp_41", SparseBodyModelConfig(kind="mem_mlp", window=41, vqvae_workdir="runs/mem_mlp_vqvae"))
