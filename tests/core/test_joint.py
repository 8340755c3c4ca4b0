"""Text-mode GAG on a joint attention (gag_core.joint) against a float64 reference built from
the full score matrix, and the identities the text mode rests on."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from gag_core import gag_attention
from gag_core.joint import (check_text_tokens, joint_attention_with_text_mass,
                            text_guided_attention, text_key_mass)
from reference import (F64, ref_combine, ref_dense_sparse, ref_gag_attention, ref_scores,
                       ref_softmax, rel_frobenius)


def joint_qkv(batch=2, heads=3, length=13, dim=8, dv=None, dtype=torch.float32, seed=0,
              spread=1.5):
    g = torch.Generator().manual_seed(seed)
    make = lambda d: (torch.randn(batch, heads, length, d, generator=g, dtype=F64) * spread).to(dtype)
    return make(dim), make(dim), make(dv or dim)


def ref_text_mode(q, k, v, text_tokens, scale=10.0, eta=15.0, zeta=0.0, alpha=1.5, mask=None):
    """The text-mode output written out from full float64 scores, row by row of the method."""
    s = ref_scores(q, k, mask)
    p = ref_softmax(s)
    v64 = v.to(F64)
    plain = p @ v64
    w = p[..., :text_tokens].sum(-1, keepdim=True)
    txt_mask = None
    if mask is not None:
        m = mask if mask.dim() == 4 else mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
        txt_mask = m[..., :text_tokens]
    dense, sparse = ref_dense_sparse(q, k[:, :, :text_tokens], v[:, :, :text_tokens], alpha,
                                     txt_mask)
    guided = ref_combine(dense, sparse, scale, eta, zeta)
    out = plain + w * (guided - dense)
    out[:, :, :text_tokens] = plain[:, :, :text_tokens]
    return out, plain, w


# --- the mass w -------------------------------------------------------------------------------

@pytest.mark.parametrize("text_tokens", [0, 1, 5, 13])
def test_text_key_mass_matches_softmax_mass(text_tokens):
    q, k, _ = joint_qkv()
    w = text_key_mass(q, k, text_tokens)
    expected = ref_softmax(ref_scores(q, k))[..., :text_tokens].sum(-1, keepdim=True)
    assert w.shape == (2, 3, 13, 1) and w.dtype == torch.float32
    torch.testing.assert_close(w.double(), expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_text_key_mass_with_mask(kind):
    q, k, _ = joint_qkv(seed=3)
    g = torch.Generator().manual_seed(4)
    keep = torch.rand(2, 13, 13, generator=g) > 0.3
    keep[..., 0] = True  # every query keeps at least one key
    mask = keep if kind == "bool" else torch.where(keep, 0.0, -1e4)
    w = text_key_mass(q, k, 6, mask)
    expected = ref_softmax(ref_scores(q, k, mask))[..., :6].sum(-1, keepdim=True)
    torch.testing.assert_close(w.double(), expected, atol=2e-6, rtol=0)


def test_plain_and_mass_from_one_call():
    q, k, v = joint_qkv(dv=12, seed=5)  # Dv not a multiple of 8: the padding path
    out, w = joint_attention_with_text_mass(q, k, v, 4)
    p = ref_softmax(ref_scores(q, k))
    assert out.shape == (2, 3, 13, 12) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), p @ v.double(), atol=5e-6, rtol=0)
    torch.testing.assert_close(w.double(), p[..., :4].sum(-1, keepdim=True), atol=2e-6, rtol=0)


def test_softmax_output_splits_into_text_and_image_parts():
    """O = w·O_d^txt + (1 − w)·O_d^img: the identity text mode is built on (float64)."""
    q, k, v = joint_qkv(dtype=F64, seed=6)
    t = 5
    s = ref_scores(q, k)
    p = ref_softmax(s)
    w = p[..., :t].sum(-1, keepdim=True)
    o_txt = ref_softmax(s[..., :t]) @ v[:, :, :t]
    o_img = ref_softmax(s[..., t:]) @ v[:, :, t:]
    torch.testing.assert_close(p @ v, w * o_txt + (1 - w) * o_img, atol=1e-12, rtol=0)


# --- the text-mode output -----------------------------------------------------------------------

@pytest.mark.parametrize("zeta,eta", [(0.0, 15.0), (0.5, 0.3), (1.0, math.inf)])
@pytest.mark.parametrize("with_plain", [False, True])
def test_text_mode_matches_reference(zeta, eta, with_plain):
    q, k, v = joint_qkv(seed=7, spread=2.0)
    t = 5
    expected, plain, _ = ref_text_mode(q, k, v, t, scale=7.0, eta=eta, zeta=zeta)
    out = text_guided_attention(q, k, v, t, scale=7.0, eta=eta, zeta=zeta,
                                plain=plain.float() if with_plain else None)
    assert out.shape == q.shape and out.dtype == torch.float32
    assert rel_frobenius(out, expected) < 2e-5
    # The guidance really acts: image rows moved away from the plain output.
    assert rel_frobenius(out[:, :, t:], plain[:, :, t:]) > 1e-2


def test_text_rows_are_the_plain_rows_bit_for_bit():
    q, k, v = joint_qkv(seed=8)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    out = text_guided_attention(q, k, v, 6, plain=plain)
    assert torch.equal(out[:, :, :6], plain[:, :, :6])
    assert not torch.allclose(out[:, :, 6:], plain[:, :, 6:], atol=1e-3)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_text_mode_with_mask_matches_reference(kind):
    q, k, v = joint_qkv(seed=9)
    g = torch.Generator().manual_seed(10)
    keep = torch.rand(13, 13, generator=g) > 0.25
    keep[:, 0] = True
    mask = keep if kind == "bool" else torch.where(keep, 0.0, -30.0)
    expected, _, _ = ref_text_mode(q, k, v, 4, mask=mask)
    out = text_guided_attention(q, k, v, 4, mask=mask)
    assert rel_frobenius(out, expected) < 2e-5


def test_text_mode_equals_gag_when_image_keys_are_masked():
    """With the image keys masked out for image queries, w = 1 and the image rows are exactly
    GAG over the text keys: gag_core.gag_attention on the same q, k, v and mask."""
    q, k, v = joint_qkv(seed=11)
    t = 5
    keep = torch.ones(13, 13, dtype=torch.bool)
    keep[t:, t:] = False
    out = text_guided_attention(q, k, v, t, mask=keep)
    expected = gag_attention(q[:, :, t:], k, v, mask=keep[t:])
    torch.testing.assert_close(out[:, :, t:], expected, atol=2e-5, rtol=2e-5)
    assert rel_frobenius(out[:, :, t:], ref_gag_attention(q[:, :, t:], k, v, mask=keep[t:])) < 2e-5


def test_scale_zero_swaps_in_the_sparse_text_retrieval():
    q, k, v = joint_qkv(dtype=F64, seed=12)
    t = 4
    s = ref_scores(q, k)
    p = ref_softmax(s)
    w = p[..., :t].sum(-1, keepdim=True)
    dense, sparse = ref_dense_sparse(q, k[:, :, :t], v[:, :, :t])
    out = text_guided_attention(q, k, v, t, scale=0.0)
    torch.testing.assert_close(out[:, :, t:], (p @ v + w * (sparse - dense))[:, :, t:],
                               atol=1e-10, rtol=0)


@pytest.mark.parametrize("text_tokens", [0, 13])
def test_no_text_keys_or_no_image_queries_is_plain_attention(text_tokens):
    q, k, v = joint_qkv(seed=13)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.equal(text_guided_attention(q, k, v, text_tokens, plain=plain), plain)
    torch.testing.assert_close(text_guided_attention(q, k, v, text_tokens), plain)


def test_small_query_chunks_give_the_same_result():
    q, k, v = joint_qkv(length=40, seed=14)
    whole = text_guided_attention(q, k, v, 9)
    chunked = text_guided_attention(q, k, v, 9, chunk_bytes=1)
    # λ = 10 amplifies float32 rounding in the sparse–dense difference; relative agreement is
    # what chunking must keep.
    assert rel_frobenius(chunked, whole) < 1e-6


def test_bfloat16_inputs():
    q, k, v = joint_qkv(dtype=torch.bfloat16, seed=15, length=24, dim=16)
    out = text_guided_attention(q, k, v, 7)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    expected, _, _ = ref_text_mode(q, k, v, 7)
    assert rel_frobenius(out, expected) < 2e-2


@settings(max_examples=25, deadline=None)
@given(length=st.integers(2, 24), data=st.data(), heads=st.integers(1, 3),
       scale=st.floats(0.0, 20.0), spread=st.floats(0.1, 4.0))
def test_text_mode_property(length, data, heads, scale, spread):
    t = data.draw(st.integers(1, length - 1))
    seed = data.draw(st.integers(0, 10_000))
    q, k, v = joint_qkv(batch=1, heads=heads, length=length, seed=seed, spread=spread)
    expected, plain, _ = ref_text_mode(q, k, v, t, scale=scale)
    out = text_guided_attention(q, k, v, t, scale=scale, plain=plain.float())
    assert torch.equal(out[:, :, :t], plain.float()[:, :, :t])
    torch.testing.assert_close(out.double(), expected, atol=5e-5 * (1 + scale), rtol=1e-4)


# --- the text span anywhere in the sequence ---------------------------------------------------

@pytest.mark.parametrize("text_start", [8, 3])   # text last (13 − 5), text in the middle
@pytest.mark.parametrize("with_plain", [False, True])
def test_text_span_at_any_position_is_the_text_first_result_reordered(text_start, with_plain):
    """Attention without positions is equivariant under reordering the tokens, so moving the
    text span (text last, as HiDream has it, or in the middle) must give the text-first output
    with its rows moved the same way; the text rows stay the plain rows bit for bit."""
    q, k, v = joint_qkv(seed=21, spread=2.0)
    t, length = 5, 13
    text = list(range(text_start, text_start + t))
    order = text + [i for i in range(length) if i not in text]  # text-first order of positions
    first = [x[:, :, order] for x in (q, k, v)]
    expected = text_guided_attention(*first, t, scale=7.0)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    out = text_guided_attention(q, k, v, t, scale=7.0, text_start=text_start,
                                plain=plain if with_plain else None)
    torch.testing.assert_close(out[:, :, order], expected, atol=2e-5, rtol=2e-5)
    if with_plain:
        assert torch.equal(out[:, :, text], plain[:, :, text])
    others = [i for i in range(length) if i not in text]
    assert rel_frobenius(out[:, :, others], plain[:, :, others]) > 1e-2


def test_text_key_mass_of_a_span():
    q, k, _ = joint_qkv(dtype=F64, seed=22)
    p = ref_softmax(ref_scores(q, k))
    torch.testing.assert_close(text_key_mass(q, k, 4, text_start=9),
                               p[..., 9:13].sum(-1, keepdim=True), atol=1e-10, rtol=0)


@pytest.mark.parametrize("start,tokens", [(-1, 3), (14, 0), (10, 4), (2.0, 3)])
def test_text_span_validation(start, tokens):
    q, k, v = joint_qkv()
    with pytest.raises(ValueError, match="text_start|text_tokens"):
        text_guided_attention(q, k, v, tokens, text_start=start)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-1, 14, 2.0, True, None])
def test_text_tokens_validation(bad):
    q, k, v = joint_qkv()
    with pytest.raises(ValueError, match="text_tokens"):
        text_guided_attention(q, k, v, bad)
    with pytest.raises(ValueError, match="text_tokens"):
        check_text_tokens(bad, 13)


def test_shape_and_parameter_validation():
    q, k, v = joint_qkv()
    with pytest.raises(ValueError, match="at least as many keys as queries"):
        text_guided_attention(q, k[:, :, :5], v[:, :, :5], 2)
    with pytest.raises(ValueError, match="text_tokens"):   # the text is among the queries
        text_guided_attention(q[:, :, :5], k, v, 6)
    with pytest.raises(ValueError, match="plain must have shape"):
        text_guided_attention(q, k, v, 2, plain=v[:, :, :5])
    with pytest.raises(ValueError, match=r"\(B, H, L, D\)"):
        text_key_mass(q[0], k[0], 2)
    with pytest.raises(ValueError, match="scale"):
        text_guided_attention(q, k, v, 2, scale=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        text_guided_attention(q, k, v, 2, alpha=1.0)


# --- extra keys (a KV cache's reference tokens) -------------------------------------------------

@pytest.mark.parametrize("text_first", [True, False], ids=["text first", "text last"])
@pytest.mark.parametrize("with_plain", [False, True], ids=["own plain", "given plain"])
def test_extra_keys_guide_each_query_as_if_they_were_queries_too(text_first, with_plain):
    """Keys = the queries' own tokens, then extra keys without queries (FluxKVCache appends the
    cached reference tokens). Each output row depends only on its query and all keys, so the
    rows must equal those of the same attention where the extra tokens are queries as well."""
    q, k, v = joint_qkv(length=13)
    own, text = 9, 3
    start = 0 if text_first else own - text
    mask = torch.randn(1, 1, 13, 13, dtype=q.dtype) * 0.5
    plain = None
    if with_plain:
        plain = torch.nn.functional.scaled_dot_product_attention(q[:, :, :own], k, v,
                                                                 attn_mask=mask[:, :, :own])
    part = text_guided_attention(q[:, :, :own], k, v, text, mask=mask[:, :, :own], plain=plain,
                                 text_start=start)
    whole = text_guided_attention(q, k, v, text, mask=mask, text_start=start)
    torch.testing.assert_close(part, whole[:, :, :own])
    untouched = slice(0, text) if text_first else slice(own - text, own)
    assert not torch.allclose(part, whole.new_zeros(part.shape))
    torch.testing.assert_close(part[:, :, untouched], torch.nn.functional.scaled_dot_product_attention(
        q[:, :, untouched], k, v, attn_mask=mask[:, :, untouched]))

