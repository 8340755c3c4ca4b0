"""GAG on joint-attention DiTs, end to end through ComfyUI's real samplers: one tiny
random-weight model per supported family (FLUX.1-dev, FLUX.1-schnell, Chroma, SD3.5, Qwen-Image,
FLUX.2 dev and Klein).

Each test samples a few steps and checks a property of the patched model against the same
model unpatched: GAG changes the result, acts exactly on the selected blocks, is exactly off
outside its schedule window, leaves the input model alone, and is per-sample (batching and the
cond/uncond split do not change it).
"""

from __future__ import annotations

import copy
import importlib

import pytest
import torch

from conftest import import_pack

pytestmark = pytest.mark.comfy



@pytest.fixture(scope="module")
def api():
    import_pack()
    return importlib.import_module("comfyui_gag.nodes.api")


@pytest.fixture(scope="module")
def dit_common():
    import_pack()
    return importlib.import_module("comfyui_gag.nodes.adapters.dit_common")


@pytest.fixture(scope="module")
def tm():
    import_pack()
    import tiny_models
    return tiny_models


# FLUX.1-schnell shares FLUX.1-dev's model class and hooks; it gets the smoke test only.
# FLUX.2 dev and Klein skip where the ComfyUI has no FLUX.2 (0.3.64).
FAMILIES = ["flux", "chroma", "sd3", "qwen_image", "flux2", "flux2_klein"]


class Family:
    """A tiny model of one family with its conditioning and sampler settings."""

    def __init__(self, tm, name):
        build, conditioning, sample_kwargs, self.selection = tm.DIT_FAMILIES[name]
        self.name = name
        self.tm = tm
        self.patcher = build()
        self.conditioning = conditioning
        # 8×8 latents (16 image tokens) and 2 steps keep each run to a few tens of ms.
        self.kwargs = dict(dict(size=8, steps=2), **sample_kwargs)

    def sample(self, patcher=None, *, noise=None, **overrides):
        """One prompt (ComfyUI repeats it over a batch of noise)."""
        kwargs = dict(self.kwargs, **overrides)
        return self.tm.sample_dit(patcher or self.patcher, self.conditioning(),
                                  self.conditioning(seed=2), noise=noise, **kwargs)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tm):
    return Family(tm, request.param)


@pytest.fixture
def gag_hits(monkeypatch, dit_common):
    """Every attention call that ran GAG, as (layer, mode, query tokens of the call)."""
    hits = []
    original = dit_common.JointAttentionOverride.__call__

    def spy(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        mark = options.get(dit_common.MARK_KEY)
        before = mark.consumed if mark is not None else None
        out = original(self, func, *args, **kwargs)
        if mark is not None and mark.consumed != before:
            hits.append((str(mark.layer), mark.mode, mark.joint_tokens))
        return out

    monkeypatch.setattr(dit_common.JointAttentionOverride, "__call__", spy)
    return hits


def rel_change(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_gag_changes_the_sample(family, api, mode):
    plain = family.sample()
    guided = family.sample(api.apply_gag(family.patcher, mode=mode))
    assert torch.isfinite(guided).all()
    assert rel_change(guided, plain) > 1e-3


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_gag_changes_flux_schnell(tm, api, mode):
    schnell = Family(tm, "flux_schnell")
    plain = schnell.sample()
    assert rel_change(schnell.sample(api.apply_gag(schnell.patcher, mode=mode)), plain) > 1e-3


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_only_the_selected_blocks_run_gag(family, api, gag_hits, mode):
    steps = 3
    patched = api.apply_gag(family.patcher, layers=family.selection, mode=mode)
    family.sample(patched, steps=steps)
    selected = sorted(item.strip() for item in family.selection.split(","))
    assert sorted({layer for layer, _, _ in gag_hits}) == selected
    assert all(hit_mode == mode for _, hit_mode, _ in gag_hits)
    # One denoiser call per step (cond and uncond batched together), one GAG call per block.
    assert len(gag_hits) == steps * len(selected)


def test_default_preset_guides_every_block(family, api, gag_hits):
    adapter = importlib.import_module("comfyui_gag.nodes.adapters").find_adapter(family.patcher)
    family.sample(api.apply_gag(family.patcher), steps=1)
    every = sorted(str(ref) for ref in adapter.available_layers(family.patcher))
    assert sorted(layer for layer, _, _ in gag_hits) == every


def test_schedule_window_without_steps_is_exactly_unpatched(family, api, gag_hits):
    plain = family.sample()
    # Every sampled σ is above the σ of 99 % progress, so no step is in the window.
    patched = api.apply_gag(family.patcher, start_percent=0.99, end_percent=1.0)
    assert torch.equal(family.sample(patched), plain)
    assert gag_hits == []


def test_partial_window_guides_only_late_steps(family, api, gag_hits):
    patched = api.apply_gag(family.patcher, layers=family.selection, start_percent=0.5)
    family.sample(patched, steps=4)
    per_call = len(family.selection.split(","))
    assert 0 < len(gag_hits) < 4 * per_call and len(gag_hits) % per_call == 0


def test_input_model_is_not_mutated(family, api):
    before = family.sample()
    options_before = copy.deepcopy(family.patcher.model_options)
    patched = api.apply_gag(family.patcher, mode="text")
    family.sample(patched)
    assert family.patcher.model_options == options_before
    assert "optimized_attention_override" not in family.patcher.model_options.get(
        "transformer_options", {})
    assert torch.equal(family.sample(), before)


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_batch_equals_separate_runs(family, api, mode):
    patched = api.apply_gag(family.patcher, mode=mode)
    frames, size = family.kwargs.get("frames"), family.kwargs["size"]
    shape = (2, family.kwargs.get("channels", 16)) + ((frames,) if frames else ()) + (size, size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    together = family.sample(patched, noise=noise)
    apart = torch.cat([family.sample(patched, noise=noise[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(together, apart, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_cond_and_uncond_joined_equals_split(family, api, gag_hits, monkeypatch, mode):
    patched = api.apply_gag(family.patcher, layers=family.selection, mode=mode)
    steps, per_call = 2, len(family.selection.split(","))
    joined = family.sample(patched, steps=steps, cfg=3.0)
    assert len(gag_hits) == steps * per_call
    # calc_cond_batch batches cond with uncond only when 1.5× the model's memory estimate fits
    # in free memory; with an unbounded estimate each runs as its own model call.
    monkeypatch.setattr(patched.model, "memory_required", lambda *a, **k: float("inf"))
    gag_hits.clear()
    split = family.sample(patched, steps=steps, cfg=3.0)
    assert len(gag_hits) == 2 * steps * per_call
    torch.testing.assert_close(split, joined, atol=1e-4, rtol=1e-4)


def test_applying_gag_twice_means_the_later_settings(family, api, gag_hits):
    once = api.apply_gag(family.patcher, scale=3.0, layers=family.selection, mode="joint")
    twice = api.apply_gag(api.apply_gag(family.patcher, scale=12.0, mode="text"), scale=3.0,
                          layers=family.selection, mode="joint")
    assert torch.equal(family.sample(twice), family.sample(once))
    assert {mode for _, mode, _ in gag_hits} == {"joint"}
