"""A float64 reference for GAG, written from docs/method.md without looking at gag_core's tricks.

Everything here computes in float64 and favours being obviously right over being fast:

* softmax is the textbook exp(z − max z) / Σ;
* α-entmax solves Σ_i [(α−1) z_i − τ]_+^{1/(α−1)} = 1 for τ on the *unshifted, unclamped*
  scores: bisection until the bracket stops shrinking, then Newton steps from the left on the
  found support (the mass is convex and decreasing in τ, so Newton from below converges
  monotonically to machine precision), and no renormalisation at the end — so a reference row
  summing to one is itself evidence that τ was found. gag_core uses sort-based closed forms for
  α ∈ {1.5, 2} and a clamped, renormalised bisection otherwise; sharing no step with it is the
  point;
* the GAG rule is the method.md formula term by term, with ‖O_s‖ = 0 ⇒ Δ_∥ = 0 and ‖g‖ = 0 ⇒ no cap.

Rows whose scores are all −inf (a fully masked query) map to all-zero probabilities.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

F64 = torch.float64


def ref_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis in float64; all −inf rows → zeros."""
    z = scores.to(F64)
    row_max = z.max(dim=-1, keepdim=True).values
    alive = torch.isfinite(row_max)
    e = torch.exp(z - torch.where(alive, row_max, torch.zeros_like(row_max)))
    p = e / e.sum(-1, keepdim=True)
    return torch.where(alive, p, torch.zeros_like(p))


def _entmax_mass(x: torch.Tensor, tau: torch.Tensor, exponent: float) -> torch.Tensor:
    return (x - tau).clamp(min=0.0).pow(exponent).sum(-1, keepdim=True)


def ref_entmax(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """α-entmax over the last axis in float64, α ∈ (1, 2]. −inf scores get zero mass."""
    if not 1.0 < alpha <= 2.0:
        raise ValueError(f"reference alpha must be in (1, 2]; got {alpha}")
    x = (alpha - 1.0) * scores.to(F64)                   # −inf stays −inf
    exponent = 1.0 / (alpha - 1.0)
    n = x.shape[-1]
    x_max = x.max(dim=-1, keepdim=True).values
    alive = torch.isfinite(x_max)
    x_max = torch.where(alive, x_max, torch.zeros_like(x_max))
    # τ ∈ [max − 1, max − n^{1−α}]: at the left end the maximum alone carries mass 1; at the
    # right end even n entries all equal to the maximum carry at most 1.
    lo = x_max - 1.0
    hi = x_max - n ** (1.0 - alpha)
    # 64 halvings of a bracket of width ≤ 1 reach float64 resolution; Newton then polishes.
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        heavy = _entmax_mass(x, mid, exponent) >= 1.0
        lo = torch.where(heavy, mid, lo)
        hi = torch.where(heavy, hi, mid)
    tau = lo
    for _ in range(8):
        gap = (x - tau).clamp(min=0.0)
        f = gap.pow(exponent).sum(-1, keepdim=True) - 1.0
        # (gap > 0) keeps 0^0 = 1 from counting entries outside the support (α = 2).
        df = -exponent * torch.where(gap > 0, gap.pow(exponent - 1.0), 0.0).sum(-1, keepdim=True)
        # Newton from the left overshoots only by rounding; keep τ where the mass is still ≥ 1.
        step = torch.where(df < 0, -f / df, torch.zeros_like(f))
        tau = tau + step.clamp(min=0.0)
    p = (x - tau).clamp(min=0.0).pow(exponent)
    return torch.where(alive, p, torch.zeros_like(p))


def ref_normalize_mask(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Rank 2 (Lq, Lk) → (1, 1, Lq, Lk); rank 3 (B, Lq, Lk) → (B, 1, Lq, Lk); rank 4 as is."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask.reshape(1, 1, *mask.shape)
    if mask.dim() == 3:
        return mask.unsqueeze(1)
    return mask


def ref_scores(q: torch.Tensor, k: torch.Tensor,
               mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """S = q kᵀ/√d (+ mask) in float64; a boolean mask keeps True entries and drops the rest."""
    q64, k64 = q.to(F64), k.to(F64)
    s = torch.einsum("bhqd,bhkd->bhqk", q64, k64) / math.sqrt(q.shape[-1])
    mask = ref_normalize_mask(mask)
    if mask is not None:
        if mask.dtype == torch.bool:
            s = torch.where(mask, s, torch.full_like(s, -math.inf))
        else:
            s = s + mask.to(F64)
    return s


def ref_dense_sparse(q, k, v, alpha: float = 1.5, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(O_d, O_s) in float64, shapes (B, H, Lq, Dv)."""
    s = ref_scores(q, k, mask)
    v64 = v.to(F64)
    return ref_softmax(s) @ v64, ref_entmax(s, alpha) @ v64


def ref_combine(dense: torch.Tensor, sparse: torch.Tensor, scale: float, eta: float,
                zeta: float) -> torch.Tensor:
    """The method.md rule, per row of the last axis, in float64."""
    o_d, o_s = dense.to(F64), sparse.to(F64)
    delta = o_s - o_d
    os_sq = (o_s * o_s).sum(-1, keepdim=True)
    safe_sq = torch.where(os_sq > 0, os_sq, 1.0)
    coeff = torch.where(os_sq > 0, (delta * o_s).sum(-1, keepdim=True) / safe_sq, 0.0)
    parallel = coeff * o_s
    g = parallel + zeta * (delta - parallel)
    g_norm = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
    if math.isinf(eta):
        cap = torch.ones_like(g_norm)
    else:
        safe_norm = torch.where(g_norm > 0, g_norm, 1.0)
        cap = torch.where(g_norm > 0, torch.clamp(eta / safe_norm, max=1.0), 1.0)
    return o_s + scale * cap * g


def ref_gain(dense: torch.Tensor, sparse: torch.Tensor, scale: float, eta: float,
             zeta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The readout's figures per row, in float64: gain 1 + λ·min(1, η/‖g‖)·c with
    c = ⟨Δ, O_s⟩/‖O_s‖² (c = 0 where O_s = 0), and capped = ‖g‖ > η. Shapes (..., 1)."""
    o_d, o_s = dense.to(F64), sparse.to(F64)
    delta = o_s - o_d
    os_sq = (o_s * o_s).sum(-1, keepdim=True)
    safe_sq = torch.where(os_sq > 0, os_sq, 1.0)
    coeff = torch.where(os_sq > 0, (delta * o_s).sum(-1, keepdim=True) / safe_sq, 0.0)
    g = coeff * o_s + zeta * (delta - coeff * o_s)
    g_norm = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
    capped = g_norm > eta
    cap = torch.where(capped, eta / torch.where(g_norm > 0, g_norm, 1.0), 1.0)
    return 1 + scale * cap * coeff, capped


def ref_gag_attention(q, k, v, scale: float = 10.0, eta: float = 15.0, zeta: float = 0.0,
                      alpha: float = 1.5, mask=None) -> torch.Tensor:
    """GAG output in float64, (B, H, Lq, Dv)."""
    dense, sparse = ref_dense_sparse(q, k, v, alpha, mask)
    return ref_combine(dense, sparse, scale, eta, zeta)


def rel_frobenius(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖_F / ‖expected‖_F in float64 (absolute error when expected is 0)."""
    a, e = actual.to(F64), expected.to(F64)
    err = torch.linalg.vector_norm(a - e).item()
    ref = torch.linalg.vector_norm(e).item()
    return err / ref if ref > 0 else err
