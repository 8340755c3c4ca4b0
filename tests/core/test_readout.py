"""The strength readout's arithmetic: gag_core.rule.gag_gain and gag_core.readout, against the
float64 reference (tests/core/reference.py, written from method.md)."""

from __future__ import annotations

import math

import pytest
import torch

from gag_core import gag_combine
from gag_core.readout import READOUT_QUERIES, attention_gain, query_stride, text_attention_gain
from gag_core.rule import gag_gain
from reference import ref_dense_sparse, ref_gain

INF = float("inf")
PARAMS = [(10.0, 15.0, 0.0), (10.0, 1.0, 0.0), (3.0, 2.0, 0.4), (0.5, INF, 0.25), (0.0, 15.0, 0.5)]


def pair(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(shape, generator=g, dtype=torch.float64).to(dtype))


def qkv(seed, batch=2, heads=3, lq=40, lk=12, dim=8, sharp=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, lq, dim, generator=g) * sharp,
            torch.randn(batch, heads, lk, dim, generator=g) * sharp,
            torch.randn(batch, heads, lk, dim, generator=g))


@pytest.mark.parametrize("scale,eta,zeta", PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_gain_matches_the_float64_reference(scale, eta, zeta, dtype):
    dense, sparse = pair((2, 3, 50, 16), seed=1, dtype=dtype)
    gain, capped = gag_gain(dense, sparse, scale=scale, eta=eta, zeta=zeta)
    want_gain, want_capped = ref_gain(dense, sparse, scale, eta, zeta)
    assert gain.shape == capped.shape == (2, 3, 50, 1) and capped.dtype == torch.bool
    assert gain.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(gain.double(), want_gain, rtol=tol, atol=tol)
    assert torch.equal(capped, want_capped)
    if eta == 1.0:  # the binding cap is seen where it binds, not everywhere
        assert 0 < capped.double().mean() < 1


@pytest.mark.parametrize("scale,eta,zeta", PARAMS)
def test_gain_is_the_factor_gag_combine_applies_along_the_sparse_output(scale, eta, zeta):
    dense, sparse = pair((4, 30, 16), seed=2, dtype=torch.float64)
    out = gag_combine(dense, sparse, scale=scale, eta=eta, zeta=zeta)
    along = (out * sparse).sum(-1, keepdim=True) / (sparse * sparse).sum(-1, keepdim=True)
    gain, _ = gag_gain(dense, sparse, scale=scale, eta=eta, zeta=zeta)
    assert torch.allclose(gain, along, rtol=1e-12, atol=1e-12)
    if zeta == 0:  # the whole output lies on the sparse output's line
        assert torch.allclose(out, gain * sparse, rtol=1e-12, atol=1e-12)


def test_zero_sparse_output_has_gain_one_and_no_cap():
    dense, sparse = pair((2, 5, 8), seed=3)
    sparse[0, 1] = 0
    gain, capped = gag_gain(dense, sparse, scale=10.0, eta=1e-3, zeta=0.0)
    assert torch.isfinite(gain).all()
    assert gain[0, 1].item() == 1.0 and not capped[0, 1].item()


def test_gain_checks_its_inputs():
    dense, sparse = pair((2, 5, 8), seed=4)
    with pytest.raises(ValueError, match="same shape"):
        gag_gain(dense, sparse[:, :4], scale=10.0, eta=15.0, zeta=0.0)
    with pytest.raises(ValueError, match="eta"):
        gag_gain(dense, sparse, scale=10.0, eta=0.0, zeta=0.0)


@pytest.mark.parametrize("lq,max_queries,stride", [(40, 64, 1), (64, 64, 1), (65, 64, 2),
                                                   (4096, 64, 64), (4097, 64, 65), (0, 64, 1)])
def test_query_stride(lq, max_queries, stride):
    assert query_stride(lq, max_queries) == stride
    assert math.ceil(lq / stride) <= max_queries


def test_query_stride_refuses_an_empty_sample():
    with pytest.raises(ValueError, match="max_queries"):
        query_stride(10, 0)


@pytest.mark.parametrize("mask_kind", [None, "bool rank 3", "additive rank 4"])
def test_attention_gain_is_the_reference_gain_on_every_stride_th_query(mask_kind):
    q, k, v = qkv(5, lq=150)
    mask = None
    if mask_kind == "bool rank 3":
        mask = torch.rand(2, 150, 12, generator=torch.Generator().manual_seed(6)) > 0.3
        mask[..., 0] = True
    elif mask_kind == "additive rank 4":
        mask = torch.randn(2, 1, 150, 12, generator=torch.Generator().manual_seed(6))
    gain, capped = attention_gain(q, k, v, scale=10.0, eta=0.3, zeta=0.0, alpha=1.5, mask=mask,
                                  max_queries=READOUT_QUERIES)
    stride = query_stride(150)
    assert stride == 3 and gain.shape == (2, 3, 50, 1)
    rows = slice(None, None, stride)
    ref_mask = None if mask is None else (mask[:, None] if mask.dim() == 3 else mask)[:, :, rows]
    dense, sparse = ref_dense_sparse(q[:, :, rows], k, v, 1.5, ref_mask)
    want_gain, want_capped = ref_gain(dense, sparse, 10.0, 0.3, 0.0)
    assert torch.allclose(gain.double(), want_gain, rtol=1e-4, atol=1e-5)
    assert (capped != want_capped).double().mean() < 0.01  # ties at η in float32 only
    assert 0 < capped.double().mean() < 1


def test_text_attention_gain_reads_image_queries_against_text_keys():
    text = 7
    q, k, v = qkv(7, lq=30, lk=30)
    gain, capped = text_attention_gain(q, k, v, text, scale=5.0, eta=15.0, zeta=0.0, alpha=1.5)
    dense, sparse = ref_dense_sparse(q[:, :, text:], k[:, :, :text], v[:, :, :text], 1.5)
    want, _ = ref_gain(dense, sparse, 5.0, 15.0, 0.0)
    assert gain.shape == (2, 3, 23, 1)
    assert torch.allclose(gain.double(), want, rtol=1e-4, atol=1e-5)
    for nothing_to_guide in (0, 30):
        gain, capped = text_attention_gain(q, k, v, nothing_to_guide, scale=5.0, eta=15.0,
                                           zeta=0.0, alpha=1.5)
        assert gain.shape == capped.shape == (2, 3, 0, 1)
    with pytest.raises(ValueError, match="text_tokens"):
        text_attention_gain(q, k, v, 31, scale=5.0, eta=15.0, zeta=0.0, alpha=1.5)
