"""Fused GAG attention in Triton: dense softmax output, sparse α-entmax output and the GAG
combination in one kernel, without writing the (B, H, Lq, Lk) score matrix to memory.

This module imports triton at import time; gag_core.kernels imports it only when a fused call is
possible, so gag_core itself never needs triton.

Two kernels share the same helpers:

* ``_gag_short_kernel`` (Lk ≤ SHORT_MAX_KEYS, e.g. SDXL cross-attention with 77–231 text keys):
  one program holds a tile of queries and the whole key row in registers, computes the scores
  once, and finds τ by iterating on those registers.
* ``_gag_stream_kernel`` (longer rows, e.g. FLUX joint attention with 4608 keys): a persistent
  program loops over query tiles; per tile
    pass 1  streams K/V once: online softmax and the dense P·V (as a flash kernel does), and
            appends every score that can still be in the entmax support — within 1/(α−1) of the
            running row maximum — to a small per-row list in a scratch buffer;
    τ       is solved on those lists (a few hundred values per row instead of Lk), or, for a
            tile where some row's list overflowed, by passes that recompute the scores;
    pass 2  streams K/V again for the sparse P·V, then combines and stores.

The τ solver (``_tau_stats`` + ``_tau_step``) runs Newton's method from the left on the
convex, decreasing f(τ) = Σ [z − τ]_+^{1/(α−1)} − 1, starting at τ = −1 (a lower bound for the
shifted, clamped scores z ∈ [−1, 0] that gag_core.sparse defines). From the left, Newton never
passes the root. For α = 1.5 and α = 2, f is a quadratic (linear) polynomial between
consecutive scores, so each step also tries the exact root of the current piece: it is the
answer when it lies before the smallest score still above τ, and otherwise the step jumps at
least to that score. This ends in the same τ as the sort-based formulas in gag_core.sparse, in
a handful of steps.

Both kernels compute in float32 whatever the input dtype; P is rounded to V's dtype for the
tensor-core P·V products, as flash attention does. The sparse output is divided by Σp, which is 1
up to rounding for α = 1.5 and 2 and absorbs the residual of the Newton stop for other α
(gag_core.sparse.entmax_bisect renormalises the same way).
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import triton
import triton.language as tl

from .config import (MAX_HEAD_DIM, SHORT_MAX_KEYS, SUPPORTED_DTYPES, KernelConfig,
                     device_shared_memory, kernel_config)

__all__ = ["fused_gag_attention", "kernel_config", "KernelConfig", "SHORT_MAX_KEYS",
           "SUPPORTED_DTYPES", "MAX_HEAD_DIM"]

# Iteration cap for τ; α = 1.5 and 2 stop exactly after a few steps, other α near 1 need more.
_MAX_TAU_ITERS = 64
# Newton steps that raise a candidate list's lower bound on τ before the list is compacted.
_BOUND_ITERS = tl.constexpr(4)

# Module-level constants used inside kernels must be tl.constexpr.
# A Newton stop: steps below this change τ by less than float32 resolution near |τ| ~ 1.
_TAU_STEP_TOL = tl.constexpr(1e-7)
# Floor for divisors and for log2 arguments: a zero slope or a zero gap x stays finite (the
# results are discarded by the surrounding tl.where); small enough never to bias a real value.
_DIV_FLOOR = tl.constexpr(1e-30)
# The candidate band is cut at a lower bound on τ minus this margin (shifted-score units), so
# rounding in the bound can never drop an entry of the support.
_BOUND_MARGIN = tl.constexpr(1e-5)
_LOG2E = tl.constexpr(1.4426950408889634)
_F32_TINY = tl.constexpr(1.1754943508222875e-38)  # torch.finfo(torch.float32).tiny
_ALPHA_GENERAL, _ALPHA_15, _ALPHA_2 = 0, 1, 2
_MASK_NONE, _MASK_KEEP, _MASK_ADD = 0, 1, 2


# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------

@triton.jit
def _mma(a, b, DOT_PREC: tl.constexpr, DOT_UPCAST: tl.constexpr):
    """a @ b accumulated in float32. DOT_UPCAST widens the operands first: only for Triton's CPU
    interpreter, whose dot multiplies bfloat16 bit patterns as integers. bf16 products are exact
    in float32, so the result matches a bf16 tensor-core product up to summation order."""
    if DOT_UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=DOT_PREC)


@triton.jit
def _score_tile(q, k_base, stride_kn, stride_kd, mask_rows, stride_mn,
                offs_m, offs_n, offs_d, Lq, Lk, D, sm_scale,
                MASK_KIND: tl.constexpr, DOT_PREC: tl.constexpr, DOT_UPCAST: tl.constexpr):
    """(BLOCK_M, BLOCK_N) float32 scores q·kᵀ·scale (+ mask); dropped, padded keys: −inf."""
    key_ok = offs_n[None, :] < Lk
    k = tl.load(k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                mask=key_ok & (offs_d[:, None] < D), other=0.0)
    s = _mma(q, k, DOT_PREC, DOT_UPCAST) * sm_scale
    keep = key_ok & (offs_m[:, None] >= 0)
    if MASK_KIND != 0:
        in_range = (offs_m[:, None] < Lq) & key_ok
        # mask_rows holds one 64-bit pointer per query row (a full-size mask can pass 2³¹
        # elements); the per-key offsets stay 32-bit, which keeps register use down.
        m_ptrs = mask_rows[:, None] + offs_n[None, :] * stride_mn
        if MASK_KIND == 1:
            keep = keep & (tl.load(m_ptrs, mask=in_range, other=0) != 0)
        else:
            s = s + tl.load(m_ptrs, mask=in_range, other=0.0).to(tl.float32)
    return tl.where(keep, s, float("-inf"))


@triton.jit
def _shift_scores(s, row_max_safe, alpha_m1):
    """z = (α−1)(s − max) clamped to [−1, 0] as in gag_core.sparse; −inf becomes −1."""
    z = alpha_m1 * (s - row_max_safe[:, None])
    return tl.minimum(tl.maximum(z, -1.0), 0.0)


@triton.jit
def _tau_stats(z, tau, p_exp, ALPHA_KIND: tl.constexpr):
    """Per-row sums over x = z − τ > 0 that one τ step needs.

    α = 1.5: (count, Σx, Σx², min x); α = 2: (count, Σx, 0, min x);
    other α: (Σx^p, Σx^(p−1), 0, 0) with p = 1/(α−1).
    """
    x = z - tau[:, None]
    above = x > 0.0
    if ALPHA_KIND == 0:
        xp = tl.where(above, tl.exp2(p_exp * tl.log2(tl.maximum(x, _DIV_FLOOR))), 0.0)
        s0 = tl.sum(xp, axis=1)
        s1 = tl.sum(tl.where(above, xp / tl.maximum(x, _DIV_FLOOR), 0.0), axis=1)
        s2 = tl.zeros_like(s0)
        s3 = tl.zeros_like(s0)
    else:
        xa = tl.where(above, x, 0.0)
        s0 = tl.sum(above.to(tl.float32), axis=1)
        s1 = tl.sum(xa, axis=1)
        if ALPHA_KIND == 1:
            s2 = tl.sum(xa * xa, axis=1)
        else:
            s2 = tl.zeros_like(s0)
        s3 = tl.min(tl.where(above, x, float("inf")), axis=1)
    return s0, s1, s2, s3


@triton.jit
def _tau_step(tau, done, s0, s1, s2, s3, p_exp, ALPHA_KIND: tl.constexpr):
    """One safeguarded step from a lower bound τ of the root of f; returns (τ', done').

    Every step size below is ≤ τ* − τ, so τ stays a lower bound and rows never overshoot.
    """
    if ALPHA_KIND == 1:
        count, sum_x, sum_x2, smallest = s0, s1, s2, s3
        f = sum_x2 - 1.0
        # On [τ, τ + smallest] f is the quadratic count·δ² − 2·sum_x·δ + f(τ); its smaller
        # root, in the rationalised form that avoids cancellation.
        disc = sum_x * sum_x - count * f
        piece_root = f / (sum_x + tl.sqrt(tl.maximum(disc, 0.0)))
        exact = (disc >= 0.0) & (piece_root <= smallest)
        # Otherwise τ* lies beyond τ + smallest: one Newton step from there, where f and its
        # right derivative follow from the same sums (the dropped score contributes 0).
        f_at = f - 2.0 * sum_x * smallest + count * smallest * smallest
        slope_at = 2.0 * (sum_x - count * smallest)
        jump = tl.where(slope_at > 0.0, smallest + f_at / tl.maximum(slope_at, _DIV_FLOOR),
                        smallest)
        newton = f / tl.maximum(2.0 * sum_x, _DIV_FLOOR)
        step = tl.where(exact, piece_root, tl.maximum(jump, newton))
    elif ALPHA_KIND == 2:
        count, sum_x, smallest = s0, s1, s3
        f = sum_x - 1.0
        piece_root = f / tl.maximum(count, 1.0)
        exact = piece_root <= smallest
        jump = smallest + (sum_x - count * smallest - 1.0) / tl.maximum(count - 1.0, 1.0)
        step = tl.where(exact, piece_root, tl.maximum(smallest, jump))
    else:
        f = s0 - 1.0
        step = f / tl.maximum(p_exp * s1, _DIV_FLOOR)
        exact = f <= 0.0
    settled = exact | (f <= 0.0) | (step < _TAU_STEP_TOL)
    tau = tl.where(done | (f <= 0.0), tau, tau + step)
    return tau, done | settled


@triton.jit
def _merge_stats(a0, a1, a2, a3, b0, b1, b2, b3):
    """Combine _tau_stats of two disjoint parts of the same rows."""
    return a0 + b0, a1 + b1, a2 + b2, tl.minimum(a3, b3)


@triton.jit
def _list_tau_stats(list_rows, n_list, longest, safe_max, tau, alpha_m1, p_exp,
                    BLOCK_M: tl.constexpr, LIST_BLOCK: tl.constexpr, ALPHA_KIND: tl.constexpr):
    """_tau_stats over each row's candidate list (the first n_list slots of its scratch row)."""
    offs_l = tl.arange(0, LIST_BLOCK)
    s0 = tl.zeros((BLOCK_M,), tl.float32)
    s1 = tl.zeros((BLOCK_M,), tl.float32)
    s2 = tl.zeros((BLOCK_M,), tl.float32)
    s3 = tl.full((BLOCK_M,), float("inf"), tl.float32)
    for start_l in range(0, longest, LIST_BLOCK):
        cols = start_l + offs_l
        sl = tl.load(list_rows[:, None] + cols[None, :],
                     mask=cols[None, :] < n_list[:, None], other=float("-inf"))
        t0, t1, t2, t3 = _tau_stats(_shift_scores(sl, safe_max, alpha_m1), tau, p_exp, ALPHA_KIND)
        s0, s1, s2, s3 = _merge_stats(s0, s1, s2, s3, t0, t1, t2, t3)
    return s0, s1, s2, s3


@triton.jit
def _sparse_probs(z, tau, p_exp, ALPHA_KIND: tl.constexpr):
    """[z − τ]_+^{1/(α−1)}."""
    x = tl.maximum(z - tau[:, None], 0.0)
    if ALPHA_KIND == 1:
        return x * x
    elif ALPHA_KIND == 2:
        return x
    else:
        return tl.where(x > 0.0, tl.exp2(p_exp * tl.log2(tl.maximum(x, _DIV_FLOOR))), 0.0)


@triton.jit
def _gag_combine(o_d, o_s, lam, eta, zeta):
    """gag_core.rule.gag_combine on (BLOCK_M, Dv) float32 tiles (padded columns are zero)."""
    tiny = _F32_TINY
    delta = o_s - o_d
    sparse_norm = tl.sqrt(tl.sum(o_s * o_s, axis=1))
    direction = o_s / tl.maximum(sparse_norm, tiny)[:, None]
    direction = tl.where(sparse_norm[:, None] > 0.0, direction, 0.0)
    parallel = tl.sum(delta * direction, axis=1)[:, None] * direction
    guidance = parallel + zeta * (delta - parallel)
    g_norm = tl.sqrt(tl.sum(guidance * guidance, axis=1))
    # η = inf passes as an IEEE infinity: the comparison is then never true.
    cap = tl.where(g_norm > eta, eta / tl.maximum(g_norm, tiny), 1.0)
    return o_s + (lam * cap)[:, None] * guidance


# ----------------------------------------------------------------------------------------------
# Short rows: everything in registers
# ----------------------------------------------------------------------------------------------

@triton.jit
def _gag_short_kernel(
        Q, K, V, Out, Mask,
        stride_qb, stride_qh, stride_qm, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd,
        stride_ob, stride_oh, stride_om, stride_od,
        stride_mb, stride_mh, stride_mm, stride_mn,
        H, Lq, Lk, D, Dv,
        sm_scale, alpha_m1, p_exp, lam, eta, zeta,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        BLOCK_DV: tl.constexpr, MASK_KIND: tl.constexpr, ALPHA_KIND: tl.constexpr,
        DOT_PREC: tl.constexpr, DOT_UPCAST: tl.constexpr, MAX_ITERS: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < Lq

    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm
                + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    mask_rows = Mask + b * stride_mb + h * stride_mh + offs_m.to(tl.int64) * stride_mm
    s = _score_tile(q, K + b * stride_kb + h * stride_kh, stride_kn, stride_kd, mask_rows,
                    stride_mn, offs_m, offs_n, offs_d, Lq, Lk, D, sm_scale, MASK_KIND, DOT_PREC,
                    DOT_UPCAST)
    v_ptrs = (V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn
              + offs_dv[None, :] * stride_vd)
    v_ok = (offs_n[:, None] < Lk) & (offs_dv[None, :] < Dv)

    row_max = tl.max(s, axis=1)
    # A fully masked row has max −inf; shifting by 0 keeps it all −inf (a zero output).
    row_max = tl.where(row_max == float("-inf"), 0.0, row_max)

    p_dense = tl.exp2((s - row_max[:, None]) * _LOG2E)
    l_dense = tl.sum(p_dense, axis=1)
    v = tl.load(v_ptrs, mask=v_ok, other=0.0)
    o_dense = _mma(p_dense.to(v.dtype), v, DOT_PREC, DOT_UPCAST)
    o_dense = o_dense / tl.where(l_dense > 0.0, l_dense, 1.0)[:, None]

    z = _shift_scores(s, row_max, alpha_m1)
    tau = tl.full((BLOCK_M,), -1.0, tl.float32)
    done = offs_m >= Lq
    pending = tl.sum((done == 0).to(tl.int32), axis=0)
    it = 0
    while (pending > 0) & (it < MAX_ITERS):
        s0, s1, s2, s3 = _tau_stats(z, tau, p_exp, ALPHA_KIND)
        tau, done = _tau_step(tau, done, s0, s1, s2, s3, p_exp, ALPHA_KIND)
        pending = tl.sum((done == 0).to(tl.int32), axis=0)
        it += 1

    p_sparse = _sparse_probs(z, tau, p_exp, ALPHA_KIND)
    l_sparse = tl.sum(p_sparse, axis=1)
    # Loading V again (an L1/L2 hit) instead of keeping it live through the τ loop frees the
    # registers that loop needs.
    v = tl.load(v_ptrs, mask=v_ok, other=0.0)
    o_sparse = _mma(p_sparse.to(v.dtype), v, DOT_PREC, DOT_UPCAST)
    o_sparse = o_sparse / tl.where(l_sparse > 0.0, l_sparse, 1.0)[:, None]

    out = _gag_combine(o_dense, o_sparse, lam, eta, zeta)
    tl.store(Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om
             + offs_dv[None, :] * stride_od, out.to(Out.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dv[None, :] < Dv))


# ----------------------------------------------------------------------------------------------
# Long rows: streaming over key blocks, persistent programs
# ----------------------------------------------------------------------------------------------

@triton.jit
def _gag_stream_kernel(
        Q, K, V, Out, Mask, Scratch, TileStats,
        stride_qb, stride_qh, stride_qm, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd,
        stride_ob, stride_oh, stride_om, stride_od,
        stride_mb, stride_mh, stride_mm, stride_mn,
        H, Lq, Lk, D, Dv, n_tiles, list_cap,
        sm_scale, alpha_m1, p_exp, lam, eta, zeta,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        BLOCK_DV: tl.constexpr, LIST_BLOCK: tl.constexpr,
        MASK_KIND: tl.constexpr, ALPHA_KIND: tl.constexpr, DOT_PREC: tl.constexpr,
        DOT_UPCAST: tl.constexpr, MAX_ITERS: tl.constexpr):
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    m_tiles = tl.cdiv(Lq, BLOCK_M)
    offs_r = tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_l = tl.arange(0, LIST_BLOCK)
    # This program's candidate lists: BLOCK_M rows × list_cap float32, reused tile after tile.
    list_rows = Scratch + pid.to(tl.int64) * (BLOCK_M * list_cap) + offs_r * list_cap

    for tile in range(pid, n_tiles, n_programs):
        # Consecutive tiles share a head, so K and V stay in L2 across the programs on it.
        pid_bh = tile // m_tiles
        b = (pid_bh // H).to(tl.int64)
        h = (pid_bh % H).to(tl.int64)
        offs_m = (tile % m_tiles) * BLOCK_M + offs_r
        row_ok = offs_m < Lq
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        mask_rows = Mask + b * stride_mb + h * stride_mh + offs_m.to(tl.int64) * stride_mm
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm
                    + offs_d[None, :] * stride_qd,
                    mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)

        # Pass 1: online softmax + dense P·V; collect the scores that may be in the support.
        row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_dense = tl.zeros((BLOCK_M,), tl.float32)
        acc_dense = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)
        list_len = tl.zeros((BLOCK_M,), tl.int32)
        # A lower bound on τ in absolute units, (α−1)·score: τ only rises as scores are added,
        # so τ of the scores listed so far (or any Newton iterate towards it) bounds the final τ
        # from below, and no score at or below the bound can be in the support.
        bound = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        compact_at = list_cap // 2
        for start_n in range(0, Lk, BLOCK_N):
            offs_n = start_n + offs_n0
            s = _score_tile(q, k_base, stride_kn, stride_kd, mask_rows, stride_mn, offs_m,
                            offs_n, offs_d, Lq, Lk, D, sm_scale, MASK_KIND, DOT_PREC, DOT_UPCAST)
            new_max = tl.maximum(row_max, tl.max(s, axis=1))
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
            rescale = tl.exp2((row_max - safe_max) * _LOG2E)
            p = tl.exp2((s - safe_max[:, None]) * _LOG2E)
            l_dense = l_dense * rescale + tl.sum(p, axis=1)
            v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                        mask=(offs_n[:, None] < Lk) & (offs_dv[None, :] < Dv), other=0.0)
            acc_dense = (acc_dense * rescale[:, None]
                         + _mma(p.to(v.dtype), v, DOT_PREC, DOT_UPCAST))
            row_max = new_max
            # The running max only grows, so "within 1/(α−1) of the running max" keeps a
            # superset of the final candidates (z > −1 for the final max); the test uses the
            # same float32 operations as _shift_scores, so rounding cannot drop a candidate.
            # Padded query rows (past Lq) list nothing: their q = 0 would make every key a
            # candidate and overflow the tile's lists.
            z = alpha_m1 * (s - safe_max[:, None])
            floor = bound - alpha_m1 * safe_max - _BOUND_MARGIN
            cand = (z > -1.0) & (z > floor[:, None]) & row_ok[:, None]
            slot = list_len[:, None] + tl.cumsum(cand.to(tl.int32), axis=1) - 1
            tl.store(list_rows[:, None] + slot, s, mask=cand & (slot < list_cap))
            list_len += tl.sum(cand.to(tl.int32), axis=1)
            longest = tl.max(list_len, axis=0)
            if (longest > compact_at) & (longest <= list_cap):
                # Half a list is full: raise the bound with a few τ steps on the lists (flat
                # rows hold 10–50× more band entries than support entries), then drop what
                # lies at or below it. Compaction moves entries only to lower slots, block by
                # block, so no entry is overwritten before it is read.
                tl.debug_barrier()
                tau = tl.maximum(floor, -1.0)
                done = list_len == 0
                for _ in range(_BOUND_ITERS):
                    s0, s1, s2, s3 = _list_tau_stats(list_rows, list_len, longest, safe_max,
                                                     tau, alpha_m1, p_exp, BLOCK_M, LIST_BLOCK,
                                                     ALPHA_KIND)
                    tau, done = _tau_step(tau, done, s0, s1, s2, s3, p_exp, ALPHA_KIND)
                bound = tl.maximum(bound, tau + alpha_m1 * safe_max)
                floor = bound - alpha_m1 * safe_max - _BOUND_MARGIN
                kept = tl.zeros((BLOCK_M,), tl.int32)
                for start_l in range(0, longest, LIST_BLOCK):
                    cols = start_l + offs_l
                    sl = tl.load(list_rows[:, None] + cols[None, :],
                                 mask=cols[None, :] < list_len[:, None], other=float("-inf"))
                    z_list = _shift_scores(sl, safe_max, alpha_m1)
                    # Slots past a row's list and stale entries (now at the clamp floor −1)
                    # go too.
                    keep = ((cols[None, :] < list_len[:, None]) & (z_list > -1.0)
                            & (z_list > floor[:, None]))
                    new_slot = kept[:, None] + tl.cumsum(keep.to(tl.int32), axis=1) - 1
                    tl.debug_barrier()
                    tl.store(list_rows[:, None] + new_slot, sl, mask=keep)
                    kept += tl.sum(keep.to(tl.int32), axis=1)
                tl.debug_barrier()
                list_len = kept
                compact_at = (list_cap + tl.max(kept, axis=0)) // 2
        safe_max = tl.where(row_max == float("-inf"), 0.0, row_max)
        o_dense = acc_dense / tl.where(l_dense > 0.0, l_dense, 1.0)[:, None]
        # The list loads below may read what other threads of this program stored.
        tl.debug_barrier()

        # τ: on the lists when every row's list fits, else by recomputing the scores. Both
        # start from the bound found in pass 1.
        fits = tl.max(list_len, axis=0) <= list_cap
        n_list = tl.minimum(list_len, list_cap)
        longest = tl.max(n_list, axis=0)
        tau = tl.maximum(bound - alpha_m1 * safe_max - _BOUND_MARGIN, -1.0)
        tl.store(TileStats + 2 * tile, (fits == 0).to(tl.int32))
        tl.store(TileStats + 2 * tile + 1, tl.max(list_len, axis=0))
        done = offs_m >= Lq
        pending = tl.sum((done == 0).to(tl.int32), axis=0)
        it = 0
        while (pending > 0) & (it < MAX_ITERS):
            if fits:
                s0, s1, s2, s3 = _list_tau_stats(list_rows, n_list, longest, safe_max, tau,
                                                 alpha_m1, p_exp, BLOCK_M, LIST_BLOCK, ALPHA_KIND)
            else:
                s0 = tl.zeros((BLOCK_M,), tl.float32)
                s1 = tl.zeros((BLOCK_M,), tl.float32)
                s2 = tl.zeros((BLOCK_M,), tl.float32)
                s3 = tl.full((BLOCK_M,), float("inf"), tl.float32)
                for start_n in range(0, Lk, BLOCK_N):
                    s = _score_tile(q, k_base, stride_kn, stride_kd, mask_rows, stride_mn,
                                    offs_m, start_n + offs_n0, offs_d, Lq, Lk, D, sm_scale,
                                    MASK_KIND, DOT_PREC, DOT_UPCAST)
                    t0, t1, t2, t3 = _tau_stats(_shift_scores(s, safe_max, alpha_m1), tau, p_exp,
                                                ALPHA_KIND)
                    s0, s1, s2, s3 = _merge_stats(s0, s1, s2, s3, t0, t1, t2, t3)
            tau, done = _tau_step(tau, done, s0, s1, s2, s3, p_exp, ALPHA_KIND)
            pending = tl.sum((done == 0).to(tl.int32), axis=0)
            it += 1

        # Pass 2: sparse P·V with the final τ.
        l_sparse = tl.zeros((BLOCK_M,), tl.float32)
        acc_sparse = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)
        for start_n in range(0, Lk, BLOCK_N):
            offs_n = start_n + offs_n0
            s = _score_tile(q, k_base, stride_kn, stride_kd, mask_rows, stride_mn, offs_m,
                            offs_n, offs_d, Lq, Lk, D, sm_scale, MASK_KIND, DOT_PREC, DOT_UPCAST)
            p = _sparse_probs(_shift_scores(s, safe_max, alpha_m1), tau, p_exp, ALPHA_KIND)
            l_sparse += tl.sum(p, axis=1)
            v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                        mask=(offs_n[:, None] < Lk) & (offs_dv[None, :] < Dv), other=0.0)
            acc_sparse += _mma(p.to(v.dtype), v, DOT_PREC, DOT_UPCAST)
        o_sparse = acc_sparse / tl.where(l_sparse > 0.0, l_sparse, 1.0)[:, None]

        out = _gag_combine(o_dense, o_sparse, lam, eta, zeta)
        tl.store(Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om
                 + offs_dv[None, :] * stride_od, out.to(Out.dtype.element_ty),
                 mask=row_ok[:, None] & (offs_dv[None, :] < Dv))
        # The next tile overwrites this program's lists.
        tl.debug_barrier()


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------

def _alpha_kind(alpha: float) -> int:
    if alpha == 1.5:
        return _ALPHA_15
    if alpha == 2.0:
        return _ALPHA_2
    return _ALPHA_GENERAL


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs: three TF32 products per dot (split hi/lo operands) give about fp32
    # accuracy on tensor cores; plain "ieee" lowers to FMA loops that spill heavily.
    return "tf32x3" if dtype == torch.float32 else "tf32"


def mask_kind(mask_dtype: Optional[torch.dtype]) -> int:
    """The kernels' MASK_KIND for no mask, a boolean keep-mask or an additive float mask."""
    if mask_dtype is None:
        return _MASK_NONE
    return _MASK_KEEP if mask_dtype == torch.bool else _MASK_ADD


def kernel_constexprs(config: KernelConfig, dtype: torch.dtype, mask_kind: int, alpha: float, *,
                      dot_upcast: bool = False) -> dict:
    """The compile-time arguments of the kernel ``config`` selects (launch and AOT compile)."""
    constexprs = dict(BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_D=config.block_d,
                      BLOCK_DV=config.block_dv, MASK_KIND=mask_kind,
                      ALPHA_KIND=_alpha_kind(alpha), DOT_PREC=_dot_precision(dtype),
                      DOT_UPCAST=dot_upcast, MAX_ITERS=_MAX_TAU_ITERS)
    if config.path == "stream":
        constexprs["LIST_BLOCK"] = config.list_block
    return constexprs


def _mask_args(mask: Optional[torch.Tensor], shape, fallback: torch.Tensor):
    """(tensor, (stride_b, stride_h, stride_m, stride_n), kind) with broadcast axes at stride 0."""
    if mask is None:
        return fallback, (0, 0, 0, 0), _MASK_NONE
    expanded = mask.expand(shape)
    strides = tuple(st if size != 1 else 0 for st, size in zip(expanded.stride(), expanded.shape))
    if mask.dtype == torch.bool:
        expanded = expanded.view(torch.uint8)
    return expanded, strides, mask_kind(mask.dtype)


def _default_programs(device: torch.device, n_tiles: int) -> int:
    if device.type == "cuda":
        # One resident program per SM: at 8 warps and ~255 registers a thread, a program fills
        # an SM's register file, so more programs would only queue (and need more scratch).
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_tiles, sms))
    return max(1, min(n_tiles, 2))  # the interpreter runs programs one after another


def _shared_memory_limit(device: torch.device) -> Optional[int]:
    """The device's opt-in shared memory per block in bytes (None off CUDA: the interpreter)."""
    if device.type != "cuda":
        return None
    return device_shared_memory(device)


def fused_gag_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
                        eta: float, zeta: float, alpha: float,
                        mask: Optional[torch.Tensor] = None,
                        config: Optional[KernelConfig] = None,
                        tile_stats: Optional[dict] = None) -> torch.Tensor:
    """GAG attention in one fused kernel: (B,H,Lq,D), (B,H,Lk,D), (B,H,Lk,Dv) → (B,H,Lq,Dv).

    Same contract as gag_core.attention.gag_attention (scale = λ, eta = η, zeta = ζ), with the
    parameters already validated and ``mask`` already normalised to rank 4 (see
    gag_core.attention.normalize_mask). Softmax scale is 1/√D. q, k, v share one dtype among
    float16, bfloat16, float32; the result has that dtype. Runs on CUDA tensors, or on CPU
    tensors when TRITON_INTERPRET=1 was set before triton was imported.

    With the default ``config`` the call goes through the custom operator
    ``torch.ops.gag_core.fused_gag_attention``, which torch.compile treats as one opaque node
    (no graph break); an explicit ``config`` or ``tile_stats`` (tests, tuning, validation)
    launches directly. ``tile_stats``, a dict, receives for the streaming path ``tiles`` (query
    tiles), ``fallback_tiles`` (tiles whose candidate lists overflowed, so that τ came from
    passes recomputing the scores) and ``longest_list`` (the longest list any row needed).
    """
    if config is None and tile_stats is None:
        return _FUSED_OP(q, k, v, mask, float(scale), float(eta), float(zeta), float(alpha))
    return _launch(q, k, v, mask, float(scale), float(eta), float(zeta), float(alpha), config,
                   tile_stats)


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
            scale: float, eta: float, zeta: float, alpha: float,
            config: Optional[KernelConfig], tile_stats: Optional[dict] = None) -> torch.Tensor:
    batch, heads, lq, d = q.shape
    lk, dv = k.shape[2], v.shape[3]
    if config is None:
        config = kernel_config(lq, lk, d, dv, q.dtype,
                               shared_memory_limit=_shared_memory_limit(q.device))
    out = torch.empty((batch, heads, lq, dv), device=q.device, dtype=q.dtype)
    if lq == 0 or batch * heads == 0:
        return out
    mask_t, mask_strides, kind = _mask_args(mask, (batch, heads, lq, lk), q)
    args = (*q.stride(), *k.stride(), *v.stride(), *out.stride(), *mask_strides,
            heads, lq, lk, d, dv)
    floats = (1.0 / math.sqrt(d), float(alpha) - 1.0, 1.0 / (float(alpha) - 1.0), float(scale),
              float(eta), float(zeta))
    constexprs = kernel_constexprs(config, q.dtype, kind, alpha,
                                   dot_upcast=q.device.type != "cuda" and q.dtype == torch.bfloat16)
    # Triton launches on the current CUDA device; make that q's device.
    device_guard = torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext()
    with device_guard:
        if config.path == "short":
            grid = (triton.cdiv(lq, config.block_m), batch * heads)
            _gag_short_kernel[grid](q, k, v, out, mask_t, *args, *floats, **constexprs,
                                    num_warps=config.num_warps, num_stages=config.num_stages)
            if tile_stats is not None:
                tile_stats.update(tiles=grid[0] * grid[1], fallback_tiles=0, longest_list=0)
            return out
        n_tiles = batch * heads * triton.cdiv(lq, config.block_m)
        programs = config.num_programs or _default_programs(q.device, n_tiles)
        programs = max(1, min(programs, n_tiles))
        scratch = torch.empty((programs, config.block_m, config.list_cap), device=q.device,
                              dtype=torch.float32)
        if not q.is_cuda:
            # Interpreter runs are tests: poison the lists so that reading a slot the kernel
            # never wrote adds a phantom score at the row maximum (+inf shifts to z = 0) and
            # changes the result, instead of passing on benign leftover memory.
            scratch.fill_(math.inf)
        # Per tile: whether τ took the score-recomputing fallback, and the longest list.
        stats = torch.empty((n_tiles, 2), device=q.device, dtype=torch.int32)
        _gag_stream_kernel[(programs,)](
            q, k, v, out, mask_t, scratch, stats, *args, n_tiles, config.list_cap, *floats,
            **constexprs, num_warps=config.num_warps, num_stages=config.num_stages)
    if tile_stats is not None:
        tile_stats.update(tiles=n_tiles, fallback_tiles=int(stats[:, 0].sum()),
                          longest_list=int(stats[:, 1].max()))
    return out


def _register_fused_op():
    """The launcher as a torch custom operator (opaque to dynamo, with a shape-only fake).

    The pack can be imported twice in one process (as ``gag_core`` by tests and as part of the
    ComfyUI package); the operator is registered by whichever import comes first."""
    if hasattr(torch.ops, "gag_core") and hasattr(torch.ops.gag_core, "fused_gag_attention"):
        return torch.ops.gag_core.fused_gag_attention

    @torch.library.custom_op("gag_core::fused_gag_attention", mutates_args=())
    def fused_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                 scale: float, eta: float, zeta: float, alpha: float) -> torch.Tensor:
        return _launch(q, k, v, mask, scale, eta, zeta, alpha, None)

    @fused_op.register_fake
    def _(q, k, v, mask, scale, eta, zeta, alpha):
        return q.new_empty((*q.shape[:3], v.shape[-1]))

    return fused_op


_FUSED_OP = _register_fused_op()
