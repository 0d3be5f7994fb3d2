"""The next-token (T2M-GPT style) baseline at MoScale's paper size, for a comparison with
``configs/moscale.py``: the same frozen tokenizer (its finest-scale tokens), text encoder,
conditioning, length head, optimiser, batch, schedule and validation; the transformer of the
same width / depth / heads with learned absolute positions over the 49 token positions
(``mmar.tasks.t2m_gpt``). Training corruption: T2M-GPT's ``pkeep`` 0.5 (each input code
replaced by a random one with probability 0.5). Sampling: one token per step with a KV cache,
CFG 5 (constant), top-p 0.9, temperature 1::

    mmar train configs/t2m_gpt.py --workdir runs/t2m_gpt \\
        --set model.tokenizer_workdir=runs/moscale_vqvae --set data.evaluator_workdir=runs/t2m_eval
"""
from configs.moscale import moscale_experiment
from mmar.tasks.moscale import MoScaleGenDataConfig
from mmar.tasks.t2m_gpt import T2MGPTModelConfig


def t2m_gpt_experiment(name: str, model: T2MGPTModelConfig, **kw):
    """:func:`configs.moscale.moscale_experiment` (MoScale's optimisation) for the ``t2m_gpt`` task."""
    cfg = moscale_experiment(name, model, **kw)
    cfg.task = "t2m_gpt"
    return cfg


def get_config():
    return t2m_gpt_experiment("t2m_gpt", T2MGPTModelConfig(), data=MoScaleGenDataConfig())
