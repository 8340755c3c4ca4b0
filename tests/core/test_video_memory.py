"""GAG's working memory at video sizes stays bounded: the PyTorch path runs the queries in
chunks, so a Wan 2.1/2.2 480p 81-frame latent (21 latent frames × 30 × 52 patches = 32,760
video tokens) guided against its 512 umT5 text keys never holds the whole (B, H, 32,760, 512)
score matrix, and the chunked result is the per-query result (queries are independent).

Runs the real shape on the CPU with few heads (the head count only scales the chunk count), and
checks the chunk plan at Wan 14B's real widths (40 heads, cond and uncond batched; 480p and
720p) without allocating it.
"""

from __future__ import annotations

import math

import pytest
import torch

import gag_core.attention as attention
from gag_core import gag_attention

WAN_480P_81_FRAMES = 21 * 30 * 52   # latent frames × (480/16) × (832/16)
WAN_720P_81_FRAMES = 21 * 45 * 80   # 1280×720
UMT5_TOKENS = 512


def test_wan_480p_token_count():
    assert WAN_480P_81_FRAMES == 32_760
    assert WAN_720P_81_FRAMES == 75_600


@pytest.fixture
def score_sizes(monkeypatch):
    """The number of elements of every score matrix GAG forms."""
    sizes = []
    original = attention.attention_scores

    def spy(q, k, mask=None, softmax_scale=None):
        scores = original(q, k, mask, softmax_scale)
        sizes.append(scores.numel())
        return scores

    monkeypatch.setattr(attention, "attention_scores", spy)
    return sizes


def test_wan_480p_cross_attention_runs_in_bounded_chunks(score_sizes):
    """32,760 video queries × 512 text keys: several chunks, none larger than the budget, and
    the chunked output equals each query range computed on its own."""
    g = torch.Generator().manual_seed(0)
    batch, heads, dim = 1, 2, 16
    q = torch.randn(batch, heads, WAN_480P_81_FRAMES, dim, generator=g)
    k = torch.randn(batch, heads, UMT5_TOKENS, dim, generator=g)
    v = torch.randn(batch, heads, UMT5_TOKENS, dim, generator=g)
    chunk_bytes = 64 * 2**20
    out = gag_attention(q, k, v, chunk_bytes=chunk_bytes, backend="torch")
    assert out.shape == q.shape and torch.isfinite(out).all()

    budget = min(chunk_bytes // attention._BYTES_PER_SCORE, attention._CPU_CHUNK_SCORES)
    full = batch * heads * WAN_480P_81_FRAMES * UMT5_TOKENS
    assert len(score_sizes) >= 4, "the video's queries were not split into chunks"
    assert max(score_sizes) <= budget < full
    assert sum(score_sizes) == full  # every query scored exactly once

    # Queries are independent: ranges across chunk boundaries match a direct computation.
    step = max(score_sizes) // (batch * heads * UMT5_TOKENS)
    for start in (0, step - 3, WAN_480P_81_FRAMES - 7):
        rows = slice(start, start + 7)
        alone = gag_attention(q[:, :, rows], k, v, backend="torch")
        torch.testing.assert_close(out[:, :, rows], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tokens", [WAN_480P_81_FRAMES, WAN_720P_81_FRAMES])
def test_chunk_plan_at_wan_14b_widths_fits_the_default_budget(tokens):
    """Wan 14B (40 heads), cond and uncond in one batch, on a GPU (no CPU cap): each chunk's
    working memory is within DEFAULT_CHUNK_BYTES, and the video takes many chunks."""
    batch, heads = 2, 40
    step = attention._query_chunk(batch, heads, tokens, UMT5_TOKENS,
                                  attention.DEFAULT_CHUNK_BYTES, on_cpu=False)
    working = step * batch * heads * UMT5_TOKENS * attention._BYTES_PER_SCORE
    assert working <= attention.DEFAULT_CHUNK_BYTES
    whole = tokens * batch * heads * UMT5_TOKENS * attention._BYTES_PER_SCORE
    assert math.ceil(tokens / step) >= 8 and whole > 8 * attention.DEFAULT_CHUNK_BYTES
