"""Mem-MLP-41 (the paper's default) on the Bandai benchmark.

    mmar train configs/mem_mlp_41.py --workdir runs/mem_mlp_41
"""
from configs.common import sparse_body_config
from mmar.tasks.mem_mlp import MemMLPModelConfig


def get_config():
    return sparse_body_config("mem_mlp_41", "mem_mlp", MemMLPModelConfig(window=41, vqvae_workdir="runs/mem_mlp_vqvae"))
