"""Mem-MLP-60 on the Bandai benchmark.

    mmar train configs/mem_mlp_60.py --workdir runs/mem_mlp_60
"""
from configs.common import sparse_body_config
from mmar.tasks.mem_mlp import MemMLPModelConfig


def get_config():
    return sparse_body_config("mem_mlp_60", "mem_mlp", MemMLPModelConfig(window=60, vqvae_workdir="runs/mem_mlp_vqvae"))
