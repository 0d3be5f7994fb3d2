"""Mem-MLP-41, the 60-minute CPU preset (with its VQ-VAE, configs/mem_mlp_vqvae_cpu.py): width
256, 6 blocks, heads of 1 block, batch 128, lr 1e-3, 2,000 steps, over the heading-frame
VQ-VAE, with the recipe of issue 15 (docs/results.md, "Learning more per CPU-hour"):

* inputs, targets and memory in the heading frame of each window's last head;
* self-fed memory scheduled from the ground truth to the blend with the model's own
  prediction over the first half of training (``model.memory_feed=scheduled``).

    mmar train configs/mem_mlp_vqvae_cpu.py --workdir runs/mem_mlp_vqvae_cpu
    mmar train configs/mem_mlp_41_cpu.py --workdir runs/mem_mlp_41_cpu
    mmar eval --checkpoint runs/mem_mlp_41_cpu --set model.ik=true --out runs/mem_mlp_41_cpu/test.json
"""
from configs.common import sparse_body_config
from mmar.tasks.mem_mlp import MemMLPModelConfig


def get_config():
    model = MemMLPModelConfig(window=41, dim=256, depth=6, head_depth=1, frame="heading", memory_feed="scheduled",
                              vqvae_workdir="runs/mem_mlp_vqvae_cpu")
    cfg = sparse_body_config("mem_mlp_41_cpu", "mem_mlp", model, steps=2000, batch_size=128, lr=1e-3)
    cfg.optim.warmup_steps = 100
    cfg.train.eval_every = 1000
    cfg.train.ckpt_every = 500
    return cfg
