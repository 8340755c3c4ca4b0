"""The step benchmarks call the model the way ComfyUI's sampler does, so that what they time
is GAG as users run it (bench/bench_dit.py's ``denoiser_step``: GAG's text mode depends on its
per-model-call wrapper, which only runs when the patcher's wrappers reach the model call)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

import tiny_models as tm
from conftest import REPO_ROOT, pack_module

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def bench_dit(comfy_path):
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_dit", REPO_ROOT / "bench" / "bench_dit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_bench_dit_step_runs_gag_as_a_sampler_would(bench_dit, mode):
    patcher = tm.tiny_flux()
    params = patcher.model.diffusion_model.params
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 8, 8, generator=g)
    context = torch.randn(1, 7, params.context_in_dim, generator=g)
    pooled = torch.randn(1, params.vec_in_dim, generator=g)
    guidance, sigma = torch.full((1,), 3.5), torch.full((1,), 0.8)
    patched = pack_module("api").apply_gag(patcher, mode=mode, readout=False)
    with torch.inference_mode():
        plain = bench_dit.denoiser_step(patcher, x, sigma, context, pooled, guidance)
        guided = bench_dit.denoiser_step(patched, x, sigma, context, pooled, guidance)
    change = float((guided - plain).norm() / plain.norm())
    assert torch.isfinite(guided).all() and change > 1e-4, change
