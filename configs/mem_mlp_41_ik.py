"""Mem-MLP-41 evaluated with L-BFGS IK (15 iterations) from the rotation head toward the
position head. Same training as configs/mem_mlp_41.py; IK only changes inference, so

    mmar eval --checkpoint runs/mem_mlp_41 --set model.ik=true
"""
from configs.mem_mlp_41 import get_config as _base


def get_config():
    cfg = _base()
    cfg.name = "mem_mlp_41_ik"
    cfg.model.ik = True
    return cfg
