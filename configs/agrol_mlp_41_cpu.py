"""AGRoL-MLP-41, the 60-minute CPU preset: the recipe of issue 15 at a size that learns the most
per CPU-hour here (width 256, 6 blocks, 0.46 M parameters, batch 128, lr 4e-3, 8,000 steps =
1,024,000 windows, 1.7 epochs, within an hour on the 2-core EPYC; docs/results.md, "Learning
more per CPU-hour"):

* inputs and targets in the heading frame of each window's last head (``model.frame=heading``);
* AGRoL's rotation loss plus the FK joint-position loss (``model.pos_weight=1``);
* lr 4e-3, swept at the ablation budget (1e-3 to 3.2e-2) and chosen between 4e-3 and 8e-3 on
  the validation split at this length (test MPJPE 1.48 cm against 1.72 at the earlier 1e-3;
  docs/results.md, "AGRoL-MLP's learning rate");
* batch 128: smaller batches learn more at the ablation budget (1.78 cm at batch 16 against
  2.46), but at this length batch 16 for 64,000 steps ended worse on validation (1.745 against
  1.675 cm) and on dataset-1 (test 5.23 against 4.76; docs/results.md, "AGRoL-MLP's batch size").

EMA weights (``optim.ema_decay=0.999``, with the trainer's warm-up) are left out: at the
ablation budget they were no better than the live weights (validation 3.59 against 3.53 cm).
Mirroring (``data.mirror``) and dataset-1 repetition (``data.dataset1_repeat``) are left out
too: at the ablation budget they cost whole-split accuracy.

    mmar train configs/agrol_mlp_41_cpu.py --workdir runs/agrol_mlp_41_cpu
    mmar eval --checkpoint runs/agrol_mlp_41_cpu --out runs/agrol_mlp_41_cpu/test.json
"""
from configs.common import sparse_body_config
from mmar.tasks.agrol_mlp import AGRoLMLPModelConfig


def get_config():
    cfg = sparse_body_config("agrol_mlp_41_cpu", "agrol_mlp",
                             AGRoLMLPModelConfig(window=41, dim=256, depth=6, frame="heading", pos_weight=1.0),
                             steps=8000, batch_size=128, lr=4e-3)
    cfg.optim.warmup_steps = 100
    cfg.train.eval_every = 2000
    cfg.train.ckpt_every = 2000
    return cfg
