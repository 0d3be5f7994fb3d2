"""Mem-MLP's MLP VQ-VAE (stage 1; frozen afterwards and fed to the Memory-Blocks).

    mmar train configs/mem_mlp_vqvae.py --workdir runs/mem_mlp_vqvae
"""
from configs.common import sparse_body_config
from mmar.tasks.mlp_vqvae import MLPVQVAEModelConfig


def get_config():
    cfg = sparse_body_config("mem_mlp_vqvae", "mlp_vqvae", MLPVQVAEModelConfig(window=41),
                             steps=10000, lr=3e-4)
    cfg.train.best_metric = "rot6d_l2"
    return cfg
