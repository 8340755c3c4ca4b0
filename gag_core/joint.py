"""GAG inside a joint (MMDiT) attention, where text and image tokens share one sequence.

A joint attention runs every query against the concatenation of text keys and image keys. The
text is one span of ``T`` positions starting at ``text_start``: 0 where the model puts the text
first (FLUX, SD3, Z-Image, …), ``L − T`` where it puts it last (HiDream). Every position outside
the span is an image-stream token. Two ways to apply GAG to it:

* joint mode: GAG over the whole attention, every query and every key. That is plain
  ``gag_attention`` on the joint q, k, v; nothing in this module is needed for it.
* text mode: only the image-query → text-key retrieval is guided. For an image query the
  softmax output splits exactly into its text and image parts,

      O = w · O_d^txt + (1 − w) · O_d^img,    w = Σ_{j ∈ text} softmax(S)_j  (text-key mass)

  where O_d^txt and O_d^img are softmax retrievals over the text keys alone and the image keys
  alone. Text mode replaces the text component by its GAG version, computed on the text keys
  alone (dense softmax and sparse α-entmax of the same text-key scores):

      O' = O + w · (GAG(O_d^txt, O_s^txt) − O_d^txt)

  Text-query outputs are left exactly as they were, and so is the image-key part of the image
  queries' outputs. The text-key scores are a T-column slice of the full score matrix, so the
  extra work is O(L_img · T) per head rather than O(L²).

The mass w needs the normaliser over all keys. It comes from a scaled-dot-product-attention
call whose values carry an indicator column (1 on text keys, 0 on image keys): the output in
that column is exactly w. Appended to the real values, the same call yields the plain output
and w together (``joint_attention_with_text_mass``); alone, padded to 8 columns, it costs one
score pass without the value product (``text_key_mass``), for callers that already have the
plain output from another attention backend.

Layout: q (B, H, Lq, D), k (B, H, L, D), v (B, H, L, Dv), as torch's SDPA takes them. The
keys start with the queries' own tokens in the same order (L = Lq) and may go on with extra
keys that have no query (L > Lq): reference-image tokens whose keys and values a KV cache
appends from the second step on (ComfyUI's FluxKVCache). The text span is one of the queries'
own positions; extra keys count as image-stream keys.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .attention import gag_correction, normalize_mask
from .defaults import PAPER
from .rule import check_alpha, check_guidance_params
from .sparse import compute_dtype

__all__ = ["check_text_tokens", "text_key_mass", "joint_attention_with_text_mass",
           "text_retrieval_operands", "text_retrieval_correction", "text_guided_attention",
           "INDICATOR_WIDTH"]

# Head dims that are multiples of 8 keep SDPA on its fused kernels.
INDICATOR_WIDTH = 8


def check_text_tokens(text_tokens, length: int, text_start: int = 0) -> int:
    """T must be an integer with the span [text_start, text_start + T) inside [0, L]; returns
    it, else raises ValueError."""
    for name, value in (("text_tokens", text_tokens), ("text_start", text_start)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} (the text span of the joint sequence: its first position "
                             f"and number of tokens) must be an integer; got {value!r}")
    if not 0 <= text_start <= length:
        raise ValueError(f"text_start must be in [0, {length}] (the joint sequence length); "
                         f"got {text_start}")
    if not 0 <= text_tokens <= length - text_start:
        raise ValueError(f"text_tokens must be in [0, {length - text_start}] (the joint sequence "
                         f"length {length} less text_start {text_start}); got {text_tokens}")
    return text_tokens


def _image_rows(length: int, text_start: int, text_tokens: int):
    """The positions outside the text span, as a slice where they are contiguous (text first
    or last) and as an index tensor otherwise."""
    stop = text_start + text_tokens
    if text_start == 0:
        return slice(stop, None)
    if stop == length:
        return slice(0, text_start)
    return torch.cat([torch.arange(text_start), torch.arange(stop, length)])


def _check_joint(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, L, D); got shape {tuple(t.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q, k, v shapes do not form one attention: q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")


def _check_extra_keys(q, k):
    if q.shape[2] > k.shape[2]:
        raise ValueError(f"a joint attention has at least as many keys as queries (the queries' "
                         f"own tokens, then any extra keys); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")


def _indicator(k: torch.Tensor, text_tokens: int, width: int, text_start: int = 0
               ) -> torch.Tensor:
    """(B, H, L, width) in k's dtype: column 0 is 1 on the text keys
    [text_start, text_start + text_tokens)."""
    batch, heads, length, _ = k.shape
    ind = torch.zeros(batch, heads, length, width, dtype=k.dtype, device=k.device)
    ind[:, :, text_start:text_start + text_tokens, 0] = 1
    return ind


def _slice_mask(mask, rows=slice(None), cols=slice(None)):
    """Restrict a rank-4 mask to query rows (a slice or an index tensor) / key columns, keeping
    broadcast axes as they are."""
    if mask is None:
        return None
    if mask.shape[2] != 1:
        mask = mask[:, :, rows.to(mask.device) if torch.is_tensor(rows) else rows]
    if mask.shape[3] != 1:
        mask = mask[..., cols]
    return mask


def _sdpa_mask(mask, q, k):
    mask = normalize_mask(mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    return mask


def text_key_mass(q: torch.Tensor, k: torch.Tensor, text_tokens: int,
                  mask: Optional[torch.Tensor] = None, *, text_start: int = 0) -> torch.Tensor:
    """w: the softmax mass each query puts on the text keys [text_start, text_start + T).

    q (B, H, Lq, D), k (B, H, L, D) → (B, H, Lq, 1) in the compute dtype (float32; float64
    stays float64). ``mask`` as ComfyUI passes it to attention (additive float or boolean
    keep-mask, rank 2–4). One SDPA call with an 8-column indicator as the values.
    """
    _check_joint(q, k, k)
    text_tokens = check_text_tokens(text_tokens, k.shape[2], text_start)
    indicator = _indicator(k, text_tokens, INDICATOR_WIDTH, text_start)
    out = F.scaled_dot_product_attention(q, k, indicator, attn_mask=_sdpa_mask(mask, q, k))
    return out[..., :1].to(compute_dtype(q.dtype))


def joint_attention_with_text_mass(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                   text_tokens: int, mask: Optional[torch.Tensor] = None, *,
                                   text_start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain softmax attention and w from one SDPA call.

    Returns (out (B, H, Lq, Dv) in v's dtype, w (B, H, Lq, 1) in the compute dtype). The values
    are padded with the indicator column and zeros up to a multiple of 8 columns.
    """
    _check_joint(q, k, v)
    text_tokens = check_text_tokens(text_tokens, k.shape[2], text_start)
    dv = v.shape[-1]
    width = INDICATOR_WIDTH - dv % INDICATOR_WIDTH if dv % INDICATOR_WIDTH else INDICATOR_WIDTH
    augmented = torch.cat([v, _indicator(k, text_tokens, width, text_start).to(v.dtype)], dim=-1)
    out = F.scaled_dot_product_attention(q, k, augmented, attn_mask=_sdpa_mask(mask, q, k))
    return out[..., :dv], out[..., dv:dv + 1].to(compute_dtype(q.dtype))


def text_retrieval_operands(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text_tokens: int,
                            mask: Optional[torch.Tensor] = None, text_start: int = 0):
    """What text mode guides: the image queries against the text keys.

    q (B, H, Lq, D), k, v (B, H, L ≥ Lq, ·) in joint order (module docstring), text at
    [text_start, text_start + T). Returns q_img (B, H, Lq − T, D), k_txt (B, H, T, D), v_txt
    (B, H, T, Dv) and the mask restricted to (image queries, text keys), rank 4 or None: the
    operands ``text_guided_attention`` hands to ``text_retrieval_correction``.
    """
    _check_joint(q, k, v)
    _check_extra_keys(q, k)
    length = k.shape[2]
    text_tokens = check_text_tokens(text_tokens, q.shape[2], text_start)
    text = slice(text_start, text_start + text_tokens)
    rows = _image_rows(q.shape[2], text_start, text_tokens)
    if torch.is_tensor(rows):
        rows = rows.to(q.device)
    full_mask = normalize_mask(mask, q.shape[0], q.shape[1], q.shape[2], length)
    txt_mask = _slice_mask(_slice_mask(full_mask, rows=rows), cols=text)
    return q[:, :, rows], k[:, :, text], v[:, :, text], txt_mask


def text_retrieval_correction(q_img: torch.Tensor, k_txt: torch.Tensor, v_txt: torch.Tensor,
                              text_mass: torch.Tensor, *, scale: float, eta: float, zeta: float,
                              alpha: float, mask: Optional[torch.Tensor] = None,
                              chunk_bytes: Optional[int] = None) -> torch.Tensor:
    """w · (GAG(O_d^txt, O_s^txt) − O_d^txt) for image queries against the text keys.

    q_img (B, H, Li, D), k_txt (B, H, T, D), v_txt (B, H, T, Dv), text_mass (B, H, Li, 1),
    mask already restricted to (image queries, text keys). Returns (B, H, Li, Dv) in the
    compute dtype. Working memory is bounded by ``chunk_bytes`` (queries are chunked).
    """
    correction = gag_correction(q_img, k_txt, v_txt, scale=scale, eta=eta, zeta=zeta,
                                alpha=alpha, mask=mask, chunk_bytes=chunk_bytes)
    return text_mass.to(correction.dtype) * correction


def text_guided_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text_tokens: int,
                          *, scale: float = PAPER.scale, eta: float = PAPER.eta,
                          zeta: float = PAPER.zeta, alpha: float = PAPER.alpha,
                          mask: Optional[torch.Tensor] = None,
                          plain: Optional[torch.Tensor] = None, text_start: int = 0,
                          chunk_bytes: Optional[int] = None,
                          retrieval_correction: Optional[Callable] = None) -> torch.Tensor:
    """Text-mode GAG on a joint attention whose positions [text_start, text_start + T) are
    text (T = ``text_tokens``; text_start 0: text first, L − T: text last).

    q (B, H, Lq, D), k, v (B, H, L ≥ Lq, ·) with the keys in the queries' joint order, then any
    extra keys (module docstring); returns (B, H, Lq, Dv) in q's dtype. Text rows equal the
    plain attention output; every other row (an image-stream query) gets the guided text
    retrieval (module docstring), its mass w taken over all keys, extra ones included.

    plain: the plain attention output (B, H, L, Dv) if the caller already has it (for example
    from another attention backend); its text rows are returned unchanged, bit for bit, and w
    costs one extra score pass over the image queries. Without it, the plain output and w come
    from one SDPA call.

    retrieval_correction: what GAG adds to the text retrieval, as a function (q_img, k_txt,
    v_txt, mask) → (B, H, Li, Dv) in the compute dtype, applied before the weighting by w;
    default ``gag_correction`` with scale, eta, zeta, alpha (target-gain mode passes its own).
    """
    scale, eta, zeta = check_guidance_params(scale, eta, zeta)
    alpha = check_alpha(alpha)
    _check_joint(q, k, v)
    _check_extra_keys(q, k)
    length, queries = k.shape[2], q.shape[2]
    text_tokens = check_text_tokens(text_tokens, queries, text_start)
    expected = q.shape[:3] + v.shape[-1:]
    if plain is not None and tuple(plain.shape) != tuple(expected):
        raise ValueError(f"plain must have shape {tuple(expected)} (B, H, L, Dv); got "
                         f"{tuple(plain.shape)}")
    if text_tokens in (0, queries):  # no text keys, or no image queries: nothing to guide
        if plain is not None:
            return plain.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_sdpa_mask(mask, q, k)).to(q.dtype)
    text = slice(text_start, text_start + text_tokens)
    rows = _image_rows(queries, text_start, text_tokens)
    if torch.is_tensor(rows):
        rows = rows.to(q.device)
    full_mask = normalize_mask(mask, q.shape[0], q.shape[1], queries, length)
    img_mask = _slice_mask(full_mask, rows=rows)
    q_img = q[:, :, rows]
    if plain is None:
        plain, mass = joint_attention_with_text_mass(q, k, v, text_tokens, full_mask,
                                                     text_start=text_start)
        mass = mass[:, :, rows]
    else:
        mass = text_key_mass(q_img, k, text_tokens, img_mask, text_start=text_start)
    txt_mask = _slice_mask(img_mask, cols=text)
    if retrieval_correction is None:
        correction = text_retrieval_correction(
            q_img, k[:, :, text], v[:, :, text], mass, scale=scale, eta=eta,
            zeta=zeta, alpha=alpha, mask=txt_mask, chunk_bytes=chunk_bytes)
    else:
        correction = retrieval_correction(q_img, k[:, :, text], v[:, :, text], txt_mask)
        correction = mass.to(correction.dtype) * correction
    guided_img = (plain[:, :, rows].to(correction.dtype) + correction).to(q.dtype)
    out = plain.to(q.dtype, copy=True)
    out[:, :, rows] = guided_img
    return out
