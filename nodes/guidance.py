"""What every installed GAG patch does at run time, whatever the architecture.

``GuidanceRuntime`` turns the settings and the model's noise schedule into two answers per
denoiser call: "is GAG on at this step, and with which λ?" and "run the guided attention".
Adapters own the hooking; this owns the behaviour, so every family behaves alike.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch

from ..gag_core import dense_sparse_attention, gag_attention, gag_combine
from ..gag_core.schedule import in_sigma_window, ramp_multiplier, sigma_to_percent, window_position
from .settings import GAGSettings


class GuidanceRuntime:
    """Per-model runtime state: the settings, the σ window, and a one-entry cache of the
    decision for the current denoiser call (keyed by the identity of its σ tensor, so the
    device-to-host read of σ happens once per call rather than once per patched layer)."""

    def __init__(self, settings: GAGSettings, model_sampling):
        self.settings = settings
        schedule = settings.schedule
        self._percent_to_sigma = model_sampling.percent_to_sigma
        self.sigma_start = float(self._percent_to_sigma(schedule.start_percent))
        self.sigma_end = float(self._percent_to_sigma(schedule.end_percent))
        self._cached_sigmas: Optional[weakref.ref] = None
        self._cached_scale: Optional[float] = None

    # Patches are immutable once installed; ModelPatcher.clone deep-copies model_options and
    # moves patches with .to(device), and both must hand back this same object.
    def __deepcopy__(self, memo):
        return self

    def to(self, device):
        return self

    def step_scale(self, transformer_options: dict) -> Optional[float]:
        """λ for this denoiser call, or None when the step is outside the schedule window."""
        schedule = self.settings.schedule
        if schedule.is_always_on:
            return self.settings.scale
        sigmas = transformer_options.get("sigmas")
        if sigmas is None:  # called outside a sampler: no step to schedule against
            return self.settings.scale
        if self._cached_sigmas is not None and self._cached_sigmas() is sigmas:
            return self._cached_scale
        sigma = float(sigmas.max()) if torch.is_tensor(sigmas) else float(sigmas)
        scale: Optional[float] = None
        if in_sigma_window(sigma, self.sigma_start, self.sigma_end):
            multiplier = 1.0
            if schedule.ramp != "constant":
                percent = sigma_to_percent(sigma, self._percent_to_sigma)
                position = window_position(percent, schedule.start_percent, schedule.end_percent)
                multiplier = ramp_multiplier(position, schedule.ramp)
            scale = self.settings.scale * multiplier
        try:
            self._cached_sigmas = weakref.ref(sigmas)
            self._cached_scale = scale
        except TypeError:  # a plain float σ cannot be weak-referenced; just don't cache
            self._cached_sigmas = None
        return scale

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """GAG attention, (B, H, Lq, D) layout in and out (q's dtype)."""
        s = self.settings
        return gag_attention(q, k, v, scale=scale, eta=s.eta, zeta=s.zeta, alpha=s.alpha,
                             mask=mask)

    def correction(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """GAG output minus the plain softmax output, (B, H, Lq, D) in q's dtype.

        Used to add GAG on top of another patch's attention (see the adapters): if that patch
        computes softmax attention plus extra terms, adding this keeps its terms and adds GAG's.
        """
        s = self.settings
        dense, sparse = dense_sparse_attention(q, k, v, alpha=s.alpha, mask=mask)
        guided = gag_combine(dense, sparse, scale=scale, eta=s.eta, zeta=s.zeta)
        return (guided - dense).to(q.dtype)
