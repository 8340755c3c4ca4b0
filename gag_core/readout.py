"""How hard GAG pushes, measured on a sample of query tokens without touching the output.

The rule multiplies each head's sparse output, along its own direction, by the gain
``1 + λ·min(1, η/‖g‖)·c`` (``rule.gag_gain``). The same λ gives very different gains on different
models (c is a property of the model's attention), so the readout reports the gain itself.

The functions here recompute the dense and sparse retrievals for a strided sample of at most
``max_queries`` query rows per call (all rows when there are fewer) with the exact PyTorch path,
and return the gain and the cap-active mask for them. They never feed back into the guided output:
whatever backend computed that (the PyTorch path or the fused kernel), it is bit-identical with
and without the readout. Cost per call: ``max_queries`` query rows of one dense-plus-sparse
attention, a small fraction of the guided call itself for image-sized query counts. Every shape
is static, so the functions trace under torch.compile without a graph break.

Layout as everywhere: q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv).
"""

from __future__ import annotations

from typing import Optional

import torch

from .attention import dense_sparse_attention, normalize_mask
from .joint import text_retrieval_operands
from .rule import gag_gain

__all__ = ["READOUT_QUERIES", "query_stride", "attention_gain", "text_attention_gain"]

# Query rows sampled per attention call. 64 rows × every head × every batch row gives thousands
# of values per call and hundreds of thousands per step; the medians and 95th percentiles the
# readout reports do not need more.
READOUT_QUERIES = 64


def query_stride(queries: int, max_queries: int = READOUT_QUERIES) -> int:
    """Stride of the evenly spaced query sample: ceil(Lq / max_queries), at least 1."""
    if max_queries < 1:
        raise ValueError(f"max_queries must be ≥ 1; got {max_queries}")
    return max(1, -(-queries // max_queries))


@torch.no_grad()
def attention_gain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
                   eta: float, zeta: float, alpha: float, mask: Optional[torch.Tensor] = None,
                   max_queries: int = READOUT_QUERIES) -> tuple[torch.Tensor, torch.Tensor]:
    """Gain and cap-active mask of GAG on rows 0, s, 2s, … of q (s = ``query_stride``).

    Returns gain (B, H, ⌈Lq/s⌉, 1) in the compute dtype and capped (same shape, bool), as
    ``gag_gain`` defines them, for the same q, k, v, mask and parameters as ``gag_attention``.
    """
    stride = query_stride(q.shape[2], max_queries)
    mask = normalize_mask(mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    if mask is not None and mask.shape[2] != 1:
        mask = mask[:, :, ::stride]
    dense, sparse = dense_sparse_attention(q[:, :, ::stride], k, v, alpha=alpha, mask=mask)
    return gag_gain(dense, sparse, scale=scale, eta=eta, zeta=zeta)


@torch.no_grad()
def text_attention_gain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text_tokens: int, *,
                        scale: float, eta: float, zeta: float, alpha: float,
                        mask: Optional[torch.Tensor] = None, text_start: int = 0,
                        max_queries: int = READOUT_QUERIES) -> tuple[torch.Tensor, torch.Tensor]:
    """``attention_gain`` of text mode's guided retrieval (image queries → text keys) of a
    joint attention whose positions [text_start, text_start + text_tokens) are text (see
    ``gag_core.joint``).

    Empty (B, H, 0, 1) results when there are no text keys or no image queries: text mode
    guides nothing there.
    """
    q_img, k_txt, v_txt, txt_mask = text_retrieval_operands(q, k, v, text_tokens, mask,
                                                            text_start)
    if k_txt.shape[2] == 0 or q_img.shape[2] == 0:
        empty = q.new_empty(q.shape[:2] + (0, 1), dtype=torch.float32)
        return empty, empty.to(torch.bool)
    return attention_gain(q_img, k_txt, v_txt, scale=scale, eta=eta, zeta=zeta, alpha=alpha,
                          mask=txt_mask, max_queries=max_queries)
