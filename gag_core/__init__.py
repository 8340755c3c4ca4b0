"""gag_core: Geometry-Aware Attention Guidance in pure PyTorch (no ComfyUI import).

Public API:
    gag_attention(q, k, v, *, scale, eta, zeta, alpha, mask)  one guided attention call
    gag_combine(dense_out, sparse_out, *, scale, eta, zeta)   the combination rule alone
    gag_gain(dense_out, sparse_out, *, scale, eta, zeta)      how hard the rule pushes (readout)
    dense_sparse_attention(q, k, v, *, alpha, mask)           both retrievals from one score pass
    alpha_entmax / entmax15 / sparsemax / entmax_bisect        the sparse maps
"""

from .attention import DEFAULT_CHUNK_BYTES, attention_scores, dense_sparse_attention, gag_attention, normalize_mask
from .rule import check_alpha, check_guidance_params, gag_combine, gag_gain
from .sparse import alpha_entmax, entmax15, entmax_bisect, sparsemax

__all__ = [
    "gag_attention", "gag_combine", "gag_gain", "dense_sparse_attention", "attention_scores",
    "normalize_mask", "DEFAULT_CHUNK_BYTES", "alpha_entmax", "entmax15", "sparsemax",
    "entmax_bisect", "check_alpha", "check_guidance_params",
]
