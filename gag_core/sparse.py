"""α-entmax: sparse probability maps over the last axis.

    entmax_α(z) = argmax_p  ⟨p, z⟩ + H_α(p)   over the simplex, with the Tsallis entropy H_α.

Its solution is  p_i = [(α − 1)·z_i − τ]_+^{1/(α−1)}  with τ chosen so that Σ p_i = 1.
α → 1 gives softmax, α = 2 gives sparsemax. α = 1.5 and α = 2 have exact sort-based forms;
other α use bisection on τ. The eager attention path uses a sort-free form for α = 1.5 and 2
instead (``entmax_from_scores_``: Newton's method on τ, in place on the scores), which agrees
with the sort-based forms to rounding.

Every function here maps scores of shape (..., N) to probabilities of the same shape, computes
in float32 (float64 stays float64) and returns that computation dtype; the caller casts.

Two facts keep these maps cheap and numerically safe:

* Only scores near the row maximum can be in the support. With z' = (α − 1)(z − max z), the
  threshold τ' of z' lies in [−1, 0] (the maximum alone already carries mass (−τ')^{1/(α−1)} ≤ 1),
  so any entry with z' ≤ −1 gets zero mass. Clamping z' at −1 therefore changes no output, and it
  removes the overflow and cancellation that huge or −inf scores would cause in the cumulative sums.
  The clamped entries sit exactly on that bound, so they are never in the support: the sort-based
  forms leave them out of the support count and give them zero mass explicitly. Counted in, their
  τ_k is −1 only up to rounding, and a τ a few ulp below −1 would hand masked keys a mass of ~1e-32
  (float64) and push a lone surviving key's mass to 1 + 2e-6 (float32).
* For the sort-based forms only the candidates z' > −1 need sorting, so the sort runs over the
  largest such count in the batch (``topk``) rather than the whole row.

A row whose scores are all −inf (a fully masked query) has no distribution; it maps to all zeros,
so the retrieval it feeds becomes a zero vector instead of NaN.
"""

from __future__ import annotations

import torch

from .defaults import PAPER

__all__ = ["alpha_entmax", "entmax15", "sparsemax", "entmax_bisect", "entmax_from_scores_",
           "newton_threshold", "compute_dtype", "check_alpha"]


def _is_real_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_alpha(alpha) -> float:
    """α must be a number in (1, 2]; returns it as float, else raises ValueError."""
    if not _is_real_number(alpha) or not (1.0 < float(alpha) <= 2.0):
        raise ValueError(
            f"alpha (entmax sparsity α) must be a number in (1, 2]: {PAPER.alpha:g} is the "
            f"paper's choice, "
            f"2 is sparsemax, values near 1 approach softmax; got {alpha!r}"
        )
    return float(alpha)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _shifted_scores(scores: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(α−1)(z − max z) clamped to [−1, 0], in the compute dtype, and a (..., 1) mask of rows that
    have at least one finite score."""
    z = scores.to(compute_dtype(scores.dtype))
    row_max = z.amax(dim=-1, keepdim=True)
    has_support = torch.isfinite(row_max)
    row_max = torch.where(has_support, row_max, torch.zeros_like(row_max))
    shifted = ((alpha - 1.0) * (z - row_max)).clamp(min=-1.0, max=0.0)
    # NaN scores stay NaN (garbage in is visible); −inf became −1 through the clamp.
    return shifted, has_support


def _candidate_count(shifted: torch.Tensor) -> int:
    """How many entries per row can be in the support, maximised over rows (≥ 1)."""
    return max(int((shifted > -1.0).sum(dim=-1).max().item()), 1) if shifted.numel() else 1


def _sort_candidates(shifted: torch.Tensor) -> torch.Tensor:
    """The largest candidates of each row in descending order, shape (..., K) with K ≤ N."""
    if torch.compiler.is_compiling():
        # The candidate count is data (a device-to-host read): under torch.compile it would
        # break the graph at every entmax call. Sorting the whole row gives the same support and
        # threshold — entries past the candidates sit at the clamp floor −1 and never enter it.
        return shifted.sort(dim=-1, descending=True).values
    k = _candidate_count(shifted)
    if k >= shifted.shape[-1]:
        return shifted.sort(dim=-1, descending=True).values
    return shifted.topk(k, dim=-1, sorted=True).values


def entmax15(scores: torch.Tensor) -> torch.Tensor:
    """Exact 1.5-entmax over the last axis: p = [z/2 − τ]_+², (..., N) → (..., N).

    Sort-based: for the k largest shifted scores s_(1) ≥ … ≥ s_(k), the threshold that makes the
    top k sum to one is τ_k = mean_k − sqrt(max(0, (1 − k·var_k)/k)); the support size is the
    largest k with τ_k ≤ s_(k) (Peters, Niculae & Martins, 2019).
    """
    shifted, has_support = _shifted_scores(scores, 1.5)
    top = _sort_candidates(shifted)
    ranks = torch.arange(1, top.shape[-1] + 1, device=top.device, dtype=top.dtype)
    mean = top.cumsum(-1) / ranks
    mean_sq = (top * top).cumsum(-1) / ranks
    variance_term = ranks * (mean_sq - mean * mean)
    tau = mean - torch.sqrt(((1.0 - variance_term) / ranks).clamp(min=0.0))
    support_size = ((tau <= top) & (top > -1.0)).sum(dim=-1, keepdim=True).clamp(min=1)
    tau_star = tau.gather(-1, support_size - 1)
    probs = (shifted - tau_star).clamp(min=0.0).square()
    return torch.where(has_support & (shifted > -1.0), probs, torch.zeros_like(probs))


def sparsemax(scores: torch.Tensor) -> torch.Tensor:
    """Exact sparsemax (α = 2) over the last axis: p = [z − τ]_+, (..., N) → (..., N).

    Sort-based: τ_k = (Σ_{i≤k} s_(i) − 1)/k; the support is the largest k with s_(k) > τ_k
    (Martins & Astudillo, 2016).
    """
    shifted, has_support = _shifted_scores(scores, 2.0)
    top = _sort_candidates(shifted)
    ranks = torch.arange(1, top.shape[-1] + 1, device=top.device, dtype=top.dtype)
    tau = (top.cumsum(-1) - 1.0) / ranks
    support_size = ((top > tau) & (top > -1.0)).sum(dim=-1, keepdim=True).clamp(min=1)
    tau_star = tau.gather(-1, support_size - 1)
    probs = (shifted - tau_star).clamp(min=0.0)
    return torch.where(has_support & (shifted > -1.0), probs, torch.zeros_like(probs))


def entmax_bisect(scores: torch.Tensor, alpha: float, n_iter: int = 50) -> torch.Tensor:
    """α-entmax for any α in (1, 2] by bisection on τ, (..., N) → (..., N).

    With shifted scores s ∈ [−1, 0] (max 0), τ lies in [−1, −N^{1−α}]: bisection halves that
    interval n_iter times (50 halvings reach float64 resolution), then the result is renormalised
    so that it sums to one exactly up to rounding.
    """
    alpha = check_alpha(alpha)
    shifted, has_support = _shifted_scores(scores, alpha)
    exponent = 1.0 / (alpha - 1.0)
    n = shifted.shape[-1]
    lo = torch.full_like(shifted[..., :1], -1.0)
    hi = torch.full_like(shifted[..., :1], -(n ** (1.0 - alpha)))
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        mass = (shifted - mid).clamp(min=0.0).pow(exponent).sum(-1, keepdim=True)
        too_much = mass >= 1.0
        lo = torch.where(too_much, mid, lo)
        hi = torch.where(too_much, hi, mid)
    probs = (shifted - lo).clamp(min=0.0).pow(exponent)
    probs = probs / probs.sum(-1, keepdim=True).clamp(min=torch.finfo(probs.dtype).tiny)
    return torch.where(has_support, probs, torch.zeros_like(probs))


# Newton's method on the threshold (``newton_threshold``): iteration cap, and the residual below
# which one more step lands within rounding of the root (in units of the dtype's eps).
_NEWTON_MAX_STEPS = 60
_NEWTON_STOP_EPS = 32


def newton_threshold(gaps: torch.Tensor, alpha: float) -> torch.Tensor:
    """θ with Σ_i [g_i − θ]_+^p = (α − 1)^{−p}, p = 1/(α − 1), for α ∈ {1.5, 2}: (R, N) → (R, 1).

    gaps are scores minus their row maximum (≤ 0, max 0; −inf for masked keys), in the compute
    dtype. Then α-entmax is p_i = (α − 1)^p [g_i − θ]_+^p: θ is τ/(α − 1) of the module
    docstring, kept in score units so that no pass rescales the scores.

    Newton's method from θ = −1/(α − 1) (the maximum alone carries mass 1 there; for α = 1.5
    first improved by ``_start_from_the_right``). The mass is convex and decreasing in θ, so
    every step is a lower bound that never passes the root; for α = 2 the mass is piecewise
    linear and each step is the exact root on the current support (Michelot's algorithm); for
    α = 1.5 it is piecewise quadratic and C¹, so steps converge quadratically (a step that
    rounding carries past the root is undone from the right). Each step costs four passes over
    the working rows (subtract, clamp, two row reductions), with no sort; rows that have
    converged leave the working set once half of them have. A row stops once its residual is
    at rounding level, after applying that last step.
    """
    if alpha not in (1.5, 2.0):
        raise ValueError(f"newton_threshold handles alpha 1.5 and 2; got {alpha!r}")
    rows, dtype = gaps.shape[0], gaps.dtype
    target = 4.0 if alpha == 1.5 else 1.0          # (α − 1)^{−1/(α−1)}
    stop = _NEWTON_STOP_EPS * torch.finfo(dtype).eps * target
    theta = torch.full((rows, 1), -1.0 / (alpha - 1.0), dtype=dtype, device=gaps.device)
    buffer = torch.empty_like(gaps)
    if alpha == 1.5:
        theta = _start_from_the_right(gaps, theta, buffer, target)
    work, work_theta, work_rows = gaps, theta, None
    active = torch.ones_like(theta, dtype=torch.bool)
    for _ in range(_NEWTON_MAX_STEPS):
        x = torch.sub(work, work_theta, out=buffer[:work.shape[0]]).clamp_(min=0.0)
        # (One fused reduction each: vector_norm, sum, and sum of sign_ for the count.)
        if alpha == 1.5:
            residual = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_() - target
            slope = 2.0 * x.sum(-1, keepdim=True)
        else:
            residual = x.sum(-1, keepdim=True) - target
            slope = x.sign_().sum(-1, keepdim=True)
        # Rows with no mass left (fully masked) have slope 0: no step. A residual below zero
        # is rounding in a step that crossed the root (the subtraction θ + step near |θ| ~ 1):
        # the same Newton step then leads back from the right. NaN scores keep a NaN θ and stop
        # (garbage in stays visible).
        step = torch.where(slope > 0, residual / slope, 0.0)
        # A row's last step is taken; after that it stays put, so its θ depends on its own
        # scores alone, not on which rows share its chunk (batch 1 and batch N agree).
        work_theta = torch.where(active, work_theta + step, work_theta)
        active = active & (residual.abs() > stop) & (slope > 0)
        pending = active.squeeze(-1)
        if work_rows is None:
            theta = work_theta
        else:
            theta[work_rows] = work_theta
        n_pending = int(pending.sum())
        if n_pending == 0:
            break
        if 2 * n_pending <= work.shape[0]:
            keep = pending.nonzero().squeeze(-1)
            work, work_theta, active = work[keep], work_theta[keep], active[keep]
            work_rows = keep if work_rows is None else work_rows[keep]
    return theta


def _start_from_the_right(gaps: torch.Tensor, theta: torch.Tensor, buffer: torch.Tensor,
                          target: float) -> torch.Tensor:
    """A starting lower bound for α = 1.5, about two Newton steps better than θ = −2.

    On the candidates A = {g > θ}, the smaller root r of Σ_A (g − θ)² = target overshoots the
    root (the quadratic ignores that entries leave the support as θ rises, so it lies above
    the mass); one Newton step back from r, where the mass is convex and below target, lands
    at or below the root again. On random score rows this saves about 30% of the passes.
    """
    x = torch.sub(gaps, theta, out=buffer).clamp_(min=0.0)
    sum_x = x.sum(-1, keepdim=True)
    residual = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_() - target
    count = x.sign_().sum(-1, keepdim=True)
    disc = (sum_x * sum_x - count * residual).clamp_(min=0.0)
    alive = sum_x > 0
    overshoot = theta + residual / torch.where(alive, sum_x + disc.sqrt(), 1.0)
    x = torch.sub(gaps, overshoot, out=buffer).clamp_(min=0.0)
    slope = 2.0 * x.sum(-1, keepdim=True)
    residual = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_() - target
    back = overshoot + residual / torch.where(slope > 0, slope, 1.0)
    return torch.where(alive & (slope > 0), back, theta)


def entmax_from_scores_(scores: torch.Tensor, row_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """α-entmax over the last axis, overwriting ``scores``: (..., N) → the same tensor, as
    probabilities. For α = 1.5 and 2 (the eager attention path; see ``newton_threshold``).

    scores: compute-dtype scores (−inf for masked keys); row_max: their (..., 1) row maximum,
    which the caller already has. Rows of all −inf become zeros; a row holding a NaN becomes NaN.
    """
    if not scores.is_contiguous():
        raise ValueError("entmax_from_scores_ works in place on a contiguous score tensor; "
                         f"got strides {scores.stride()} for shape {tuple(scores.shape)}")
    shape = scores.shape
    # All −inf rows shift by 0 and stay −inf (zero mass); a NaN maximum makes the row NaN.
    safe_max = row_max.masked_fill(row_max == float("-inf"), 0.0)
    gaps = scores.sub_(safe_max).view(-1, shape[-1])
    theta = newton_threshold(gaps, alpha)
    gaps.sub_(theta).clamp_(min=0.0)
    if alpha == 1.5:
        gaps.square_().mul_(0.25)               # (α − 1)^p [g − θ]_+^p with p = 2
    return scores


def alpha_entmax(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """α-entmax over the last axis for α in (1, 2]: the exact form for 1.5 and 2, else bisection."""
    alpha = check_alpha(alpha)
    if alpha == 1.5:
        return entmax15(scores)
    if alpha == 2.0:
        return sparsemax(scores)
    return entmax_bisect(scores, alpha)
