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
from .sparse import _is_real_number, check_alpha, compute_dtype

__all__ = ["gag_combine", "gag_gain", "check_guidance_params", "check_alpha"]


def check_guidance_params(scale, eta, zeta) -> tuple[float, float, float]:
    """Validate λ, η, ζ and return them as floats; raises ValueError naming the bad one."""
    if not _is_real_number(scale) or not math.isfinite(scale):
        raise ValueError(f"scale (λ) must be a finite number (paper default 10); got {scale!r}")
    if not _is_real_number(eta) or not eta > 0 or math.isnan(eta):
        raise ValueError(
            f"eta (η, the cap on the correction's norm) must be > 0 (paper default 15; "
            f"float('inf') disables the cap); got {eta!r}"
        )
    if not _is_real_number(zeta) or not (0.0 <= zeta <= 1.0):
        raise ValueError(
            f"zeta (ζ, share of the orthogonal part kept) must be in [0, 1] (paper default 0); "
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


def gag_combine(dense_out: torch.Tensor, sparse_out: torch.Tensor, *, scale: float, eta: float,
                zeta: float) -> torch.Tensor:
    """Combine dense and sparse retrievals with the GAG rule.

    dense_out, sparse_out: (..., D), same shape (typically (B, H, L, D)).
    Returns (..., D) in the compute dtype (float32, or float64 for float64 inputs); the caller
    casts back. Finite inputs give a finite output, including ‖O_s‖ = 0.
    """
    scale, eta, zeta = check_guidance_params(scale, eta, zeta)
    dense, sparse = _check_pair(dense_out, sparse_out)
    guidance, _, _, cap, _ = _guidance(dense, sparse, eta, zeta)
    if cap is None:
        return sparse + scale * guidance
    return sparse + (scale * cap) * guidance


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
