"""gag_attention / dense_sparse_attention (gag_core.attention) against the float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

import gag_core.attention as attention_module
from gag_core import dense_sparse_attention, gag_attention, gag_combine, normalize_mask
from reference import (ref_combine, ref_dense_sparse, ref_entmax, ref_gag_attention, ref_softmax,
                       rel_frobenius)

INF = float("inf")
# Relative Frobenius error allowed against the float64 reference fed the same rounded inputs.
# float32: the scores' own float32 rounding (~1e-7·|q||k|, amplified by λ = 10) dominates and
# reaches ~9e-6 at logits of std 10 with Lk = 300, D = 128; half precision adds the final rounding.
TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make_qkv(b, h, lq, lk, d, dv=None, *, logit_std=1.0, dtype=torch.float32, seed=0):
    """q, k with q·k/√d of standard deviation ``logit_std``; v unit normal."""
    g = torch.Generator().manual_seed(seed)
    root = math.sqrt(logit_std)
    q = torch.randn(b, h, lq, d, generator=g) * root
    k = torch.randn(b, h, lk, d, generator=g) * root
    v = torch.randn(b, h, lk, dv or d, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def make_mask(kind, b, h, lq, lk, dtype, seed):
    """The mask shapes and kinds ComfyUI hands to attention (see normalize_mask)."""
    g = torch.Generator().manual_seed(seed)
    keep = lambda *shape: torch.rand(*shape, generator=g) < 0.7  # noqa: E731
    if kind == "none":
        return None
    if kind == "bool2":
        return keep(lq, lk)
    if kind == "bool3":
        return keep(b, lq, lk)
    if kind == "bool4":
        return keep(b, h, lq, lk)
    if kind == "bool4_keys":  # key padding, broadcast over heads and queries
        return keep(b, 1, 1, lk)
    if kind == "float2":  # a finite additive bias
        return (torch.randn(lq, lk, generator=g) * 2.0).to(dtype)
    if kind == "float3_neginf":
        return torch.where(keep(b, lq, lk), torch.zeros(()), torch.tensor(-INF)).to(dtype)
    if kind == "float4":
        return (torch.randn(1, h, lq, lk, generator=g) - 3.0 * (~keep(1, h, lq, lk))).to(dtype)
    raise AssertionError(kind)


MASK_KINDS = ["none", "bool2", "bool3", "bool4", "bool4_keys", "float2", "float3_neginf", "float4"]

# (B, H, Lq, Lk, D, Dv): Lk from 1 to a few hundred, D from 8 to 128, Lq ≠ Lk, Dv ≠ D once.
SHAPES = [
    (1, 1, 1, 1, 8, 8),
    (2, 3, 5, 1, 16, 16),
    (2, 2, 7, 13, 8, 8),
    (1, 4, 33, 64, 64, 64),
    (2, 2, 17, 300, 128, 128),
    (1, 1, 64, 257, 32, 32),
    (3, 2, 9, 2, 128, 128),
    (2, 1, 4, 200, 40, 24),
    (1, 2, 100, 50, 80, 80),
]

# (λ, η, ζ, α), cycled over the cases.
PARAMS = [
    (10.0, 15.0, 0.0, 1.5),   # the paper's defaults
    (10.0, INF, 1.0, 2.0),    # PLADIS with sparsemax, no cap
    (5.0, 0.5, 0.4, 1.25),    # binding cap, bisection α
    (10.0, 15.0, 0.0, 1.75),
]


def cases():
    index = 0
    for shape in SHAPES:
        for dtype in DTYPES:
            for logit_std in (1.0, 10.0):
                mask_kind = MASK_KINDS[index % len(MASK_KINDS)]
                case_id = (f"{'x'.join(map(str, shape))}-{str(dtype)[6:]}-std{logit_std:g}"
                           f"-{mask_kind}-p{index % len(PARAMS)}")
                yield pytest.param(shape, dtype, logit_std, mask_kind, PARAMS[index % len(PARAMS)],
                                   index, id=case_id)
                index += 1


@pytest.mark.parametrize("shape,dtype,logit_std,mask_kind,params,seed", list(cases()))
def test_matches_reference(shape, dtype, logit_std, mask_kind, params, seed):
    b, h, lq, lk, d, dv = shape
    scale, eta, zeta, alpha = params
    q, k, v = make_qkv(b, h, lq, lk, d, dv, logit_std=logit_std, dtype=dtype, seed=seed)
    mask = make_mask(mask_kind, b, h, lq, lk, dtype, seed)
    out = gag_attention(q, k, v, scale=scale, eta=eta, zeta=zeta, alpha=alpha, mask=mask)
    assert out.shape == (b, h, lq, dv)
    assert out.dtype == q.dtype and out.device == q.device
    assert torch.isfinite(out).all()
    ref = ref_gag_attention(q, k, v, scale, eta, zeta, alpha, mask)
    assert rel_frobenius(out, ref) < TOL[dtype]


@pytest.mark.parametrize("alpha,zeta,eta", [(2.0, 1.0, INF), (1.5, 0.0, 15.0), (1.25, 0.4, 0.5)])
def test_float32_error_comes_from_the_scores(alpha, zeta, eta):
    # The 1e-5 float32 budget above is mostly the float32 rounding of q·kᵀ itself (~7e-6 at logits
    # of std 10, D = 128, Lk = 300). Fed gag_core's own float32 scores, the reference must agree
    # far more tightly: the maps, P·V and the rule add only ~4e-7.
    q, k, v = make_qkv(2, 2, 17, 300, 128, logit_std=10.0, seed=61)
    scores = attention_module.attention_scores(q, k)
    v64 = v.double()
    ref = ref_combine(ref_softmax(scores) @ v64, ref_entmax(scores, alpha) @ v64, 10.0, eta, zeta)
    out = gag_attention(q, k, v, scale=10.0, eta=eta, zeta=zeta, alpha=alpha)
    assert rel_frobenius(out, ref) < 1.5e-6


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("dtype", DTYPES + [torch.float64])
def test_every_mask_kind(mask_kind, dtype):
    b, h, lq, lk, d = 2, 3, 11, 37, 32
    q, k, v = make_qkv(b, h, lq, lk, d, logit_std=3.0, dtype=dtype, seed=21)
    mask = make_mask(mask_kind, b, h, lq, lk, dtype, seed=22)
    out = gag_attention(q, k, v, mask=mask)
    assert out.dtype == dtype and out.shape == (b, h, lq, d)
    assert rel_frobenius(out, ref_gag_attention(q, k, v, mask=mask)) < TOL[dtype]
    dense, sparse = dense_sparse_attention(q, k, v, mask=mask)
    ref_dense, ref_sparse = ref_dense_sparse(q, k, v, 1.5, mask)
    compute_tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel_frobenius(dense, ref_dense) < compute_tol
    assert rel_frobenius(sparse, ref_sparse) < compute_tol


@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.1, 1.9])
def test_dense_sparse_attention_matches_reference(alpha):
    q, k, v = make_qkv(2, 2, 19, 70, 48, 40, logit_std=5.0, seed=31)
    dense, sparse = dense_sparse_attention(q, k, v, alpha=alpha)
    assert dense.dtype == sparse.dtype == torch.float32
    assert dense.shape == sparse.shape == (2, 2, 19, 40)
    ref_dense, ref_sparse = ref_dense_sparse(q, k, v, alpha)
    assert rel_frobenius(dense, ref_dense) < 1e-5
    assert rel_frobenius(sparse, ref_sparse) < 1e-5
    # float16 inputs are computed in float32 too.
    dense16, _ = dense_sparse_attention(q.half(), k.half(), v.half(), alpha=alpha)
    assert dense16.dtype == torch.float32


# --- chunking -----------------------------------------------------------------------------------

def count_score_calls(monkeypatch):
    calls = []
    real = attention_module.attention_scores

    def spy(q, *args, **kwargs):
        calls.append(q.shape[2])
        return real(q, *args, **kwargs)

    monkeypatch.setattr(attention_module, "attention_scores", spy)
    return calls


@pytest.mark.parametrize("mask_kind", ["none", "bool4", "float3_neginf", "bool4_keys"])
def test_one_query_per_chunk_equals_default(monkeypatch, mask_kind):
    b, h, lq, lk, d = 2, 2, 13, 45, 16
    q, k, v = make_qkv(b, h, lq, lk, d, logit_std=4.0, seed=41)
    mask = make_mask(mask_kind, b, h, lq, lk, torch.float32, seed=42)
    calls = count_score_calls(monkeypatch)
    whole = gag_attention(q, k, v, mask=mask)
    assert calls == [lq]
    calls.clear()
    per_query = gag_attention(q, k, v, mask=mask, chunk_bytes=1)
    assert calls == [1] * lq
    assert rel_frobenius(per_query, whole) < 1e-6
    assert rel_frobenius(per_query, ref_gag_attention(q, k, v, mask=mask)) < 1e-5
    calls.clear()
    dense1, sparse1 = dense_sparse_attention(q, k, v, mask=mask, chunk_bytes=1)
    assert calls == [1] * lq
    dense, sparse = dense_sparse_attention(q, k, v, mask=mask)
    assert rel_frobenius(dense1, dense) < 1e-6 and rel_frobenius(sparse1, sparse) < 1e-6


def test_uneven_chunks(monkeypatch):
    b, h, lq, lk, d = 1, 3, 10, 20, 8
    q, k, v = make_qkv(b, h, lq, lk, d, seed=43)
    mask = make_mask("bool3", b, h, lq, lk, torch.float32, seed=44)
    calls = count_score_calls(monkeypatch)
    # Room for three queries' worth of scores per chunk: chunks of 3, 3, 3, 1.
    per_query_bytes = b * h * lk * attention_module._BYTES_PER_SCORE
    out = gag_attention(q, k, v, mask=mask, chunk_bytes=3 * per_query_bytes + 1)
    assert calls == [3, 3, 3, 1]
    assert rel_frobenius(out, ref_gag_attention(q, k, v, mask=mask)) < 1e-5


def test_default_chunk_covers_typical_calls_in_one_piece(monkeypatch):
    calls = count_score_calls(monkeypatch)
    q, k, v = make_qkv(2, 2, 64, 77, 16, seed=45)
    gag_attention(q, k, v)
    assert calls == [64]


# --- the method.md identities through the full attention path ----------------------------------

@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.3])
def test_identities(alpha):
    q, k, v = make_qkv(2, 3, 21, 40, 32, logit_std=4.0, dtype=torch.float64, seed=51)
    dense, sparse = dense_sparse_attention(q, k, v, alpha=alpha)
    for eta in (INF, 1e30):
        pladis = gag_attention(q, k, v, scale=7.0, eta=eta, zeta=1.0, alpha=alpha)
        torch.testing.assert_close(pladis, sparse + 7.0 * (sparse - dense), rtol=1e-12, atol=1e-12)
    assert torch.equal(gag_attention(q, k, v, scale=0.0, zeta=0.3, alpha=alpha), sparse)
    out = gag_attention(q, k, v, scale=10.0, eta=15.0, zeta=0.0, alpha=alpha)
    s_sq = (sparse * sparse).sum(-1, keepdim=True)
    c = 1.0 - (dense * sparse).sum(-1, keepdim=True) / s_sq
    cap = torch.clamp(15.0 / (c.abs() * s_sq.sqrt()), max=1.0)
    torch.testing.assert_close(out, (1.0 + 10.0 * c * cap) * sparse, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        gag_attention(q, k, v, scale=3.0, eta=0.2, zeta=0.6, alpha=alpha),
        gag_combine(dense, sparse, scale=3.0, eta=0.2, zeta=0.6), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eta_cap_through_attention(dtype):
    q, k, v = make_qkv(1, 2, 30, 60, 32, logit_std=6.0, dtype=dtype, seed=52)
    dense, sparse = dense_sparse_attention(q, k, v)
    for eta in (0.05, 0.5):
        out = gag_attention(q, k, v, scale=10.0, eta=eta, zeta=0.5)
        corr = torch.linalg.vector_norm(out.double() - sparse.double(), dim=-1)
        slack = 2 * torch.finfo(dtype).eps * torch.linalg.vector_norm(out.double(), dim=-1)
        assert (corr <= 10.0 * eta * (1 + 1e-5) + slack).all()


def test_zero_sparse_output_with_nonzero_dense():
    # Two tied top keys hold +u and −u: O_s = 0 exactly, while softmax also weighs the other keys.
    d, lk = 8, 6
    k = torch.zeros(1, 1, lk, d, dtype=torch.float64)
    k[..., 0, 0] = k[..., 1, 0] = 4.0
    k[..., 2:, 0] = -4.0
    q = torch.zeros(1, 1, 1, d, dtype=torch.float64)
    q[..., 0] = 2.0
    v = torch.randn(1, 1, lk, d, generator=torch.Generator().manual_seed(53), dtype=torch.float64)
    v[..., 1, :] = -v[..., 0, :]
    dense, sparse = dense_sparse_attention(q, k, v)
    assert (sparse == 0).all() and (dense != 0).any()
    for dtype in (torch.float64, torch.float32):
        for zeta in (0.0, 0.5):
            out = gag_attention(q.to(dtype), k.to(dtype), v.to(dtype), zeta=zeta)
            assert torch.isfinite(out).all()
            if zeta == 0.0:
                assert (out == 0).all()
            else:
                ref = ref_gag_attention(q, k, v, zeta=zeta)
                assert rel_frobenius(out, ref) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64])
@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.3])
def test_fully_masked_queries_give_zeros(dtype, alpha):
    b, h, lq, lk, d = 2, 2, 6, 9, 16
    q, k, v = make_qkv(b, h, lq, lk, d, logit_std=2.0, dtype=dtype, seed=54)
    keep = make_mask("bool3", b, h, lq, lk, dtype, seed=55)
    keep[:, 0] = True
    keep[0, 2] = False          # batch 0, query 2 sees no key
    keep[1, 4] = False
    additive = torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, -INF)
    for mask in (keep, additive):
        out = gag_attention(q, k, v, mask=mask, alpha=alpha)
        assert torch.isfinite(out).all()
        assert (out[0, :, 2] == 0).all() and (out[1, :, 4] == 0).all()
        assert rel_frobenius(out, ref_gag_attention(q, k, v, alpha=alpha, mask=mask)) < TOL[dtype]
        dense, sparse = dense_sparse_attention(q, k, v, mask=mask, alpha=alpha)
        assert (dense[0, :, 2] == 0).all() and (sparse[0, :, 2] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_overflowing_half_precision_scores(dtype):
    # q·k far beyond float16's 65504: the scores must be formed in float32, not in q's dtype.
    q, k, v = make_qkv(1, 2, 16, 40, 64, dtype=torch.float32, seed=56)
    q, k = (q * 60).to(dtype), (k * 60).to(dtype)  # scores of std ~3600, max ~1e4–1e5
    v = v.to(dtype)
    assert (torch.matmul(q.float(), k.float().transpose(-1, -2)).abs() > 65504).any()
    out = gag_attention(q, k, v)
    assert torch.isfinite(out).all()
    assert rel_frobenius(out, ref_gag_attention(q, k, v)) < TOL[dtype]


def test_empty_query_axis():
    q, k, v = make_qkv(2, 3, 0, 5, 8, seed=57)
    out = gag_attention(q, k, v)
    assert out.shape == (2, 3, 0, 8)
    dense, sparse = dense_sparse_attention(q, k, v)
    assert dense.shape == sparse.shape == (2, 3, 0, 8)


# --- normalize_mask -----------------------------------------------------------------------------

def test_normalize_mask_ranks():
    b, h, lq, lk = 2, 3, 4, 5
    assert normalize_mask(None, b, h, lq, lk) is None
    m2 = torch.rand(lq, lk)
    assert torch.equal(normalize_mask(m2, b, h, lq, lk), m2.view(1, 1, lq, lk))
    m3 = torch.rand(b, lq, lk)
    assert torch.equal(normalize_mask(m3, b, h, lq, lk), m3.view(b, 1, lq, lk))
    m4 = torch.rand(1, h, 1, lk) > 0.5
    assert torch.equal(normalize_mask(m4, b, h, lq, lk), m4)


# --- bad input ----------------------------------------------------------------------------------

def qkv(b=2, h=3, lq=4, lk=5, d=8, dv=8):
    return torch.zeros(b, h, lq, d), torch.zeros(b, h, lk, d), torch.zeros(b, h, lk, dv)


@pytest.mark.parametrize("kwargs,name", [
    ({"alpha": 1.0}, "alpha"), ({"alpha": 2.5}, "alpha"), ({"alpha": float("nan")}, "alpha"),
    ({"alpha": "1.5"}, "alpha"),
    ({"eta": 0.0}, "eta"), ({"eta": -1.0}, "eta"), ({"eta": float("nan")}, "eta"),
    ({"zeta": -0.5}, "zeta"), ({"zeta": 1.5}, "zeta"), ({"zeta": float("nan")}, "zeta"),
    ({"scale": float("nan")}, "scale"), ({"scale": INF}, "scale"),
    ({"backend": "cuda"}, "backend"), ({"backend": None}, "backend"),
])
def test_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        gag_attention(*qkv(), **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)
    if name == "alpha":
        with pytest.raises(ValueError, match=name):
            dense_sparse_attention(*qkv(), **kwargs)


def test_fused_backend_refused_on_cpu():
    with pytest.raises(ValueError, match="fused"):
        gag_attention(*qkv(), backend="fused")
    out = gag_attention(*qkv(), backend="torch")
    assert out.shape == (2, 3, 4, 8)


@pytest.mark.parametrize("shapes,pattern", [
    (((3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 8)), r"q must have shape"),
    (((2, 3, 4, 8), (1, 2, 3, 5, 8), (2, 3, 5, 8)), r"k must have shape"),
    (((2, 3, 4, 8), (2, 3, 5, 8), (5, 8)), r"v must have shape"),
    (((2, 3, 4, 8), (2, 3, 5, 16), (2, 3, 5, 8)), r"head dim"),
    (((2, 3, 4, 8), (1, 3, 5, 8), (1, 3, 5, 8)), r"\(B, H\)"),
    (((2, 3, 4, 8), (2, 2, 5, 8), (2, 2, 5, 8)), r"\(B, H\)"),
    (((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 6, 8)), r"Lk"),
    (((2, 3, 4, 8), (2, 3, 5, 8), (2, 1, 5, 8)), r"Lk"),
    (((2, 3, 4, 8), (2, 3, 0, 8), (2, 3, 0, 8)), r"Lk"),
])
def test_bad_shapes(shapes, pattern):
    tensors = [torch.zeros(shape) for shape in shapes]
    with pytest.raises(ValueError, match=pattern):
        gag_attention(*tensors)
    with pytest.raises(ValueError, match=pattern):
        dense_sparse_attention(*tensors)


@pytest.mark.parametrize("mask_shape", [(4, 6), (3, 4, 5), (2, 2, 4, 5), (5,), (1, 1, 1, 4, 5),
                                        (2, 3, 4, 5, 1)])
def test_masks_that_do_not_fit(mask_shape):
    with pytest.raises(ValueError, match="mask") as info:
        gag_attention(*qkv(), mask=torch.zeros(mask_shape))
    assert str(tuple(mask_shape)) in str(info.value)
    with pytest.raises(ValueError, match="mask"):
        dense_sparse_attention(*qkv(), mask=torch.zeros(mask_shape, dtype=torch.bool))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 3e-3)])
@pytest.mark.parametrize("zeta,eta", [(0.0, 15.0), (0.4, 0.5)])
def test_gag_correction_is_gag_minus_softmax_attention(dtype, tol, zeta, eta):
    """gag_correction is what GAG adds to plain attention: the float64 reference's GAG output
    minus its softmax output, masked keys included, with chunking."""
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(2, 3, 37, 16, generator=g) * 2 for _ in range(3))
    mask = torch.rand(2, 1, 37, 37, generator=g) > 0.2
    mask[..., 0] = True
    from gag_core import gag_correction
    got = gag_correction(q.to(dtype), k.to(dtype), v.to(dtype), scale=7.0, eta=eta, zeta=zeta,
                         mask=mask, chunk_bytes=4096)
    dense, sparse = ref_dense_sparse(q.double(), k.double(), v.double(), mask=mask)
    expected = ref_combine(dense, sparse, 7.0, eta, zeta) - dense
    assert got.dtype == torch.float32
    assert rel_frobenius(got.double(), expected) < tol
