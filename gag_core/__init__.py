"""gag_core: Geometry-Aware Attention Guidance in pure PyTorch (no ComfyUI import).

Public API:
    gag_attention(q, k, v, *, scale, eta, zeta, alpha, mask)  one guided attention call
    gag_correction(q, k, v, *, scale, eta, zeta, alpha, mask) what GAG adds to plain attention
    gag_combine(dense_out, sparse_out, *, scale, eta, zeta)   the combination rule alone
    gag_gain(dense_out, sparse_out, *, scale, eta, zeta)      how hard the rule pushes (readout)
    dense_sparse_attention(q, k, v, *, alpha, mask)           both retrievals from one score pass
    alpha_entmax / entmax15 / sparsemax / entmax_bisect        the sparse maps
    PAPER                                                      the method's published defaults

Where it runs: gag_core.kernels (the fused Triton kernel, self-checked on first use per device;
``backend_summary()`` says which backend runs and why) and the PyTorch path under one of two
policies, gag_core.gpu_policy (no host syncs; CUDA, ROCm, MPS) or the CPU policy in
attention.py / sparse.py, chosen by GAG_TORCH_POLICY=auto|gpu|cpu.
"""

from .attention import (DEFAULT_CHUNK_BYTES, attention_scores, dense_sparse_attention,
                        gag_attention, gag_correction, normalize_mask)
from .defaults import PAPER
from .rule import check_alpha, check_guidance_params, gag_combine, gag_gain
from .sparse import alpha_entmax, entmax15, entmax_bisect, sparsemax

__all__ = [
    "gag_attention", "gag_correction", "gag_combine", "gag_gain", "dense_sparse_attention",
    "attention_scores", "PAPER",
    "normalize_mask", "DEFAULT_CHUNK_BYTES", "alpha_entmax", "entmax15", "sparsemax",
    "entmax_bisect", "check_alpha", "check_guidance_params",
]
