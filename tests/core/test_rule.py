"""The GAG combination rule (gag_core.rule.gag_combine) and its parameter checks."""

from __future__ import annotations

import math

import pytest
import torch

from gag_core import check_alpha, check_guidance_params, gag_combine
from reference import ref_combine, rel_frobenius

INF = float("inf")
NAN = float("nan")


def pair(shape, seed, dtype=torch.float32, sparse_scale=1.0, dense_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(shape, generator=g, dtype=torch.float64) * dense_scale
    sparse = torch.randn(shape, generator=g, dtype=torch.float64) * sparse_scale
    return dense.to(dtype), sparse.to(dtype)


def norm(x):
    return torch.linalg.vector_norm(x.double(), dim=-1)


PARAMS = [
    (10.0, 15.0, 0.0),   # the paper's defaults
    (10.0, 15.0, 1.0),
    (10.0, 0.5, 0.0),    # a cap that binds almost everywhere
    (3.0, 2.0, 0.4),
    (0.5, INF, 0.25),
    (-2.0, 1.0, 0.7),    # negative λ moves away from the sparse output; the rule allows it
    (0.0, 15.0, 0.5),
]


@pytest.mark.parametrize("scale,eta,zeta", PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_matches_reference(scale, eta, zeta, dtype):
    dense, sparse = pair((2, 3, 40, 64), seed=hash((scale, eta, zeta)) % 1000, dtype=dtype)
    out = gag_combine(dense, sparse, scale=scale, eta=eta, zeta=zeta)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert out.shape == dense.shape
    ref = ref_combine(dense, sparse, scale, eta, zeta)  # same rounded inputs, in float64
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert rel_frobenius(out, ref) < tol


def test_pladis_limit():
    # ζ = 1 with no effective cap is PLADIS: O_s + λ(O_s − O_d).
    dense, sparse = pair((4, 8, 32), seed=1, dtype=torch.float64)
    expected = sparse + 10.0 * (sparse - dense)
    for eta in (INF, 1e30):
        out = gag_combine(dense, sparse, scale=10.0, eta=eta, zeta=1.0)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


def test_zero_scale_is_sparse_output():
    for zeta in (0.0, 0.5, 1.0):
        dense, sparse = pair((3, 16, 24), seed=2)
        out = gag_combine(dense, sparse, scale=0.0, eta=15.0, zeta=zeta)
        assert torch.equal(out, sparse)


@pytest.mark.parametrize("eta", [15.0, 0.3, INF])
def test_zeta_zero_stays_on_the_sparse_line(eta):
    dense, sparse = pair((5, 30, 48), seed=3, dtype=torch.float64, dense_scale=3.0)
    scale = 10.0
    out = gag_combine(dense, sparse, scale=scale, eta=eta, zeta=0.0)
    s_sq = (sparse * sparse).sum(-1, keepdim=True)
    c = 1.0 - (dense * sparse).sum(-1, keepdim=True) / s_sq
    g_norm = c.abs() * s_sq.sqrt()
    cap = torch.clamp(eta / g_norm, max=1.0) if math.isfinite(eta) else torch.ones_like(c)
    torch.testing.assert_close(out, (1.0 + scale * c * cap) * sparse, atol=1e-12, rtol=1e-12)
    # Parallel: no component orthogonal to O_s is left.
    along = (out * sparse).sum(-1, keepdim=True) / s_sq * sparse
    assert (norm(out - along) <= 1e-12 * norm(out)).all()
    if eta == 0.3:
        assert (cap < 1).float().mean() > 0.5  # the cap formula was exercised


def test_eta_cap_bounds_the_correction_and_binds_only_when_it_should():
    scale = 10.0
    dense, sparse = pair((8, 50, 32), seed=4, dtype=torch.float64, dense_scale=2.0)
    for zeta in (0.0, 0.3, 1.0):
        uncapped = gag_combine(dense, sparse, scale=scale, eta=INF, zeta=zeta)
        g_norm = norm(uncapped - sparse) / scale
        eta = float(g_norm.median())  # half the rows above the cap, half below
        out = gag_combine(dense, sparse, scale=scale, eta=eta, zeta=zeta)
        corr = norm(out - sparse)
        assert (corr <= scale * eta * (1 + 1e-12)).all()
        active = g_norm > eta
        inactive = g_norm < eta
        assert active.any() and inactive.any()
        # Active: the correction is rescaled to exactly λη, same direction as uncapped.
        torch.testing.assert_close(corr[active], torch.full_like(corr[active], scale * eta),
                                   rtol=1e-12, atol=0)
        cos = (((out - sparse) * (uncapped - sparse)).sum(-1) / (corr * g_norm * scale))[active]
        torch.testing.assert_close(cos, torch.ones_like(cos), rtol=1e-12, atol=1e-12)
        # Inactive: untouched.
        torch.testing.assert_close(out[inactive], uncapped[inactive], rtol=0, atol=1e-13)


def test_cap_with_known_norms():
    # O_s = (3, 0), O_d = (0, 4): Δ = (3, −4), Δ_∥ = (3, 0), Δ_⊥ = (0, −4).
    sparse = torch.tensor([[3.0, 0.0]], dtype=torch.float64)
    dense = torch.tensor([[0.0, 4.0]], dtype=torch.float64)
    # ζ = 1: ‖g‖ = 5; η = 2.5 halves it.
    out = gag_combine(dense, sparse, scale=2.0, eta=2.5, zeta=1.0)
    torch.testing.assert_close(out, torch.tensor([[6.0, -4.0]], dtype=torch.float64))  # + 2·½·(3, −4)
    # ζ = 0.5: g = (3, −2), ‖g‖ = √13 < 15: no cap.
    out = gag_combine(dense, sparse, scale=2.0, eta=15.0, zeta=0.5)
    torch.testing.assert_close(out, torch.tensor([[9.0, -4.0]], dtype=torch.float64))
    # ζ = 0: g = (3, 0); η = 1 caps it to (1, 0).
    out = gag_combine(dense, sparse, scale=2.0, eta=1.0, zeta=0.0)
    torch.testing.assert_close(out, torch.tensor([[5.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_zero_sparse_output_is_finite(dtype):
    dense, sparse = pair((4, 10, 16), seed=5, dtype=dtype)
    sparse[:, ::3] = 0  # every third query has ‖O_s‖ = 0
    for zeta in (0.0, 0.5, 1.0):
        out = gag_combine(dense, sparse, scale=10.0, eta=15.0, zeta=zeta)
        assert torch.isfinite(out).all()
        ref = ref_combine(dense, sparse, 10.0, 15.0, zeta)
        assert rel_frobenius(out, ref) < (1e-12 if dtype == torch.float64 else 1e-6)
        zero_rows = out[:, ::3]
        if zeta == 0.0:
            assert (zero_rows == 0).all()  # nothing to extrapolate along
        else:
            # g = ζΔ = −ζ O_d: only the damped orthogonal share is left.
            expected = ref[:, ::3]
            torch.testing.assert_close(zero_rows.double(), expected, atol=1e-5, rtol=1e-5)
    # Equal dense and sparse zero vectors: g = 0, output 0.
    z = torch.zeros(3, 8, dtype=dtype)
    assert (gag_combine(z, z, scale=10.0, eta=15.0, zeta=1.0) == 0).all()


def test_tiny_sparse_norm_in_float32():
    # ‖O_s‖² underflows float32 (1e-25² = 1e-50) while ‖O_s‖ itself is representable; the
    # direction of O_s is still well defined and the rule must use it.
    dense, sparse = pair((6, 20, 32), seed=6, dtype=torch.float64, sparse_scale=1e-25)
    dense32, sparse32 = dense.float(), sparse.float()
    out = gag_combine(dense32, sparse32, scale=10.0, eta=15.0, zeta=0.0)
    assert torch.isfinite(out).all()
    ref = ref_combine(dense32, sparse32, 10.0, 15.0, 0.0)
    assert rel_frobenius(out, ref) < 1e-5


def test_large_magnitudes():
    # Value vectors far beyond unit scale, up to where squaring overflows float32 (1e20² > 3.4e38):
    # the rule is scale-equivariant when the cap is off, and the cap still bounds the correction.
    dense, sparse = pair((4, 12, 64), seed=7, dtype=torch.float64)
    small = gag_combine(dense.float(), sparse.float(), scale=10.0, eta=INF, zeta=0.3)
    for factor in (1e6, 1e20):
        big_dense, big_sparse = (dense * factor).float(), (sparse * factor).float()
        big = gag_combine(big_dense, big_sparse, scale=10.0, eta=INF, zeta=0.3)
        assert rel_frobenius(big / factor, small) < 1e-6
        capped = gag_combine(big_dense, big_sparse, scale=10.0, eta=15.0 * factor, zeta=0.3)
        assert torch.isfinite(capped).all()
        ref = ref_combine(big_dense, big_sparse, 10.0, 15.0 * factor, 0.3)
        assert rel_frobenius(capped, ref) < 1e-6
        # Subtracting O_s back out of a float32 output loses ~ulp(‖O_s‖); allow that much.
        slack = 8 * torch.finfo(torch.float32).eps * norm(big_sparse)
        assert (norm(capped - big_sparse) <= 150.0 * factor * (1 + 1e-6) + slack).all()


def test_broadcast_free_shapes_and_mismatch():
    dense, sparse = pair((7,), seed=8)
    assert gag_combine(dense, sparse, scale=1.0, eta=1.0, zeta=0.0).shape == (7,)
    with pytest.raises(ValueError, match="same shape"):
        gag_combine(torch.zeros(2, 3), torch.zeros(2, 4), scale=1.0, eta=1.0, zeta=0.0)
    with pytest.raises(ValueError, match="same shape"):
        gag_combine(torch.zeros(1, 4), torch.zeros(2, 4), scale=1.0, eta=1.0, zeta=0.0)


# --- parameter checks --------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.5, 2.0000001, NAN, INF, -1.5, "1.5", None, True,
                                   torch.tensor(1.5)])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match=r"alpha") as info:
        check_alpha(alpha)
    assert "(1, 2]" in str(info.value)
    assert repr(alpha) in str(info.value)


@pytest.mark.parametrize("alpha", [1.5, 2, 2.0, 1.0001, 1.9])
def test_good_alpha(alpha):
    value = check_alpha(alpha)
    assert isinstance(value, float) and value == float(alpha)


@pytest.mark.parametrize("scale,eta,zeta,name", [
    (NAN, 15.0, 0.0, "scale"),
    (INF, 15.0, 0.0, "scale"),
    (-INF, 15.0, 0.0, "scale"),
    ("10", 15.0, 0.0, "scale"),
    (None, 15.0, 0.0, "scale"),
    (10.0, 0.0, 0.0, "eta"),
    (10.0, -1.0, 0.0, "eta"),
    (10.0, NAN, 0.0, "eta"),
    (10.0, -INF, 0.0, "eta"),
    (10.0, "15", 0.0, "eta"),
    (10.0, 15.0, -0.1, "zeta"),
    (10.0, 15.0, 1.01, "zeta"),
    (10.0, 15.0, NAN, "zeta"),
    (10.0, 15.0, INF, "zeta"),
    (10.0, 15.0, "0", "zeta"),
    (10.0, 15.0, False, "zeta"),
])
def test_bad_guidance_params(scale, eta, zeta, name):
    bad = {"scale": scale, "eta": eta, "zeta": zeta}[name]
    with pytest.raises(ValueError, match=name) as info:
        check_guidance_params(scale, eta, zeta)
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match=name):
        gag_combine(torch.zeros(2, 4), torch.ones(2, 4), scale=scale, eta=eta, zeta=zeta)


def test_good_guidance_params():
    assert check_guidance_params(10, 15, 0) == (10.0, 15.0, 0.0)
    assert check_guidance_params(-3.0, INF, 1) == (-3.0, INF, 1.0)
    assert check_guidance_params(0.0, 1e-9, 0.5) == (0.0, 1e-9, 0.5)
    assert all(type(x) is float for x in check_guidance_params(10, 15, 1))
