"""Reading one ComfyUI attention call: its arguments, whichever way they were passed, as
(B, H, L, D) tensors for gag_core, and GAG's output back in the layout the call returns."""

from __future__ import annotations

import torch

__all__ = ["AttentionCall"]


class AttentionCall:
    """The arguments of a ComfyUI attention function, whichever way they were passed:
    ``(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
    skip_output_reshape=False, **kwargs)``; kwargs may carry a softmax ``scale`` and
    ``enable_gqa`` (fewer key/value heads than query heads)."""

    _NAMES = ("q", "k", "v", "heads", "mask", "attn_precision", "skip_reshape",
              "skip_output_reshape")

    def __init__(self, args: tuple, kwargs: dict):
        bound = dict(zip(self._NAMES, args))
        for name in self._NAMES[len(args):]:
            if name in kwargs:
                bound[name] = kwargs[name]
        self.q, self.k, self.v = bound["q"], bound["k"], bound["v"]
        self.heads = int(bound["heads"])
        self.mask = bound.get("mask")
        self.skip_reshape = bool(bound.get("skip_reshape", False))
        self.skip_output_reshape = bool(bound.get("skip_output_reshape", False))
        self.softmax_scale = kwargs.get("scale")
        self.enable_gqa = bool(kwargs.get("enable_gqa", False))

    def tokens(self, t: torch.Tensor) -> int:
        return t.shape[2] if self.skip_reshape else t.shape[1]

    @property
    def query_tokens(self) -> int:
        return self.tokens(self.q)

    @property
    def key_tokens(self) -> int:
        return self.tokens(self.k)

    def _to_heads(self, t: torch.Tensor, in_heads: bool) -> torch.Tensor:
        """(B, L, H·D) → (B, H, L, D); tensors already in head layout pass through."""
        if in_heads:
            return t
        return t.reshape(t.shape[0], t.shape[1], -1, self._head_dim()).transpose(1, 2)

    def _head_dim(self) -> int:
        return self.q.shape[-1] // self.heads

    def heads_qkv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, H, L, D), ready for gag_core: keys/values repeated to the query heads
        under grouped-query attention, and a custom softmax scale folded into q (gag_core
        scales scores by 1/√D)."""
        q, k, v = (self._to_heads(t, self.skip_reshape) for t in (self.q, self.k, self.v))
        if k.shape[1] != q.shape[1]:
            if not self.enable_gqa or q.shape[1] % k.shape[1]:
                raise ValueError(f"GAG: attention with {q.shape[1]} query heads and "
                                 f"{k.shape[1]} key heads")
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if self.softmax_scale is not None:
            q = q * (float(self.softmax_scale) * q.shape[-1] ** 0.5)
        return q, k, v

    def output_to_heads(self, out: torch.Tensor) -> torch.Tensor:
        """An attention function's output → (B, H, L, D)."""
        if self.skip_output_reshape:
            return out
        return out.reshape(out.shape[0], out.shape[1], self.heads, -1).transpose(1, 2)

    def from_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, L, D) → the layout the attention function returns."""
        if self.skip_output_reshape:
            return out
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
