"""Target-gain mode: λ set per guided call so that the median gain lands on a target.

GAG multiplies each head's sparse output, along its own direction, by the gain

    gain = 1 + λ·a,    a = min(1, η/‖g‖)·c,    c = ⟨O_s − O_d, O_s⟩/‖O_s‖²

(``rule.gag_gain``). The cap factor depends on ‖g‖, not on λ, so a is fixed by the call's
retrievals and the gain is exactly linear in λ. For λ ≥ 0 the map a ↦ 1 + λ·a is monotone, so
the median gain is 1 + λ·median(a), and

    λ = (target − 1) / median(a)

puts the median gain of the call exactly on the target. The median is taken per batch row, over
that row's heads and guided query tokens (in text mode: the image queries' retrieval of the text
keys), so a batch of N gives the same λ per image as N calls of one, and cond/uncond joined equals
split; each row gets its own λ.

λ is bounded to [0, ``MAX_TARGET_SCALE``]: 100, the top of the node's own scale range (ten times
the paper's λ = 10). Beyond it the median a is below (target − 1)/100 (under 0.008 for a ×1.8
target): GAG's direction is nearly orthogonal to, or tiny against, the retrieval on most tokens,
while the tokens where it is not would get a gain of 100·a — an extrapolation the method was
never meant to make. Where median(a) ≤ 0 no λ ≥ 0 raises the median gain above 1; λ is 0 there
(plain sparse attention, the closest a non-negative λ gets). The readout reports both cases and
the gain actually reached.

Everything is computed on the device as tensors: the medians, the division, the clamp. Nothing
reads a value back to the host, so a guided call in this mode adds no host synchronisation to
what the PyTorch path already does. The output is ``O_s + λ·cap·g`` from the same rescaled terms
``rule._guidance`` gives (exact over the dtype's whole range, no data-dependent branch).

Layout as everywhere: q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import torch

from .attention import dense_sparse_attention
from .rule import _check_pair, _guidance, check_alpha, check_guidance_params
from .sparse import _is_real_number

__all__ = ["TARGET_GAIN_RANGE", "MAX_TARGET_SCALE", "check_target_gain", "gain_coefficients",
           "scale_for_target", "target_gain_attention", "TargetGainCall"]

# A target of ×1 asks for no push (λ = 0). Beyond ×10 lies only ruin on the digits UNet
# (bench/results_readout.md: accuracy 0.89 without GAG, 0.74 at ×6, 0.37 at ×11).
TARGET_GAIN_RANGE = (1.0, 10.0)
MAX_TARGET_SCALE = 100.0


def check_target_gain(target) -> float:
    """0 (target-gain mode off) or a number in [1, 10]; returns it as a float, else raises
    ValueError naming what is allowed."""
    low, high = TARGET_GAIN_RANGE
    if (not _is_real_number(target) or math.isnan(target)
            or not (target == 0 or low <= target <= high)):
        raise ValueError(
            f"target_gain (the median attention gain GAG should apply, e.g. 1.8) must be 0 "
            f"(off: λ is the scale input) or in [{low:g}, {high:g}]; got {target!r}")
    return float(target)


def gain_coefficients(dense_out: torch.Tensor, sparse_out: torch.Tensor, *, eta: float,
                      zeta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-token terms of the rule at λ = 1.

    dense_out, sparse_out (..., D) → unit (..., D): cap·g, what λ multiplies (O = O_s + λ·unit);
    a (..., 1): cap·c, so gain = 1 + λ·a (0 where O_s = 0); capped (..., 1) bool: ‖g‖ > η.
    unit and a in the compute dtype.
    """
    _, eta, zeta = check_guidance_params(1.0, eta, zeta)
    dense, sparse = _check_pair(dense_out, sparse_out)
    guidance, along, sparse_norm, cap, g_norm = _guidance(dense, sparse, eta, zeta)
    tiny = torch.finfo(along.dtype).tiny
    c = torch.where(sparse_norm > 0, along / sparse_norm.clamp(min=tiny), torch.zeros_like(along))
    if cap is None:
        return guidance, c, torch.zeros_like(c, dtype=torch.bool)
    return cap * guidance, cap * c, g_norm > eta


def scale_for_target(a: torch.Tensor, target: float, *,
                     strength: Union[float, torch.Tensor] = 1.0,
                     max_scale: float = MAX_TARGET_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """λ per batch row that puts the median gain 1 + λ·a on ``target``.

    a (B, ...) → (scale (B,), median (B,)) in a's dtype: median = median(a) over each row (the
    lower of the two middle values for an even count, as torch.median), scale =
    clamp((target − 1)/median, 0, max_scale)·strength, 0 where median ≤ 0. ``strength`` (a
    schedule ramp's multiplier, a float or 0-d tensor) scales λ after the bound. No host read.
    """
    if a.shape[0] == 0 or a[0].numel() == 0:  # shapes only: no rows, or nothing guided per row
        zeros = a.new_zeros(a.shape[0])
        return zeros, zeros
    median = a.reshape(a.shape[0], -1).median(dim=1).values
    tiny = torch.finfo(median.dtype).tiny
    needed = (float(target) - 1.0) / median.clamp(min=tiny)
    scale = torch.where(median > 0, needed, torch.zeros_like(needed)).clamp(0.0, max_scale)
    return scale * strength, median


class TargetGainCall(NamedTuple):
    """What one target-gain call returns: out (B, H, Lq, Dv) in the compute dtype; scale (B,), the
    λ used per batch row; median (B,), each row's median a (the readout tells from it where the
    target was out of reach); a and capped (B, H, Lq, 1), every token's gain coefficient (gain
    = 1 + scale·a) and whether η bound there."""
    out: torch.Tensor
    scale: torch.Tensor
    median: torch.Tensor
    a: torch.Tensor
    capped: torch.Tensor


def target_gain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, target: float,
                          eta: float, zeta: float, alpha: float,
                          mask: Optional[torch.Tensor] = None,
                          strength: Union[float, torch.Tensor] = 1.0,
                          max_scale: float = MAX_TARGET_SCALE, minus_dense: bool = False,
                          chunk_bytes: Optional[int] = None) -> TargetGainCall:
    """GAG for one attention call with λ set by ``scale_for_target`` (PyTorch path: the fused
    kernel takes λ as a number, which would need a host read).

    q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv); mask and chunk_bytes as for
    ``gag_attention`` (the retrievals take the PyTorch path's CPU or GPU policy). Returns a
    ``TargetGainCall``; its ``out`` is the GAG output, or with ``minus_dense`` what
    GAG adds to the softmax output (as ``gag_correction``).
    """
    if check_target_gain(target) == 0:
        raise ValueError("target_gain_attention needs a target in [1, 10]; 0 means the mode "
                         "is off (use gag_attention with the scale)")
    _, eta, zeta = check_guidance_params(1.0, eta, zeta)
    alpha = check_alpha(alpha)
    dense, sparse = dense_sparse_attention(q, k, v, alpha=alpha, mask=mask,
                                           chunk_bytes=chunk_bytes)
    unit, a, capped = gain_coefficients(dense, sparse, eta=eta, zeta=zeta)
    scale, median = scale_for_target(a, target, strength=strength, max_scale=max_scale)
    out = torch.addcmul(sparse, scale.view(-1, 1, 1, 1), unit)
    if minus_dense:
        out = out.sub_(dense)
    return TargetGainCall(out, scale, median, a, capped)
