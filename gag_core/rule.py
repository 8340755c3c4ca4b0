"""The GAG combination rule and the checks on its parameters.

Given the dense (softmax) and sparse (α-entmax) retrievals of one attention call, per head and
per query token, with norms over the head dimension D:

    Δ   = O_s − O_d                       sparse–dense discrepancy
    Δ_∥ = ⟨Δ, O_s⟩ / ‖O_s‖² · O_s          the part along the retrieval direction
    g   = Δ_∥ + ζ·(Δ − Δ_∥)                ζ keeps a damped share of the orthogonal part
    O   = O_s + λ · min(1, η/‖g‖) · g      the correction's norm is capped at λ·η

Where ‖O_s‖ = 0 the retrieval direction is undefined; Δ_∥ is taken as zero there (g = ζ·Δ),
which is the limit of the rule as O_s shrinks along any direction and keeps the output finite.
"""

from __future__ import annotations

import math

import torch

# check_alpha lives with the entmax maps, which validate α themselves; it is re-exported here.
from .defaults import PAPER
from .sparse import _is_real_number, check_alpha, compute_dtype

__all__ = ["gag_combine", "combine_checked", "gag_gain", "check_guidance_params", "check_alpha"]


def check_guidance_params(scale, eta, zeta) -> tuple[float, float, float]:
    """Validate λ, η, ζ and return them as floats; raises ValueError naming the bad one."""
    if not _is_real_number(scale) or not math.isfinite(scale):
        raise ValueError(f"scale (λ) must be a finite number (paper default {PAPER.scale:g}); "
                         f"got {scale!r}")
    if not _is_real_number(eta) or not eta > 0 or math.isnan(eta):
        raise ValueError(
            f"eta (η, the cap on the correction's norm) must be > 0 (paper default {PAPER.eta:g}; "
            f"float('inf') disables the cap); got {eta!r}"
        )
    if not _is_real_number(zeta) or not (0.0 <= zeta <= 1.0):
        raise ValueError(
            f"zeta (ζ, share of the orthogonal part kept) must be in [0, 1] (paper default "
            f"{PAPER.zeta:g}); "
            f"got {zeta!r}"
        )
    return float(scale), float(eta), float(zeta)


def _check_pair(dense_out: torch.Tensor, sparse_out: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both retrievals in the compute dtype; raises ValueError if their shapes differ."""
    if dense_out.shape != sparse_out.shape:
        raise ValueError(
            f"dense_out and sparse_out must have the same shape; got {tuple(dense_out.shape)} "
            f"and {tuple(sparse_out.shape)}"
        )
    dtype = compute_dtype(torch.promote_types(dense_out.dtype, sparse_out.dtype))
    return dense_out.to(dtype), sparse_out.to(dtype)


def gag_combine(dense_out: torch.Tensor, sparse_out: torch.Tensor, *, scale: float, eta: float,
                zeta: float) -> torch.Tensor:
    """Combine dense and sparse retrievals with the GAG rule.

    dense_out, sparse_out: (..., D), same shape (typically (B, H, L, D)).
    Returns (..., D) in the compute dtype (float32, or float64 for float64 inputs); the caller
    casts back. Finite inputs give a finite output, including ‖O_s‖ = 0.
    """
    scale, eta, zeta = check_guidance_params(scale, eta, zeta)
    dense, sparse = _check_pair(dense_out, sparse_out)
    return combine_checked(dense, sparse, scale, eta, zeta)


# Squared norms inside [2⁻¹⁰⁰, 2¹⁰⁰] (or exactly 0) leave float32 ~28 decades of headroom on
# either side, so the row dot products below neither overflow nor underflow; rows outside it take
# the rescaled path.
_DOT_SAFE_MIN, _DOT_SAFE_MAX = 2.0 ** -100, 2.0 ** 100


def combine_checked(dense_out: torch.Tensor, sparse_out: torch.Tensor, scale: float, eta: float,
                    zeta: float) -> torch.Tensor:
    """``gag_combine`` for parameters already validated (check_guidance_params) and tensors of
    one shape; the attention paths call it once per query chunk.

    With c = ⟨Δ, O_s⟩/‖O_s‖² the rule is, row by row,

        g = (1 − ζ)·c·O_s + ζ·Δ,   ‖g‖² = (1 − ζ²)·c²·‖O_s‖² + ζ²·‖Δ‖²,
        O = O_s + λ·cap·g = (1 + λ·cap·(1 − ζ)·c)·O_s + λ·cap·ζ·Δ,

    so three row dot products and two passes over the rows give the output (for ζ = 0 the
    per-token gain 1 + λ·cap·c times O_s). Where a squared norm could overflow or underflow the
    compute dtype, the whole call takes ``_combine_rescaled`` instead, which normalises by each
    row's largest entry first (as it does under torch.compile).
    """
    dtype = compute_dtype(torch.promote_types(dense_out.dtype, sparse_out.dtype))
    dense = dense_out.to(dtype)
    sparse = sparse_out.to(dtype)
    if torch.compiler.is_compiling():
        # The range check below is a data-dependent branch: it would break the traced graph.
        return _combine_rescaled(dense, sparse, scale, eta, zeta)
    delta = sparse - dense
    sparse_sq = torch.linalg.vecdot(sparse, sparse).unsqueeze(-1)
    along = torch.linalg.vecdot(delta, sparse).unsqueeze(-1)
    c = along / torch.where(sparse_sq > 0, sparse_sq, 1.0)
    guidance_sq = c * c * sparse_sq
    if zeta:
        delta_sq = torch.linalg.vecdot(delta, delta).unsqueeze(-1)
        guidance_sq = (1.0 - zeta * zeta) * guidance_sq + (zeta * zeta) * delta_sq
    if not _dots_are_safe(sparse, sparse_sq, guidance_sq):
        return _combine_rescaled(dense, sparse, scale, eta, zeta)
    if math.isinf(eta):
        gain = scale * torch.ones_like(c)
    else:
        guidance_norm = guidance_sq.sqrt()
        gain = scale * torch.where(guidance_norm > eta, eta / guidance_norm, 1.0)  # λ·cap
    out = sparse * (1.0 + gain * ((1.0 - zeta) * c))
    if zeta:
        out = out.addcmul_(gain * zeta, delta)
    return out


def _dots_are_safe(sparse: torch.Tensor, sparse_sq: torch.Tensor,
                   guidance_sq: torch.Tensor) -> bool:
    """Whether every ‖O_s‖² lies in the safe range or belongs to an all-zero row (not to one
    whose squares underflowed), and every ‖g‖² is finite."""
    if sparse_sq.numel() == 0:
        return True
    zero = sparse_sq == 0
    smallest = torch.where(zero, _DOT_SAFE_MIN, sparse_sq).amin()
    if not bool((smallest >= _DOT_SAFE_MIN) & (sparse_sq.amax() <= _DOT_SAFE_MAX)
                & guidance_sq.isfinite().all()):
        return False
    return not (zero.any() and sparse[zero.squeeze(-1)].any())


def _combine_rescaled(dense: torch.Tensor, sparse: torch.Tensor, scale: float, eta: float,
                      zeta: float) -> torch.Tensor:
    """The rule with every norm taken after dividing by the row's largest entry: exact for
    entries anywhere in the dtype's range (slower: about twenty passes over the rows)."""
    guidance, _, _, cap, _ = _guidance(dense, sparse, eta, zeta)
    if cap is None:
        return sparse + scale * guidance
    return sparse + (scale * cap) * guidance


def _guidance(dense: torch.Tensor, sparse: torch.Tensor, eta: float, zeta: float):
    """The rule's intermediate terms, (..., D) in and (..., ·) out, in the compute dtype:

    guidance  g (..., D)
    along     ⟨Δ, O_s⟩/‖O_s‖ (..., 1): the signed length of Δ_∥ (0 where O_s = 0)
    sparse_norm ‖O_s‖ (..., 1)
    cap       min(1, η/‖g‖) (..., 1), or None when η = ∞
    g_norm    ‖g‖ (..., 1), or None when η = ∞
    """
    tiny = torch.finfo(dense.dtype).tiny
    delta = sparse - dense
    # Project on the unit direction rather than dividing by ‖O_s‖²: the projection's size is then
    # bounded by ‖Δ‖ even when ‖O_s‖² would underflow. The norm itself is taken after dividing by
    # the largest entry, since torch's vector_norm squares without rescaling (in float32 a vector
    # of 1e-25 entries has norm 0 and one of 1e20 entries has norm inf).
    sparse_max = sparse.abs().amax(dim=-1, keepdim=True)
    sparse_unit = sparse / sparse_max.clamp(min=tiny)
    unit_norm = torch.linalg.vector_norm(sparse_unit, dim=-1, keepdim=True)
    direction = sparse_unit / unit_norm.clamp(min=tiny)
    direction = torch.where(sparse_max > 0, direction, torch.zeros_like(direction))
    along = (delta * direction).sum(-1, keepdim=True)
    parallel = along * direction
    guidance = parallel + zeta * (delta - parallel) if zeta else parallel
    sparse_norm = sparse_max * unit_norm

    if math.isinf(eta):
        return guidance, along, sparse_norm, None, None
    guidance_max = guidance.abs().amax(dim=-1, keepdim=True)
    guidance_norm = guidance_max * torch.linalg.vector_norm(
        guidance / guidance_max.clamp(min=tiny), dim=-1, keepdim=True)
    cap = torch.where(guidance_norm > eta, eta / guidance_norm.clamp(min=tiny),
                      torch.ones_like(guidance_norm))
    return guidance, along, sparse_norm, cap, guidance_norm


def gag_gain(dense_out: torch.Tensor, sparse_out: torch.Tensor, *, scale: float, eta: float,
             zeta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """How strongly the rule pushes: the gain along the retrieval direction, and where η binds.

    dense_out, sparse_out: (..., D) as for ``gag_combine``. Returns
    gain (..., 1) in the compute dtype: ⟨O, O_s⟩/‖O_s‖² = 1 + λ·min(1, η/‖g‖)·c with
        c = ⟨Δ, O_s⟩/‖O_s‖², the factor GAG multiplies the sparse output by along its own
        direction (for ζ = 0 the whole output is gain·O_s; ζ > 0 adds an orthogonal part on
        top). 1 where O_s = 0 (no retrieval direction, no parallel part).
    capped (..., 1) bool: ‖g‖ > η, the tokens whose correction the cap shortened.
    Computed from the same terms as ``gag_combine``.
    """
    scale, eta, zeta = check_guidance_params(scale, eta, zeta)
    dense, sparse = _check_pair(dense_out, sparse_out)
    _, along, sparse_norm, cap, guidance_norm = _guidance(dense, sparse, eta, zeta)
    tiny = torch.finfo(along.dtype).tiny
    coefficient = torch.where(sparse_norm > 0, along / sparse_norm.clamp(min=tiny),
                              torch.zeros_like(along))
    if cap is None:
        return 1 + scale * coefficient, torch.zeros_like(along, dtype=torch.bool)
    return 1 + (scale * cap) * coefficient, guidance_norm > eta
