"""What every installed GAG patch does at run time, whatever the architecture.

``GuidanceRuntime`` turns the settings and the model's noise schedule into two answers per
denoiser call: "is GAG on at this step, and with which λ?" and "run the guided attention".
Adapters own the hooking; this owns the behaviour, so every family behaves alike. Each guided
call also feeds the strength readout (nodes/readout.py) while a sampling run collects; the
readout never changes what the call returns.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch

from ..gag_core import dense_sparse_attention, gag_attention, gag_combine
from ..gag_core.joint import text_guided_attention
from ..gag_core.layer_spec import LayerRef
from ..gag_core.readout import attention_gain, text_attention_gain
from ..gag_core.schedule import in_sigma_window, ramp_multiplier, sigma_to_percent, window_position
from .adapters.shared import SharedObject
from .readout import GainReadout
from .settings import GAGSettings


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
        self._cached_sigmas: Optional[weakref.ref] = None
        self._cached_scale: Optional[float] = None

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

    def _record_gain(self, layer: Optional[LayerRef], gain_fn, *args, **kwargs) -> None:
        """Hand the gain of this call to the readout, when a sampling run is collecting."""
        readout = self.readout
        if readout is None or not readout.collecting:
            return
        s = self.settings
        gain, capped = gain_fn(*args, eta=s.eta, zeta=s.zeta, alpha=s.alpha, **kwargs)
        readout.record(layer, gain, capped)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                  mask: Optional[torch.Tensor] = None, *, keys_may_repeat: bool = True,
                  layer: Optional[LayerRef] = None) -> torch.Tensor:
        """GAG attention, (B, H, Lq, D) layout in and out (q's dtype).

        keys_may_repeat: the keys may be a repeat-padded batch of prompts (UNet
        cross-attention; see key_periods), so exact repeats are removed first. Joint DiT
        attention is never repeat-padded (its conditioning batches only at equal length) and
        passes False to skip that check's passes over k and v.
        layer: which layer this is, for the readout's per-group figures and layer count.
        """
        s = self.settings

        def guided(q, k, v, mask):
            self._record_gain(layer, attention_gain, q, k, v, scale=scale, mask=mask)
            return gag_attention(q, k, v, scale=scale, eta=s.eta, zeta=s.zeta, alpha=s.alpha,
                                 mask=mask)
        if not keys_may_repeat:
            return guided(q, k, v, mask)
        return _without_repeated_keys(guided, q, k, v, mask)

    def correction(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                   mask: Optional[torch.Tensor] = None, *, keys_may_repeat: bool = True,
                   layer: Optional[LayerRef] = None) -> torch.Tensor:
        """GAG output minus the plain softmax output, (B, H, Lq, D) in q's dtype.

        Used to add GAG on top of another patch's attention (see the adapters): if that patch
        computes softmax attention plus extra terms, adding this keeps its terms and adds GAG's.
        keys_may_repeat and layer as in ``attention``.
        """
        s = self.settings

        def correction(q, k, v, mask):
            self._record_gain(layer, attention_gain, q, k, v, scale=scale, mask=mask)
            dense, sparse = dense_sparse_attention(q, k, v, alpha=s.alpha, mask=mask)
            guided = gag_combine(dense, sparse, scale=scale, eta=s.eta, zeta=s.zeta)
            return (guided - dense).to(q.dtype)
        if not keys_may_repeat:
            return correction(q, k, v, mask)
        return _without_repeated_keys(correction, q, k, v, mask)

    def text_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       text_tokens: int, scale: float, mask: Optional[torch.Tensor] = None,
                       plain: Optional[torch.Tensor] = None, text_start: int = 0, *,
                       layer: Optional[LayerRef] = None) -> torch.Tensor:
        """Text-mode GAG on a joint attention whose positions [text_start, text_start +
        text_tokens) are text (``gag_core.joint.text_guided_attention``): the other rows'
        retrieval of the text keys is guided, everything else is ``plain`` (the unguided
        attention output, if the caller has it). (B, H, L, D) in, (B, H, L, Dv) out in q's
        dtype. layer as in ``attention``."""
        s = self.settings
        self._record_gain(layer, text_attention_gain, q, k, v, text_tokens, scale=scale,
                          mask=mask, text_start=text_start)
        return text_guided_attention(q, k, v, text_tokens, scale=scale, eta=s.eta, zeta=s.zeta,
                                     alpha=s.alpha, mask=mask, plain=plain, text_start=text_start)


# ComfyUI repeats a conditioning at most 4× against any other one it is batched with; a few of
# different lengths can need more. Periods of up to this many repeats are looked for.
MAX_KEY_REPEATS = 16


def _candidate_periods(lk: int) -> list[int]:
    """Periods p = Lk / r, r = 2 … MAX_KEY_REPEATS, ascending."""
    return [lk // r for r in range(MAX_KEY_REPEATS, 1, -1) if lk % r == 0]


def _repeats_with_period(k: torch.Tensor, v: torch.Tensor, period: int) -> torch.Tensor:
    """(B,) bool: keys and values of the row repeat exactly with this period."""
    same_k = (k[:, :, period:] == k[:, :, :-period]).flatten(1).all(1)
    same_v = (v[:, :, period:] == v[:, :, :-period]).flatten(1).all(1)
    return same_k & same_v


def key_periods(k: torch.Tensor, v: torch.Tensor) -> Optional[list[int]]:
    """Per batch row, the shortest period with which keys AND values repeat along the token
    axis (Lk where they don't); None when no row repeats. k, v: (B, H, Lk, D).

    ComfyUI batches conditionings of different lengths by repeating the shorter ones up to a
    common multiple (comfy/conds.py ``CONDCrossAttn.concat``: "padding with repeat doesn't
    change result"). That holds for softmax, not for α-entmax: r copies of a key set lower the
    threshold and spread the sparse map, so GAG's output would depend on the other prompt's
    length and on whether free memory let ComfyUI batch cond and uncond together.
    """
    lk = k.shape[2]
    periods = _candidate_periods(lk)
    if not periods or k.shape[0] == 0 or v.shape[2] != lk:
        return None
    # Cheap filter: the key one period in against the first key. Multi-chunk prompts pass it
    # too (every CLIP chunk starts with the same BOS state), so survivors get the full check.
    offsets = torch.tensor(periods, device=k.device)
    first_match = (k.index_select(2, offsets) == k[:, :, :1]).all(-1).all(1)     # (B, P)
    survivors = [p for p, hit in zip(periods, first_match.any(0).tolist()) if hit]
    if not survivors:
        return None
    repeats = torch.stack([_repeats_with_period(k, v, p) for p in survivors]).cpu()  # (S, B)
    if not bool(repeats.any()):
        return None
    found = []
    for row in range(k.shape[0]):
        hits = repeats[:, row].nonzero()
        found.append(survivors[int(hits[0])] if len(hits) else lk)
    return found


def _first_period_keep_mask(k: torch.Tensor, v: torch.Tensor) -> Optional[torch.Tensor]:
    """key_periods without a device-to-host read, as a (B, 1, 1, Lk) keep-mask of each row's
    first period: what torch.compile can trace without a graph break."""
    lk = k.shape[2]
    periods = _candidate_periods(lk)
    if not periods or v.shape[2] != lk:
        return None
    first = torch.full((k.shape[0],), lk, device=k.device, dtype=torch.long)
    for period in reversed(periods):  # the shortest period is written last and wins
        first = torch.where(_repeats_with_period(k, v, period), period, first)
    keep = torch.arange(lk, device=k.device) < first[:, None]
    return keep[:, None, None, :]


def _without_repeated_keys(fn, q, k, v, mask):
    """fn(q, k, v, mask) on each batch row's first period of keys and values (see key_periods).

    A masked call is left alone: its mask already decides which keys count.
    """
    if mask is not None:
        return fn(q, k, v, mask)
    if torch.compiler.is_compiling() or k.is_cuda:
        # Masking the copies gives the same maps as cutting them (−inf scores get no mass in
        # either branch) and keeps shapes static. On a GPU that also avoids the device-to-host
        # reads of key_periods (two per patched layer), which stall the launch queue and
        # prevent CUDA-graph capture; on the CPU those reads are free and cutting is cheaper.
        return fn(q, k, v, _first_period_keep_mask(k, v))
    periods = key_periods(k, v)
    if periods is None:
        return fn(q, k, v, None)
    rows_by_period: dict[int, list[int]] = {}
    for row, period in enumerate(periods):
        rows_by_period.setdefault(period, []).append(row)
    out = None
    for period, rows in rows_by_period.items():
        index = torch.tensor(rows, device=q.device)
        part = fn(q.index_select(0, index), k.index_select(0, index)[:, :, :period],
                  v.index_select(0, index)[:, :, :period], None)
        if out is None:
            out = part.new_empty((q.shape[0],) + tuple(part.shape[1:]))
        out.index_copy_(0, index, part)
    return out
