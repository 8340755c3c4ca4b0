"""When GAG acts during sampling, and how strongly: pure functions, no ComfyUI import.

A schedule is a window [start_percent, end_percent] of the sampling run (0 = first step, at the
highest noise level; 1 = the end) plus a ramp that multiplies λ inside the window. ComfyUI maps a
percent to a noise level σ with ``model_sampling.percent_to_sigma``; the node does that once, and
at each denoiser call the current σ is compared with the window's σ bounds (σ falls as sampling
proceeds, so start ↔ high σ). The comparison has a relative tolerance: σ values travel through
float32 and float64 on their way to the model, and without one a step that sits exactly on a
boundary flips in and out of the window between runs.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

__all__ = ["RAMPS", "ramp_multiplier", "in_sigma_window", "sigma_to_percent", "check_window",
           "SIGMA_REL_TOL"]

RAMPS = ("constant", "linear up", "linear down", "cosine up", "cosine down")
SIGMA_REL_TOL = 1e-4


def check_window(start_percent, end_percent) -> tuple[float, float]:
    """Both in [0, 1] and start ≤ end; raises ValueError naming the bad input."""
    for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1] (a fraction of the sampling "
                             f"run); got {value!r}")
    if start_percent > end_percent:
        raise ValueError(f"start_percent ({start_percent}) must not be after end_percent "
                         f"({end_percent}); the window runs from start to end of sampling")
    return float(start_percent), float(end_percent)


def ramp_multiplier(position: float, ramp: str) -> float:
    """λ multiplier at ``position`` ∈ [0, 1] through the window (0 = window start).

    constant → 1; linear up → position; linear down → 1 − position;
    cosine up → (1 − cos πp)/2; cosine down → (1 + cos πp)/2.
    """
    p = min(max(float(position), 0.0), 1.0)
    if ramp == "constant":
        return 1.0
    if ramp == "linear up":
        return p
    if ramp == "linear down":
        return 1.0 - p
    if ramp == "cosine up":
        return 0.5 * (1.0 - math.cos(math.pi * p))
    if ramp == "cosine down":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"ramp must be one of {', '.join(RAMPS)}; got {ramp!r}")


def in_sigma_window(sigma: float, sigma_start: float, sigma_end: float,
                    rel_tol: float = SIGMA_REL_TOL) -> bool:
    """True when σ lies in [σ_end, σ_start] up to a relative tolerance (σ_start ≥ σ_end)."""
    upper = sigma_start * (1.0 + rel_tol) if math.isfinite(sigma_start) else math.inf
    lower = sigma_end * (1.0 - rel_tol)
    return lower <= sigma <= upper


def sigma_to_percent(sigma: float, percent_to_sigma: Callable[[float], float],
                     iterations: int = 40) -> float:
    """Invert a non-increasing ``percent_to_sigma`` by bisection: σ → percent in [0, 1].

    Model samplings differ (EPS, v-prediction, flow shift), so the inverse is taken numerically
    from the model's own map instead of assuming a formula.
    """
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if percent_to_sigma(mid) > sigma:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def window_position(percent: float, start_percent: float, end_percent: float) -> Optional[float]:
    """Where ``percent`` sits in the window, in [0, 1]; a zero-length window counts as its start."""
    if end_percent <= start_percent:
        return 0.0
    return min(max((percent - start_percent) / (end_percent - start_percent), 0.0), 1.0)


__all__.append("window_position")
