"""The sort-free pieces of the eager attention path against the exact forms and the float64
reference: the Newton threshold behind ``entmax_from_scores_`` (gag_core.sparse) and the
three-dot-product form of the GAG rule with its rescaled fallback (gag_core.rule)."""

from __future__ import annotations

import math

import pytest
import torch

from gag_core import rule
from gag_core.sparse import entmax15, entmax_from_scores_, newton_threshold, sparsemax
from reference import ref_combine, ref_entmax, rel_frobenius

NEG_INF = float("-inf")


def _hard_rows(n: int, seed: int) -> torch.Tensor:
    """Rows that stress a threshold search: flat (supports of hundreds), peaked, ties, masks,
    a single survivor, a fully masked row, uniform, and scores far beyond float16's range."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(6, n, generator=g, dtype=torch.float64) * s for s in (0.05, 0.5, 40.0)]
    rows.append(torch.randn(6, n, generator=g, dtype=torch.float64).round())
    masked = torch.randn(6, n, generator=g, dtype=torch.float64) * 3.0
    masked[:, ::3] = NEG_INF
    masked[0, 1:] = NEG_INF
    masked[1] = NEG_INF
    rows += [masked, torch.zeros(2, n, dtype=torch.float64),
             torch.randn(4, n, generator=g, dtype=torch.float64) * 1e4]
    return torch.cat(rows)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 77, 1280, 4608])
def test_newton_map_matches_exact_form_and_reference(alpha, dtype, n):
    scores = _hard_rows(n, seed=n).to(dtype)
    row_max = scores.amax(-1, keepdim=True)
    newton = entmax_from_scores_(scores.clone(), row_max, alpha)
    exact = (entmax15 if alpha == 1.5 else sparsemax)(scores)
    reference = ref_entmax(scores, alpha)
    atol = 1e-11 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(newton.double(), reference, atol=atol, rtol=0)
    torch.testing.assert_close(newton, exact, atol=atol, rtol=0)
    # Zero mass exactly where the reference has none (no leakage onto masked keys).
    assert (newton[reference == 0] == 0).all()
    alive = torch.isfinite(row_max).squeeze(-1)
    torch.testing.assert_close(newton.sum(-1)[alive].double(),
                               torch.ones(int(alive.sum()), dtype=torch.float64),
                               atol=10 * atol, rtol=0)
    assert (newton[~alive] == 0).all()


def test_newton_threshold_is_a_lower_bound_on_the_sort_based_one():
    # Every Newton step stays left of the root: the result sits at or just below it.
    scores = _hard_rows(300, seed=3)
    alive = torch.isfinite(scores.amax(-1))
    gaps = (scores - scores.amax(-1, keepdim=True))[alive]
    theta = newton_threshold(gaps, 1.5)
    mass = (gaps - theta).clamp(min=0).square().sum(-1)
    assert (mass >= 4.0 * (1 - 1e-12)).all()
    torch.testing.assert_close(mass, torch.full_like(mass, 4.0), rtol=1e-12, atol=0)


def test_nan_scores_stay_visible():
    scores = torch.randn(3, 20, generator=torch.Generator().manual_seed(4))
    scores[1, 5] = float("nan")
    out = entmax_from_scores_(scores.clone(), scores.amax(-1, keepdim=True), 1.5)
    assert out[1].isnan().all()
    assert torch.isfinite(out[[0, 2]]).all()


def test_newton_threshold_rejects_other_alpha():
    with pytest.raises(ValueError, match="1.5 and 2"):
        newton_threshold(torch.zeros(2, 3), 1.25)


def _pair(shape, seed, *, sparse_scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(shape, generator=g, dtype=torch.float64)
    sparse = dense + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
    return dense.to(dtype), (sparse * sparse_scale).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale, eta, zeta", [(10.0, 15.0, 0.0), (10.0, 0.3, 0.0),
                                              (5.0, 0.5, 0.4), (7.0, math.inf, 1.0),
                                              (0.0, 15.0, 0.3), (-1.0, math.inf, 1.0)])
def test_dot_product_rule_equals_rescaled_rule(dtype, scale, eta, zeta):
    dense, sparse = _pair((3, 4, 50, 24), seed=5, dtype=dtype)
    sparse[0, 0, :3] = 0.0                       # ‖O_s‖ = 0 rows: Δ_∥ = 0
    fast = rule.combine_checked(dense, sparse, scale, eta, zeta)
    rescaled = rule._combine_rescaled(dense, sparse, scale, eta, zeta)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert rel_frobenius(fast, rescaled) < tol
    assert rel_frobenius(fast, ref_combine(dense, sparse, scale, eta, zeta)) < tol


@pytest.mark.parametrize("sparse_scale", [1e-25, 1e20])
def test_out_of_range_rows_take_the_rescaled_rule(monkeypatch, sparse_scale):
    dense, sparse = _pair((2, 8, 16), seed=6, sparse_scale=sparse_scale, dtype=torch.float32)
    calls = []
    real = rule._combine_rescaled
    monkeypatch.setattr(rule, "_combine_rescaled", lambda *a: calls.append(1) or real(*a))
    out = rule.combine_checked(dense, sparse, 10.0, 15.0, 0.0)
    assert calls == [1]
    assert rel_frobenius(out, ref_combine(dense, sparse, 10.0, 15.0, 0.0)) < 1e-5
    calls.clear()
    rule.combine_checked(*_pair((2, 8, 16), seed=6, dtype=torch.float32), 10.0, 15.0, 0.0)
    assert calls == []


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_each_row_is_independent_of_the_rows_beside_it(alpha):
    # Batch 1 and batch N must agree bitwise: a row's θ may not depend on how long other rows
    # of its chunk keep iterating, nor on when the working set shrinks.
    scores = _hard_rows(200, seed=7).float()
    together = entmax_from_scores_(scores.clone(), scores.amax(-1, keepdim=True), alpha)
    for i in range(scores.shape[0]):
        row = scores[i:i + 1].clone()
        alone = entmax_from_scores_(row, row.amax(-1, keepdim=True), alpha)
        assert torch.equal(alone, together[i:i + 1]), i
