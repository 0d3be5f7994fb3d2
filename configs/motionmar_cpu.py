"""MotionMAR, the 60-minute CPU preset (stage 2 over configs/motionmar_vqvae_cpu.py): a small
MAN (width 128, 4 blocks, 4 heads) + SAC + MRN (2-layer Bi-GRU, hidden 128) in the heading frame
of each window's last head, 10,000 steps of batch 64 (docs/results.md, "MotionMAR on the
canonical conversion": stage 1 about 14 minutes, stage 2 about 35 on the 2-core EPYC).

    mmar train configs/motionmar_vqvae_cpu.py --workdir runs/motionmar_vqvae_cpu
    mmar train configs/motionmar_cpu.py --workdir runs/motionmar_cpu
    mmar eval --checkpoint runs/motionmar_cpu --out runs/motionmar_cpu/test.json
"""
from configs.common import motionmar_experiment
from mmar.tasks.motionmar import MotionMARModelConfig


def get_config():
    m = MotionMARModelConfig(vq_width=256, vq_depth=2, frame="heading", width=128, depth=4, heads=4,
                             mrn_hidden=128, vqvae_workdir="runs/motionmar_vqvae_cpu")
    cfg = motionmar_experiment("motionmar_cpu", "motionmar", m, steps=10000, batch_size=64, lr=1e-3,
                               eval_every=2500)
    cfg.optim.warmup_steps = 200
    return cfg
