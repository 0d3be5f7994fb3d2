"""Mem-MLP's MLP VQ-VAE for the 60-minute CPU preset (stage 1 of configs/mem_mlp_41_cpu.py): the
paper's VQ-VAE in the heading frame, 400 steps of batch 64 at lr 1e-3 with the dead-code
remedy (a few minutes here).

    mmar train configs/mem_mlp_vqvae_cpu.py --workdir runs/mem_mlp_vqvae_cpu
"""
from configs.common import sparse_body_config
from mmar.tasks.mlp_vqvae import MLPVQVAEModelConfig


def get_config():
    cfg = sparse_body_config("mem_mlp_vqvae_cpu", "mlp_vqvae", MLPVQVAEModelConfig(window=41, frame="heading"),
                             steps=400, batch_size=64, lr=1e-3)
    cfg.optim.warmup_steps = 40
    cfg.train.best_metric = "rot6d_l2"
    cfg.train.eval_every = 200
    cfg.train.ckpt_every = 200
    return cfg
