"""MotionMAR stage 1 for the 60-minute CPU preset (stage 1 of configs/motionmar_cpu.py): the TMT
VQ-VAE at width 256 with 2 residual blocks per stage (scales 5 / 10 / 20 over 20-frame windows,
learned 1,024 x 64 codebook with the dead-code remedy), in the heading frame of each window's
last head, 10,000 steps of batch 64 at lr 1e-3 (about 14 minutes on the 2-core EPYC) (docs/results.md, "MotionMAR on the canonical conversion").

    mmar train configs/motionmar_vqvae_cpu.py --workdir runs/motionmar_vqvae_cpu
"""
from configs.common import motionmar_experiment
from mmar.tasks.tmt_vqvae import TMTVQVAEModelConfig


def get_config():
    cfg = motionmar_experiment("motionmar_vqvae_cpu", "tmt_vqvae",
                               TMTVQVAEModelConfig(vq_width=256, vq_depth=2, frame="heading"),
                               steps=10000, batch_size=64, lr=1e-3, eval_every=2500)
    cfg.optim.warmup_steps = 100
    return cfg
