"""α-entmax maps (gag_core.sparse) against the float64 reference, the `entmax` package and
hand-computed values."""

from __future__ import annotations

import math

import entmax
import pytest
import torch

from gag_core import alpha_entmax, entmax15, entmax_bisect, sparsemax
from reference import ref_entmax, ref_softmax

ALPHAS = [1.5, 2.0, 1.1, 1.25, 1.75, 1.9]
NEG_INF = float("-inf")


def random_scores(shape, scale, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def assert_distribution(p: torch.Tensor, atol: float):
    assert torch.isfinite(p).all()
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1).double(), torch.ones(p.shape[:-1], dtype=torch.float64),
                               atol=atol, rtol=0)


@pytest.mark.parametrize("alpha", ALPHAS + [1.01, 1.001])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_alpha_entmax_matches_reference(alpha, dtype):
    # float32 scores go through (α−1)(z − max) and a power 1/(α−1): near α = 1 the power
    # magnifies the float32 rounding of the gap, hence the looser bound there.
    if dtype == torch.float64:
        atol = 1e-11
    else:
        atol = 2e-5 if alpha < 1.05 else 1e-6
    row_scales = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64).view(3, 1, 1)
    for n in [1, 2, 3, 17, 256, 700]:
        x = (random_scores((3, 5, n), 1.0, torch.float64, seed=n) * row_scales).to(dtype)
        p = alpha_entmax(x, alpha)
        assert p.shape == x.shape
        assert p.dtype == dtype
        torch.testing.assert_close(p.double(), ref_entmax(x, alpha), atol=atol, rtol=0)
        assert_distribution(p, atol=10 * atol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    x = random_scores((4, 6, 40), 5.0, dtype, seed=3)
    for alpha in (1.5, 2.0, 1.3):
        p = alpha_entmax(x, alpha)
        assert p.dtype == torch.float32
        # The reference sees exactly the rounded half-precision scores.
        torch.testing.assert_close(p.double(), ref_entmax(x, alpha), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_entmax_package(dtype):
    x = random_scores((8, 4, 123), 4.0, dtype, seed=11)
    x64 = x.double()
    atol = 1e-11 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(entmax15(x).double(), entmax.entmax15(x64), atol=atol, rtol=0)
    torch.testing.assert_close(sparsemax(x).double(), entmax.sparsemax(x64), atol=atol, rtol=0)
    for alpha in (1.1, 1.25, 1.75, 1.9):
        theirs = entmax.entmax_bisect(x64, alpha, n_iter=100)
        torch.testing.assert_close(entmax_bisect(x, alpha).double(), theirs, atol=atol, rtol=0)
        torch.testing.assert_close(alpha_entmax(x, alpha).double(), theirs, atol=atol, rtol=0)


def test_dispatch_uses_exact_forms_and_bisection_agrees_with_them():
    x = random_scores((16, 300), 3.0, torch.float64, seed=5)
    torch.testing.assert_close(alpha_entmax(x, 1.5), entmax15(x), atol=0, rtol=0)
    torch.testing.assert_close(alpha_entmax(x, 2.0), sparsemax(x), atol=0, rtol=0)
    torch.testing.assert_close(entmax_bisect(x, 1.5), entmax15(x), atol=1e-12, rtol=0)
    torch.testing.assert_close(entmax_bisect(x, 2.0), sparsemax(x), atol=1e-12, rtol=0)


def test_hand_computed_values():
    # sparsemax([0.5, 0, −2]): τ = (0.5 + 0 − 1)/2 = −0.25, support {0, 1}.
    torch.testing.assert_close(sparsemax(torch.tensor([0.5, 0.0, -2.0], dtype=torch.float64)),
                               torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64))
    # 1.5-entmax([1, 0]): (0.5 − τ)² + τ² = 1  ⇒  τ = (1 − √7)/4.
    tau = (1.0 - math.sqrt(7.0)) / 4.0
    expected = torch.tensor([(0.5 - tau) ** 2, tau ** 2], dtype=torch.float64)
    torch.testing.assert_close(entmax15(torch.tensor([1.0, 0.0], dtype=torch.float64)), expected)
    # A score gap of 2/(α−1) or more leaves the lower entry out for every α.
    for alpha in ALPHAS:
        gap = 2.0 / (alpha - 1.0)
        p = alpha_entmax(torch.tensor([0.0, -gap, -gap - 5.0], dtype=torch.float64), alpha)
        assert p.tolist() == [1.0, 0.0, 0.0], alpha


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_exact_zeros_where_the_reference_has_no_support(alpha):
    x = random_scores((50, 64), 3.0, torch.float32, seed=7)
    p = alpha_entmax(x, alpha)
    ref = ref_entmax(x, alpha)
    clearly_out = ref == 0
    clearly_in = ref > 1e-6
    assert clearly_out.float().mean() > 0.5  # these scores do give a sparse map
    assert (p[clearly_out] == 0).all()       # exact zeros, not tiny positives
    assert (p[clearly_in] > 0).all()


def test_sparsity_grows_with_alpha():
    x = random_scores((40, 100), 2.0, torch.float64, seed=8)
    support = [(alpha_entmax(x, a) > 0).sum().item() for a in (1.1, 1.25, 1.5, 1.75, 2.0)]
    assert support == sorted(support, reverse=True)
    assert support[0] > support[-1]


def test_alpha_near_one_approaches_softmax():
    x = random_scores((20, 50), 2.0, torch.float64, seed=9)
    soft = ref_softmax(x)
    errors = [(alpha_entmax(x, a) - soft).abs().max().item() for a in (1.5, 1.1, 1.01, 1.001)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 5e-3
    # The gap shrinks roughly in proportion to α − 1.
    assert errors[-1] < 0.2 * errors[-2]


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_neg_inf_entries_get_no_mass_and_fully_masked_rows_are_zero(alpha, dtype):
    x = random_scores((6, 30), 2.0, torch.float32, seed=10)
    dropped = torch.rand((6, 30), generator=torch.Generator().manual_seed(4)) < 0.5
    dropped[:, 0] = False
    dropped[2] = True   # a fully masked row
    dropped[4, 1:] = True  # a single surviving key
    x = x.masked_fill(dropped, NEG_INF).to(dtype)
    p = alpha_entmax(x, alpha)
    assert torch.isfinite(p).all()
    assert (p[dropped] == 0).all()
    assert (p[2] == 0).all()
    assert p[4, 0].item() == pytest.approx(1.0, abs=1e-6)
    alive = [i for i in range(6) if i != 2]
    assert_distribution(p[alive], atol=1e-5)
    torch.testing.assert_close(p.double(), ref_entmax(x, alpha), atol=1e-6, rtol=0)


def test_all_neg_inf_input_of_any_shape():
    x = torch.full((2, 3, 5), NEG_INF)
    for alpha in ALPHAS:
        p = alpha_entmax(x, alpha)
        assert p.shape == x.shape and (p == 0).all()


@pytest.mark.parametrize("alpha", ALPHAS)
def test_equal_scores_give_uniform(alpha):
    for n in (1, 2, 7, 1000):
        for value in (0.0, -3.0, 1e6):
            p = alpha_entmax(torch.full((3, n), value), alpha)
            torch.testing.assert_close(p, torch.full((3, n), 1.0 / n), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_huge_scores_stay_finite_and_exact(alpha):
    # Magnitudes where exp() overflows without the max shift and where float16 would be inf.
    for scale in (1e4, 1e5, 1e6):
        x = random_scores((10, 64), scale, torch.float32, seed=int(scale) % 97)
        x[3] = x[3, 0]  # one row of ties at a huge value
        x[5, :2] = x[5, :2].max() + 1e-3 * scale  # two near-equal maxima, far from the rest
        p = alpha_entmax(x, alpha)
        assert_distribution(p, atol=1e-5)
        torch.testing.assert_close(p.double(), ref_entmax(x, alpha), atol=1e-6, rtol=0)


def test_non_contiguous_and_leading_dims():
    base = random_scores((4, 9, 2, 33), 3.0, torch.float32, seed=12)
    x = base.transpose(1, 2)  # (4, 2, 9, 33), not contiguous
    assert not x.is_contiguous()
    for alpha in (1.5, 2.0, 1.3):
        torch.testing.assert_close(alpha_entmax(x, alpha).double(), ref_entmax(x, alpha),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("alpha", [1.0, 2.5, float("nan"), "1.5", None, 0])
def test_bad_alpha_is_rejected_by_the_maps(alpha):
    x = torch.zeros(2, 5)
    for fn in (alpha_entmax, entmax_bisect):
        with pytest.raises(ValueError, match=r"alpha .*\(1, 2\]") as info:
            fn(x, alpha)
        assert repr(alpha) in str(info.value)


def test_full_row_sort_path_gives_the_same_maps(monkeypatch):
    # Under torch.compile the maps sort whole rows instead of the top candidates; every clamped
    # entry then takes part in the threshold search and must still stay out of the support.
    x = random_scores((6, 4, 90), 8.0, torch.float32, seed=13)
    x[0, 0, 3:] = NEG_INF
    x[1, 1] = NEG_INF
    expected = {alpha: alpha_entmax(x, alpha) for alpha in (1.5, 2.0)}
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for alpha, p in expected.items():
        full = alpha_entmax(x, alpha)
        assert torch.equal(full, p)
        torch.testing.assert_close(full.double(), ref_entmax(x, alpha), atol=1e-6, rtol=0)
