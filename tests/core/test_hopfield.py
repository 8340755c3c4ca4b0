"""Pins the Hopfield study's qualitative results (bench/hopfield.py) that held for each of ten
seeds when the study was written, on a reduced grid (d = 64, N ∈ {64, 256}, 3 seeds, 16 queries
per network, 20 updates): the measured margins were wide, so these bounds leave room for other
seeds but would fail if the rule, the entmax map or the study's dynamics changed their behaviour.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hopfield.py"


@pytest.fixture(scope="module")
def hopfield():
    spec = importlib.util.spec_from_file_location("bench_hopfield", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_hopfield"] = module
    spec.loader.exec_module(module)
    # The networks are small: one thread is faster than two fighting over a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(hopfield):
    """Summaries per (seed, β, rule name), computed once for all tests."""
    cache = {}

    def get(seed, beta, rule):
        key = (seed, beta, rule.name)
        if key not in cache:
            cache[key] = hopfield.run(rule, grid(hopfield, beta, seed), STEPS)
        return cache[key]
    return get


SEEDS = (100, 101, 102)
STEPS = 20


def grid(h, beta, seed):
    return h.network_grid([beta], seeds=[seed], queries=16, dims=(64,), counts=(64, 256))


@pytest.mark.parametrize("seed", SEEDS)
def test_extrapolation_rescues_retrieval_at_low_beta(hopfield, runs, seed):
    # β = 2: dense collapses to a mixture, sparse stalls; λ = 10 (GAG or PLADIS) retrieves.
    h = hopfield
    dense, sparse = runs(seed, 2.0, h.DENSE), runs(seed, 2.0, h.SPARSE)
    guided, pladis = runs(seed, 2.0, h.gag()), runs(seed, 2.0, h.pladis(10.0))
    assert dense.success <= 0.1 and sparse.success <= 0.1
    assert guided.success >= 0.7 and pladis.success >= 0.7


@pytest.mark.parametrize("seed", SEEDS)
def test_gag_reaches_pattern_in_fewer_steps_than_sparse(hopfield, runs, seed):
    h = hopfield
    sparse, guided = runs(seed, 4.0, h.SPARSE), runs(seed, 4.0, h.gag())
    assert guided.success >= sparse.success - 0.02
    assert guided.mean_steps < sparse.mean_steps - 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_uncapped_norm_oscillates_and_binding_cap_settles_it(hopfield, runs, seed):
    h = hopfield
    free = runs(seed, 4.0, h.gag(10.0, math.inf, 0.0))
    paper = runs(seed, 4.0, h.gag(10.0, 15.0, 0.0))  # η = 15 never binds at unit norm
    capped = runs(seed, 4.0, h.gag(10.0, 0.01, 0.0, relative=True))
    assert paper.cap_active == 0.0
    assert free.settled <= 0.05 and paper.settled <= 0.05
    assert free.dir_settled >= 0.9  # ζ = 0: only the norm moves, the direction has settled
    assert capped.cap_active > 0.5 and capped.settled >= 0.95
    assert capped.success == pytest.approx(free.success, abs=0.02)


@pytest.mark.parametrize("seed", SEEDS)
def test_projection_keeps_direction_that_pladis_loses(hopfield, runs, seed):
    h = hopfield
    sparse, guided = runs(seed, 4.0, h.SPARSE), runs(seed, 4.0, h.gag())
    pladis = runs(seed, 4.0, h.pladis(10.0))
    assert guided.one_step == pytest.approx(sparse.one_step, abs=1e-9)
    assert pladis.one_step > sparse.one_step + 0.05
    assert pladis.dir_settled <= 0.1 and guided.dir_settled >= 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_discrepancy_points_at_stored_pattern(hopfield, seed):
    full, parallel = zip(*(hopfield.discrepancy_alignment(n) for n in grid(hopfield, 4.0, seed)))
    full = torch.cat(full)
    assert full.mean() > 0.8 and (full > 0).double().mean() > 0.85


def test_uncapped_rules_are_scale_equivariant_and_the_cap_is_not(hopfield):
    # The study's premise: only η depends on the pattern norm. Scaling patterns by s (β by 1/s²)
    # scales the uncapped trajectories by s exactly; a binding absolute η changes them.
    h = hopfield
    nets = h.make_networks(64, 64, [4.0], [1.0], [7], queries=8)
    big = nets.scaled(8.0)
    for rule in (h.DENSE, h.SPARSE, h.pladis(10.0), h.gag(10.0, math.inf, 0.5)):
        small_state, big_state = nets.queries, big.queries
        for _ in range(5):
            small_state = h.combine(rule, *h.retrievals(small_state, nets), nets)
            big_state = h.combine(rule, *h.retrievals(big_state, big), big)
        torch.testing.assert_close(big_state, 8.0 * small_state, rtol=1e-9, atol=1e-9)
    capped = h.gag(10.0, 0.05, 0.0)
    small_out = h.combine(capped, *h.retrievals(nets.queries, nets), nets)
    big_out = h.combine(capped, *h.retrievals(big.queries, big), big)
    assert not torch.allclose(big_out, 8.0 * small_out, rtol=1e-3)


def test_bad_network_arguments_raise(hopfield):
    with pytest.raises(ValueError, match="dim"):
        hopfield.make_networks(1, 8, [4.0], [1.0], [0])
