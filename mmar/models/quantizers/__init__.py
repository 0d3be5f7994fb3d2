"""Multi-scale residual quantisers of the next-scale motion models.

* :mod:`~mmar.models.quantizers.resample` -- PyTorch-exact 'area' / 'linear' / 'nearest' time
  resizing as constant matrices.
* :mod:`~mmar.models.quantizers.temporal` -- VAR-style quantiser in time (MotionMAR: learned
  1024 x 64 codebook, scales 5/10/20, phi convs; MoScale: EMA 512 x 512, scales 6/12/24/49).
* :mod:`~mmar.models.quantizers.bsq` -- binary spherical quantisation (24 bits).
* :mod:`~mmar.models.quantizers.skeletal` -- ScaleMoGen's time x body-group BSQ quantiser
  (11 scales, 864 tokens).

The VQ-VAEs around them are in :mod:`mmar.models.vqvae`.
"""
from mmar.models.quantizers.bsq import (
    BSQConfig,
    bits_to_codes,
    bits_to_index,
    bsq_entropies,
    bsq_quantize,
    codes_to_bits,
    index_to_bits,
    l2_normalize,
)
from mmar.models.quantizers.resample import (
    area_matrix,
    linear_matrix,
    nearest_matrix,
    resample,
    resample_matrix,
)
from mmar.models.quantizers.skeletal import (
    BODY_GROUPS,
    SCALEMOGEN_GROUP_CHAINS,
    SCALEMOGEN_MAPPING,
    SCALEMOGEN_SKELETAL,
    SCALEMOGEN_TIME_FACTORS,
    SkeletalQuantizer,
    SkeletalQuantizerConfig,
    group_pool_matrix,
    group_unpool_matrix,
)
from mmar.models.quantizers.temporal import (
    MOSCALE_TEMPORAL,
    MOTIONMAR_TEMPORAL,
    TemporalQuantizer,
    TemporalQuantizerConfig,
    length_mask,
    nearest_codes,
    revive_dead_codes,
    scale_valid_lengths,
)

__all__ = [
    "BSQConfig", "bits_to_codes", "bits_to_index", "bsq_entropies", "bsq_quantize", "codes_to_bits",
    "index_to_bits", "l2_normalize",
    "area_matrix", "linear_matrix", "nearest_matrix", "resample", "resample_matrix",
    "BODY_GROUPS", "SCALEMOGEN_GROUP_CHAINS", "SCALEMOGEN_MAPPING", "SCALEMOGEN_SKELETAL",
    "SCALEMOGEN_TIME_FACTORS", "SkeletalQuantizer", "SkeletalQuantizerConfig", "group_pool_matrix",
    "group_unpool_matrix",
    "MOSCALE_TEMPORAL", "MOTIONMAR_TEMPORAL", "TemporalQuantizer", "TemporalQuantizerConfig",
    "length_mask", "nearest_codes", "revive_dead_codes", "scale_valid_lengths",
]
