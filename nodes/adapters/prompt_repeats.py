"""ComfyUI's repeat-padding of batched prompts, undone before GAG sees the keys.

ComfyUI batches conditionings of different lengths by repeating the shorter ones up to a common
multiple (comfy/conds.py ``CONDCrossAttn.concat``: "padding with repeat doesn't change result").
That holds for softmax, not for α-entmax: r copies of a key set lower the threshold and spread
the sparse map, so GAG's output would depend on the other prompt's length and on whether free
memory let ComfyUI batch cond and uncond together. Cross-attention hooks (UNet attn2, a DiT's
separate cross-attention) therefore run GAG through ``without_repeated_keys``; joint attention
needs none of this (its text conditioning batches only at equal length).
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["MAX_KEY_REPEATS", "key_periods", "without_repeated_keys"]


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
    axis (Lk where they don't); None when no row repeats. k, v: (B, H, Lk, D)."""
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


def without_repeated_keys(fn, q, k, v, mask):
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
