"""Scores → dense and sparse retrievals → GAG output, in bounded memory.

This is the exact PyTorch path: the reference every faster backend is tested against, and the
path used wherever no faster backend applies (CPU, MPS, unusual shapes). It has two policies
(``gpu_policy.torch_policy``, environment variable GAG_TORCH_POLICY=auto|gpu|cpu): the CPU
policy below (Newton until converged, row compaction, cache-sized chunks) and, on every other
device, the GPU policy of gag_core.gpu_policy (no host synchronisation, half-precision matmuls,
a fixed threshold schedule, device-sized chunks). Both meet the same float64-reference
tolerances.

Layout everywhere: q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv), as torch's
scaled_dot_product_attention takes them.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .defaults import PAPER
from .rule import check_alpha, check_guidance_params, combine_checked
from .kernels import select_backend
from .sparse import alpha_entmax, compute_dtype, entmax_from_scores_
from . import gpu_policy

__all__ = ["gag_attention", "gag_correction", "dense_sparse_attention", "attention_scores",
           "normalize_mask", "DEFAULT_CHUNK_BYTES"]

# Working memory for one query chunk of the PyTorch path. Each score element costs about
# 8 compute-dtype values at peak (scores, the two maps, the sort buffers and their indices), so
# 256 MiB holds ~8M scores: for FLUX's joint attention at 1024² (24 heads × 4608 keys) that is
# 72 queries per chunk. Override per call with ``chunk_bytes``.
DEFAULT_CHUNK_BYTES = 256 * 2**20
_BYTES_PER_SCORE = 8 * 4
# On CPU a chunk is further capped to about this many scores (16 MiB of float32), so that the
# score tile and its work buffer stay in the last-level cache through the 20–30 passes the
# sparse branch makes over them; larger chunks run those passes at main-memory speed.
_CPU_CHUNK_SCORES = 2**22


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, L, D); got rank {t.dim()} "
                             f"shape {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head dim D; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k and v must agree on (B, H, Lk); got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2]:
        raise ValueError(f"q and k must agree on (B, H); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")
    if k.shape[2] == 0:
        # Attention over no keys has no distribution to normalise; say so instead of failing
        # inside a reduction.
        raise ValueError(f"k and v must hold at least one key (Lk ≥ 1); got k {tuple(k.shape)}")


def normalize_mask(mask: Optional[torch.Tensor], batch: int, heads: int, lq: int,
                   lk: int) -> Optional[torch.Tensor]:
    """Bring a mask to rank 4, broadcastable to (B, H, Lq, Lk).

    Accepts what ComfyUI passes to attention: an additive float mask or a boolean keep-mask
    (True = attend), of rank 2 (Lq, Lk), rank 3 (B, Lq, Lk) — the head axis is inserted, as
    ComfyUI does — or rank 4.
    """
    if mask is None:
        return None
    given_shape = tuple(mask.shape)
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3:
        mask = mask[:, None]
    elif mask.dim() != 4:
        raise ValueError(f"mask must have rank 2, 3 or 4; got shape {tuple(mask.shape)}")
    try:
        torch.broadcast_shapes(mask.shape, (batch, heads, lq, lk))
    except RuntimeError:
        read_as = "" if mask.dim() == len(given_shape) else f", read as {tuple(mask.shape)},"
        raise ValueError(f"mask of shape {given_shape}{read_as} does not broadcast to "
                         f"(B, H, Lq, Lk) = {(batch, heads, lq, lk)}") from None
    return mask


def attention_scores(q: torch.Tensor, k: torch.Tensor, mask: Optional[torch.Tensor] = None,
                     softmax_scale: Optional[float] = None) -> torch.Tensor:
    """S = q kᵀ · scale (+ mask) in the compute dtype: (B, H, Lq, D), (B, H, Lk, D) → (B, H, Lq, Lk).

    A boolean mask sets dropped entries to −inf; a float mask is added.
    """
    dtype = compute_dtype(q.dtype)
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    # Scaling q (Lq·D values) instead of the scores (Lq·Lk) saves a pass over the scores.
    scores = torch.matmul(q.to(dtype) * softmax_scale, k.to(dtype).transpose(-1, -2))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, float("-inf"))
        else:
            scores.add_(mask.to(dtype))
    return scores


def _query_chunk(batch: int, heads: int, lq: int, lk: int, chunk_bytes: int,
                 on_cpu: bool = False) -> int:
    per_query = max(batch * heads * lk, 1)
    step = chunk_bytes // (per_query * _BYTES_PER_SCORE)
    if on_cpu:
        step = min(step, _CPU_CHUNK_SCORES // per_query)
    return max(1, min(lq, step))


def _chunked(q, k, v, mask, chunk_bytes, fn, policy="cpu"):
    """Run fn(q_chunk, mask_chunk) over query chunks and collect the results in a list.

    chunk_bytes None means the policy's default: DEFAULT_CHUNK_BYTES (and the cache cap) on the
    CPU policy, an eighth of the device's memory on the GPU policy."""
    batch, heads, lq, _ = q.shape
    if policy == "gpu":
        budget = gpu_policy.device_chunk_bytes(q.device) if chunk_bytes is None else chunk_bytes
        step = gpu_policy.query_chunk(batch, heads, lq, k.shape[2], q.dtype, budget)
    else:
        budget = DEFAULT_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        step = _query_chunk(batch, heads, lq, k.shape[2], budget, on_cpu=q.device.type == "cpu")
    outs = []
    # max(lq, 1): an empty query axis still runs once, on an empty chunk, so the result keeps
    # its (B, H, 0, Dv) shape instead of torch.cat failing on an empty list.
    for start in range(0, max(lq, 1), step):
        stop = min(start + step, lq)
        mask_chunk = None
        if mask is not None:
            mask_chunk = mask[:, :, start:stop] if mask.shape[2] != 1 else mask
        outs.append(fn(q[:, :, start:stop], mask_chunk))
    return outs


def _policy(q: torch.Tensor) -> str:
    """'gpu' or 'cpu' for this call; torch.compile keeps the CPU policy's traced forms."""
    if torch.compiler.is_compiling():
        return "cpu"
    return gpu_policy.torch_policy(q.device)


def _cat(outs: list) -> torch.Tensor:
    # One chunk (the usual case on the GPU policy) needs no copy.
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def _retrievals(q_chunk: torch.Tensor, k: torch.Tensor, v_c: torch.Tensor,
                mask_chunk: Optional[torch.Tensor], alpha: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense and sparse retrievals of one query chunk from one score matrix: (B, H, c, Dv) each.

    Passes over the (B, H, c, Lk) scores, eager α ∈ {1.5, 2}: the q·kᵀ product (with the mask),
    the row maximum, softmax (one op, about three passes inside) and its P·V; then in place on
    the scores: subtract the maximum, the Newton threshold (a 10-pass start for α = 1.5, then 4
    passes per step over the rows still pending: 20–26 in all on random rows), 4 to form the
    entmax weights, and their P·V. Other α use the bisection map (two passes per halving);
    under torch.compile the sort-based maps keep the traced graph free of data-dependent loops.
    """
    scores = attention_scores(q_chunk, k, mask_chunk)
    row_max = scores.amax(dim=-1, keepdim=True)
    dense = torch.matmul(torch.softmax(scores, dim=-1), v_c)
    # Softmax of an all −inf row is NaN; such a query attends to nothing and retrieves zeros.
    dense = dense.masked_fill_(row_max == float("-inf"), 0.0)
    if alpha in (1.5, 2.0) and not torch.compiler.is_compiling():
        sparse_probs = entmax_from_scores_(scores, row_max, alpha)
    else:
        sparse_probs = alpha_entmax(scores, alpha)
    return dense, torch.matmul(sparse_probs, v_c)


def _prepare(q, k, v, mask, alpha):
    """Validate once per call: α, the shapes, the mask; returns (α, rank-4 mask)."""
    alpha = check_alpha(alpha)
    _check_qkv(q, k, v)
    return alpha, normalize_mask(mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2])


def dense_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                           alpha: float = PAPER.alpha, mask: Optional[torch.Tensor] = None,
                           chunk_bytes: Optional[int] = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense (softmax) and sparse (α-entmax) retrievals from the same scores.

    q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv) → two tensors (B, H, Lq, Dv) in the
    compute dtype (float32; float64 for float64 inputs). Queries are processed in chunks so the
    working memory stays under ``chunk_bytes`` (at least one query row at a time).
    """
    alpha, mask = _prepare(q, k, v, mask, alpha)
    if _policy(q) == "gpu":
        pairs = _chunked(q, k, v, mask, chunk_bytes,
                         lambda q_chunk, mask_chunk: gpu_policy.gpu_dense_sparse(
                             q_chunk, k, v, mask_chunk, alpha), policy="gpu")
    else:
        v_c = v.to(compute_dtype(q.dtype))
        pairs = _chunked(q, k, v, mask, chunk_bytes,
                         lambda q_chunk, mask_chunk: _retrievals(q_chunk, k, v_c, mask_chunk,
                                                                 alpha))
    return _cat([p[0] for p in pairs]), _cat([p[1] for p in pairs])


def _torch_path(q, k, v, **params):
    """The PyTorch path alone: what the fused kernel's self-check compares it with."""
    return gag_attention(q, k, v, backend="torch", **params)


def _fused_kernel(q, k, v, mask, alpha, backend: str):
    """The fused kernel that takes this call under ``backend`` ("auto", "torch", "fused"; see
    ``gag_attention``), or None for the PyTorch path. Raises ValueError for an unknown backend
    and for "fused" where no kernel accepts the inputs."""
    if backend not in ("auto", "torch", "fused"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'fused'; got {backend!r}")
    if backend == "torch":
        return None
    fused = select_backend(q, k, v, mask, alpha, _torch_path)
    if fused is None and backend == "fused":
        raise ValueError(f"backend='fused' was requested but no fused kernel accepts these "
                         f"inputs (device {q.device}, dtype {q.dtype}, q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}); use backend='auto' or 'torch'")
    return fused


def gag_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                  scale: float = PAPER.scale, eta: float = PAPER.eta, zeta: float = PAPER.zeta,
                  alpha: float = PAPER.alpha, mask: Optional[torch.Tensor] = None,
                  chunk_bytes: Optional[int] = None, backend: str = "auto") -> torch.Tensor:
    """Geometry-Aware Attention Guidance for one attention call.

    q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv) → (B, H, Lq, Dv) in q's dtype and device.

    scale is λ, eta is η, zeta is ζ (see ``gag_combine``), alpha is the entmax α of the sparse
    branch. mask: additive float mask or boolean keep-mask, broadcastable to (B, H, Lq, Lk)
    (rank 2 and 3 masks are read as ComfyUI reads them; see ``normalize_mask``).
    The maps and the rule compute in float32 for half-precision inputs (on the GPU policy the
    q·kᵀ and P·V matmuls take the half-precision operands with float32 accumulation), in query
    chunks bounded by ``chunk_bytes`` of working memory (None: the policy's default, see
    ``_chunked``).

    backend: "auto" uses the fused GPU kernel where one accepts the inputs and its self-check
    on this device kept it (see ``gag_core.kernels``), and this PyTorch path otherwise;
    "torch" forces this path; "fused" requires the kernel and raises ValueError where none
    applies. The PyTorch path's policy (GPU or CPU) follows GAG_TORCH_POLICY
    (``gpu_policy.torch_policy``).
    """
    scale, eta, zeta = check_guidance_params(scale, eta, zeta)
    alpha, mask = _prepare(q, k, v, mask, alpha)
    fused = _fused_kernel(q, k, v, mask, alpha, backend)
    if fused is not None:
        return fused(q, k, v, scale=scale, eta=eta, zeta=zeta, alpha=alpha, mask=mask)
    if _policy(q) == "gpu":
        return _cat(_chunked(q, k, v, mask, chunk_bytes,
                             lambda q_chunk, mask_chunk: gpu_policy.gpu_gag(
                                 q_chunk, k, v, mask_chunk, alpha, scale, eta, zeta, q.dtype),
                             policy="gpu"))
    v_c = v.to(compute_dtype(q.dtype))

    def guided(q_chunk, mask_chunk):
        dense, sparse = _retrievals(q_chunk, k, v_c, mask_chunk, alpha)
        return combine_checked(dense, sparse, scale, eta, zeta).to(q.dtype)

    return _cat(_chunked(q, k, v, mask, chunk_bytes, guided))


def gag_correction(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                   scale: float = PAPER.scale, eta: float = PAPER.eta, zeta: float = PAPER.zeta,
                   alpha: float = PAPER.alpha, mask: Optional[torch.Tensor] = None,
                   chunk_bytes: Optional[int] = None, backend: str = "auto") -> torch.Tensor:
    """What GAG adds to plain attention: the GAG output minus the dense (softmax) output.

    q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv) → (B, H, Lq, Dv) in the compute dtype
    (float32; float64 for float64 inputs); arguments as for ``gag_attention``.
    Added to another backend's or patch's softmax attention it gives GAG's output while keeping
    whatever that patch adds on top of softmax attention.

    backend as for ``gag_attention``: where the fused kernel takes the call ("auto" after its
    self-check, or GAG_BACKEND=fused), the correction is the kernel's output minus
    scaled_dot_product_attention's, both in the input dtype (each within the input dtype's
    rounding of the exact outputs, which is the precision the correction is added at).
    """
    scale, eta, zeta = check_guidance_params(scale, eta, zeta)
    alpha, mask = _prepare(q, k, v, mask, alpha)
    fused = _fused_kernel(q, k, v, mask, alpha, backend)
    if fused is not None:
        guided = fused(q, k, v, scale=scale, eta=eta, zeta=zeta, alpha=alpha, mask=mask)
        dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if mask is not None:
            # A fully masked query: the kernel returns zeros, SDPA NaN; its correction is 0.
            dense = dense.nan_to_num(nan=0.0)
        return guided.to(compute_dtype(q.dtype)).sub_(dense)
    if _policy(q) == "gpu":
        return _cat(_chunked(q, k, v, mask, chunk_bytes,
                             lambda q_chunk, mask_chunk: gpu_policy.gpu_correction(
                                 q_chunk, k, v, mask_chunk, alpha, scale, eta, zeta),
                             policy="gpu"))
    v_c = v.to(compute_dtype(q.dtype))

    def correction(q_chunk, mask_chunk):
        dense, sparse = _retrievals(q_chunk, k, v_c, mask_chunk, alpha)
        return combine_checked(dense, sparse, scale, eta, zeta).sub_(dense)

    return _cat(_chunked(q, k, v, mask, chunk_bytes, correction))
