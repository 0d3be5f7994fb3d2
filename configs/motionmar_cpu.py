"""MotionMAR, the 60-minute CPU preset (stage 2 over configs/motionmar_vqvae_cpu.py): a small
MAN (width 128, 4 blocks, 4 heads) + SAC + MRN (2-layer Bi-GRU, hidden 128) in the heading frame
of each window's last head, the MRN also trained with the FK joint-position loss
(``model.pos_weight=1``, not in the paper), 10,000 steps of batch 64 at lr 1e-3
(docs/results.md, "MotionMAR on the canonical conversion": stage 1 about 13 minutes, stage 2
about 37 on the 2-core EPYC).

    mmar train configs/motionmar_vqvae_cpu.py --workdir runs/motionmar_vqvae_cpu
    mmar train configs/motionmar_cpu.py --workdir runs/motionmar_cpu
    mmar eval --checkpoint runs/motionmar_cpu --out runs/motionmar_cpu/test.json
"""
from configs.common import motionmar_experiment
from mmar.tasks.motionmar import MotionMARModelConfig


def get_config():
    m = MotionMARModelConfig(vq_width=256, vq_depth=2, frame="heading", width=128, depth=4, heads=4,
                             mrn_hidden=128, pos_weight=1.0, vqvae_workdir="runs/motionmar_vqvae_cpu")
    cfg = motionmar_experiment("motionmar_cpu", "motionmar", m, steps=10000, batch_size=64, lr=1e-3,
                               eval_every=2500)
    cfg.optim.warmup_steps = 200
    return cfg
