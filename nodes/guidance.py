"""What every installed GAG patch does at run time, whatever the architecture.

``GuidanceRuntime`` turns the settings and the model's noise schedule into two answers per
denoiser call: "is GAG on at this step, and with which λ?" and "run the guided attention".
In target-gain mode (settings.target_gain > 0) λ is set inside each guided call from that call's
own gain coefficients (gag_core.target_gain), on the PyTorch path whatever the backend (the
fused kernel takes λ as a number); the step's answer is then the schedule ramp's multiplier of
that λ.
Adapters own the hooking; this owns the behaviour, so every family behaves alike. Each guided
call also feeds the strength readout (nodes/gain_readout.py) while a sampling run collects; the
readout never changes what the call returns.
"""

from __future__ import annotations

import logging
import weakref
from typing import Optional

import torch

from ..gag_core import gag_attention, gag_correction
from ..gag_core.joint import text_guided_attention
from ..gag_core.layer_spec import LayerRef
from ..gag_core.readout import attention_gain, query_stride, text_attention_gain
from ..gag_core.schedule import in_sigma_window, ramp_multiplier, sigma_to_percent, window_position
from ..gag_core.target_gain import target_gain_attention
from .adapters.shared import SharedObject
from .gain_readout import GainReadout
from .settings import GAGSettings

_log = logging.getLogger("comfyui_gag")


class GuidanceRuntime(SharedObject):
    """Per-model runtime state: the settings, the σ window, and a one-entry cache of the
    decision for the current denoiser call (keyed by the identity of its σ tensor, so the
    device-to-host read of σ happens once per call rather than once per patched layer)."""

    def __init__(self, settings: GAGSettings, model_sampling, *, readout: bool = True):
        self.settings = settings
        # None: no readout (patch_model(readout=False), or a ComfyUI without run wrappers).
        self.readout: Optional[GainReadout] = GainReadout() if readout else None
        schedule = settings.schedule
        self._percent_to_sigma = model_sampling.percent_to_sigma
        self.sigma_start = float(self._percent_to_sigma(schedule.start_percent))
        self.sigma_end = float(self._percent_to_sigma(schedule.end_percent))
        # Which evidence the readout's hint uses (gain_readout.GAIN_BANDS): "unet", "dit text"
        # or "dit joint", set by patch_model from the family's hook and the mode.
        self.band_key = "unet"
        if settings.target_gain:
            _log.info("GAG: target-gain mode (median gain ×%g): λ is set per attention call on "
                      "the device and the guided attention runs on the PyTorch path (the fused "
                      "kernel takes λ as a number)", settings.target_gain)
        self._cached_sigmas: Optional[weakref.ref] = None
        self._cached_scale: Optional[float] = None

    @property
    def targets_gain(self) -> bool:
        return self.settings.target_gain > 0

    def step_scale(self, transformer_options: dict) -> Optional[float]:
        """λ for this denoiser call, or None when the step is outside the schedule window.
        In target-gain mode: the ramp's multiplier of each call's λ (1 without a ramp); the
        hooks hand it back to ``attention`` / ``correction`` / ``text_attention`` unread."""
        schedule = self.settings.schedule
        base = 1.0 if self.targets_gain else self.settings.scale
        if schedule.is_always_on:
            return base
        sigmas = transformer_options.get("sigmas")
        if sigmas is None:  # called outside a sampler: no step to schedule against
            return base
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
            scale = base * multiplier
        try:
            self._cached_sigmas = weakref.ref(sigmas)
            self._cached_scale = scale
        except TypeError:  # a plain float σ cannot be weak-referenced; just don't cache
            self._cached_sigmas = None
        return scale

    def _record_gain(self, layer: Optional[LayerRef], gain_fn, *args, **kwargs) -> None:
        """Hand the gain of this call to the readout, when a sampling run is collecting."""
        readout = self.readout
        if readout is None or not readout.collecting:
            return
        s = self.settings
        gain, capped = gain_fn(*args, eta=s.eta, zeta=s.zeta, alpha=s.alpha, **kwargs)
        readout.record(layer, gain, capped)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                  mask: Optional[torch.Tensor] = None, *,
                  layer: Optional[LayerRef] = None) -> torch.Tensor:
        """GAG attention, (B, H, Lq, D) layout in and out (q's dtype).

        layer: which layer this is, for the readout's per-group figures and layer count.
        """
        s = self.settings
        if self.targets_gain:
            return self._target_attention(q, k, v, scale, mask, layer, minus_dense=False)
        self._record_gain(layer, attention_gain, q, k, v, scale=scale, mask=mask)
        return gag_attention(q, k, v, scale=scale, eta=s.eta, zeta=s.zeta, alpha=s.alpha,
                             mask=mask)

    def correction(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                   mask: Optional[torch.Tensor] = None, *,
                   layer: Optional[LayerRef] = None) -> torch.Tensor:
        """GAG output minus the plain softmax output, (B, H, Lq, D) in q's dtype.

        Used to add GAG on top of another patch's attention (see the hooks): if that patch
        computes softmax attention plus extra terms, adding this keeps its terms and adds GAG's.
        layer as in ``attention``.
        """
        s = self.settings
        if self.targets_gain:
            return self._target_attention(q, k, v, scale, mask, layer, minus_dense=True)
        self._record_gain(layer, attention_gain, q, k, v, scale=scale, mask=mask)
        return gag_correction(q, k, v, scale=scale, eta=s.eta, zeta=s.zeta, alpha=s.alpha,
                              mask=mask).to(q.dtype)

    def text_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       text_tokens: int, scale: float, mask: Optional[torch.Tensor] = None,
                       plain: Optional[torch.Tensor] = None, text_start: int = 0, *,
                       layer: Optional[LayerRef] = None) -> torch.Tensor:
        """Text-mode GAG on a joint attention whose positions [text_start, text_start +
        text_tokens) are text (``gag_core.joint.text_guided_attention``): the other rows'
        retrieval of the text keys is guided, everything else is ``plain`` (the unguided
        attention output, if the caller has it). q (B, H, L, D); k, v (B, H, L' ≥ L, ·): the
        queries' own tokens, then any extra keys (a KV cache's reference tokens); (B, H, L, Dv)
        out in q's dtype. layer as in ``attention``."""
        s = self.settings
        if self.targets_gain:
            def retrieval_correction(q_img, k_txt, v_txt, txt_mask):
                return self._target_attention(q_img, k_txt, v_txt, scale, txt_mask, layer,
                                              minus_dense=True, cast=False)
            return text_guided_attention(q, k, v, text_tokens, eta=s.eta, zeta=s.zeta,
                                         alpha=s.alpha, mask=mask, plain=plain,
                                         text_start=text_start,
                                         retrieval_correction=retrieval_correction)
        self._record_gain(layer, text_attention_gain, q, k, v, text_tokens, scale=scale,
                          mask=mask, text_start=text_start)
        return text_guided_attention(q, k, v, text_tokens, scale=scale, eta=s.eta, zeta=s.zeta,
                                     alpha=s.alpha, mask=mask, plain=plain, text_start=text_start)

    # --- target-gain mode (issue 23) ------------------------------------------------------

    def _target_attention(self, q, k, v, strength: float, mask, layer, *, minus_dense: bool,
                          cast: bool = True) -> torch.Tensor:
        """GAG with λ set for this call so its median gain is the target (times the ramp's
        ``strength``): the output (or with ``minus_dense`` the correction), in q's dtype or,
        without ``cast``, the compute dtype. The readout gets the exact gains of the same
        query-row sample it takes in fixed-λ mode, from terms the call computed anyway."""
        s = self.settings
        call = target_gain_attention(q, k, v, target=s.target_gain, eta=s.eta, zeta=s.zeta,
                                     alpha=s.alpha, mask=mask, strength=strength,
                                     minus_dense=minus_dense)
        readout = self.readout
        if readout is not None and readout.collecting:
            rows = slice(None, None, query_stride(call.a.shape[2]))
            gain = 1 + call.scale.view(-1, 1, 1, 1) * call.a[:, :, rows]
            readout.record(layer, gain, call.capped[:, :, rows])
            readout.record_target(call.scale, call.median)
        return call.out.to(q.dtype) if cast else call.out
