"""A smoother decoder for ScaleMoGen's small tokenizer: the decoder of a trained
``configs/scalemogen_vqvae_small.py`` run fine-tuned alone with a jerk term (not in the paper).

Why: decoded motion is jerkier than the data (the small tokenizer's validation decoding: 73.8
m/s^3 against the data's 58.4), and editing seams inherit it (docs/results.md, "Seams").
The encoder side (``joint_in``, ``encoder``, ``project_in``) is frozen and BSQ has no params, so
every motion keeps its codes: a predictor trained on the original tokenizer stays valid and
``mmar edit --decoder RUN`` / ``mmar generate --decoder RUN`` decode its tokens with this run's
decoder.

Changes from the small tokenizer's config: ``model.jerk_weight`` 1e-3 (x the mean
|jerk(decoding) - jerk(data)|, m/s^3: about 0.08 at the start, twice the reconstruction term);
``optim.frozen``; ``train.init_from`` (given on the command line); 1,000 steps at a constant
2e-4 after 50 warm-up steps; no best checkpoint (the newest is the result).

    mmar train configs/scalemogen_vqvae_smooth.py --workdir runs/scalemogen_vq_smooth \\
        --set train.init_from=runs/scalemogen_vq/best

Measured (docs/results.md, "Seams: a smoother decoder"): 734 s on the 2-core CPU (loaded); on the
Bandai test split the decoding's jerk 70.3 -> 51.6 m/s^3 (data 54.9) and MPJPE 8.66 -> 8.13 cm;
edits with ``--keep-from decoding`` have seams 0.97 times the source's jerk; R-precision, MM-Dist
and FID of generated motion unchanged.
"""
from configs.scalemogen_vqvae_small import get_config as small_config

ENCODER_SIDE = ("^joint_in/", "^encoder/", "^project_in/")


def get_config():
    cfg = small_config()
    cfg.name = "scalemogen_vqvae_smooth"
    cfg.model.jerk_weight = 1e-3
    cfg.optim.frozen = ENCODER_SIDE
    cfg.optim.lr = 2e-4
    cfg.optim.schedule = "constant"
    cfg.optim.boundaries = ()
    cfg.optim.warmup_steps = 50
    cfg.train.steps = 1000
    cfg.train.eval_every = 250
    cfg.train.ckpt_every = 250
    cfg.train.best_metric = None
    return cfg
