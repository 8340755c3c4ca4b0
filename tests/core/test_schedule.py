"""Sampling-window and ramp helpers (gag_core.schedule)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gag_core.schedule import (RAMPS, SIGMA_REL_TOL, check_window, in_sigma_window, ramp_multiplier,
                               sigma_to_percent, window_position)

EXPECTED_RAMP_VALUES = {  # position 0, 0.5, 1
    "constant": (1.0, 1.0, 1.0),
    "linear up": (0.0, 0.5, 1.0),
    "linear down": (1.0, 0.5, 0.0),
    "cosine up": (0.0, 0.5, 1.0),
    "cosine down": (1.0, 0.5, 0.0),
}


def test_every_ramp_is_tested():
    assert set(RAMPS) == set(EXPECTED_RAMP_VALUES)


@pytest.mark.parametrize("ramp", RAMPS)
def test_ramp_values(ramp):
    for position, expected in zip((0.0, 0.5, 1.0), EXPECTED_RAMP_VALUES[ramp]):
        assert ramp_multiplier(position, ramp) == pytest.approx(expected, abs=1e-15)
    # Positions outside the window are clamped to its ends.
    assert ramp_multiplier(-0.5, ramp) == ramp_multiplier(0.0, ramp)
    assert ramp_multiplier(1.5, ramp) == ramp_multiplier(1.0, ramp)


def test_ramp_shapes_between_the_fixed_points():
    assert ramp_multiplier(0.25, "linear up") == pytest.approx(0.25)
    assert ramp_multiplier(0.25, "cosine up") == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    for p in np.linspace(0, 1, 11):
        # Up and down ramps mirror each other, and every ramp stays in [0, 1].
        for kind in ("linear", "cosine"):
            total = ramp_multiplier(p, f"{kind} up") + ramp_multiplier(p, f"{kind} down")
            assert total == pytest.approx(1.0)
        for ramp in RAMPS:
            assert 0.0 <= ramp_multiplier(p, ramp) <= 1.0
    ups = [ramp_multiplier(p, "cosine up") for p in np.linspace(0, 1, 21)]
    assert ups == sorted(ups)


@pytest.mark.parametrize("ramp", ["", "Linear Up", "linear", "exp", None, 3])
def test_unknown_ramp(ramp):
    with pytest.raises(ValueError, match="ramp") as info:
        ramp_multiplier(0.5, ramp)
    assert all(name in str(info.value) for name in RAMPS)


def test_in_sigma_window_boundaries_tolerate_float32_rounding():
    sigma_start, sigma_end = 14.614642, 0.0291675  # SD's sigma_max and sigma_min
    for bound in (sigma_start, sigma_end):
        as_float32 = float(np.float32(bound))
        one_ulp_up = float(np.nextafter(np.float32(bound), np.float32(np.inf)))
        one_ulp_down = float(np.nextafter(np.float32(bound), np.float32(0)))
        for sigma in (bound, as_float32, one_ulp_up, one_ulp_down):
            assert in_sigma_window(sigma, sigma_start, sigma_end), sigma
    assert in_sigma_window(1.0, sigma_start, sigma_end)
    # Clearly outside: well past the relative tolerance on either side.
    assert not in_sigma_window(sigma_start * (1 + 10 * SIGMA_REL_TOL), sigma_start, sigma_end)
    assert not in_sigma_window(sigma_end * (1 - 10 * SIGMA_REL_TOL), sigma_start, sigma_end)
    assert not in_sigma_window(20.0, sigma_start, sigma_end)
    assert not in_sigma_window(0.01, sigma_start, sigma_end)


def test_in_sigma_window_open_ends():
    # percent 0 maps to an enormous or infinite σ in some samplings; percent 1 to σ = 0.
    assert in_sigma_window(1e9, math.inf, 0.0)
    assert in_sigma_window(0.0, math.inf, 0.0)
    assert in_sigma_window(0.0, 5.0, 0.0)
    assert not in_sigma_window(5.1, 5.0, 0.0)
    # A zero-length window holds exactly its own σ.
    assert in_sigma_window(3.0, 3.0, 3.0)
    assert not in_sigma_window(3.01, 3.0, 3.0)


@pytest.mark.parametrize("percent_to_sigma", [
    lambda p: 10.0 * (1.0 - p),                               # linear
    lambda p: 14.6 * math.exp(-6.2 * p),                      # exponential (log-linear σ)
    lambda p: (1.0 - p) / (1.0 + 2.0 * p),                    # a flow-shift-like curve
], ids=["linear", "exponential", "shifted"])
def test_sigma_to_percent_inverts_monotone_maps(percent_to_sigma):
    for percent in (0.0, 0.1, 0.25, 0.5, 0.77, 0.999):
        sigma = percent_to_sigma(percent)
        recovered = sigma_to_percent(sigma, percent_to_sigma)
        assert recovered == pytest.approx(percent, abs=1e-9)
        assert percent_to_sigma(recovered) == pytest.approx(sigma, rel=1e-8, abs=1e-9)


def test_sigma_to_percent_outside_the_map_saturates():
    linear = lambda p: 10.0 * (1.0 - p)  # noqa: E731
    assert sigma_to_percent(50.0, linear) == pytest.approx(0.0, abs=1e-9)
    assert sigma_to_percent(-1.0, linear) == pytest.approx(1.0, abs=1e-9)


def test_window_position():
    assert window_position(0.2, 0.2, 0.6) == 0.0
    assert window_position(0.4, 0.2, 0.6) == pytest.approx(0.5)
    assert window_position(0.6, 0.2, 0.6) == 1.0
    assert window_position(0.9, 0.2, 0.6) == 1.0
    assert window_position(0.5, 0.5, 0.5) == 0.0


def test_check_window_accepts_valid():
    assert check_window(0, 1) == (0.0, 1.0)
    assert check_window(0.3, 0.3) == (0.3, 0.3)
    assert all(type(x) is float for x in check_window(0, 1))


@pytest.mark.parametrize("start,end,name", [
    (-0.1, 1.0, "start_percent"),
    (1.1, 1.0, "start_percent"),
    (float("nan"), 1.0, "start_percent"),
    ("0", 1.0, "start_percent"),
    (True, 1.0, "start_percent"),
    (0.0, 1.5, "end_percent"),
    (0.0, float("nan"), "end_percent"),
    (0.0, float("inf"), "end_percent"),
    (0.0, None, "end_percent"),
])
def test_check_window_rejects_bad_values(start, end, name):
    with pytest.raises(ValueError, match=name) as info:
        check_window(start, end)
    assert "[0, 1]" in str(info.value)


def test_check_window_rejects_backwards_window():
    with pytest.raises(ValueError, match="start_percent.*end_percent") as info:
        check_window(0.8, 0.2)
    assert "0.8" in str(info.value) and "0.2" in str(info.value)
