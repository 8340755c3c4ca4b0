"""GAG on joint-attention DiTs, end to end through ComfyUI's real samplers: one tiny
random-weight model per variant of every DiT family of the table (tests/comfy/tiny_families.py;
FLUX.2 and the 2026 families from ComfyUI 0.33).

Each test samples a few steps and checks a property of the patched model against the same
model unpatched: GAG changes the result, acts exactly on the selected blocks, is exactly off
outside its schedule window, leaves the input model alone, and is per-sample (batching and the
cond/uncond split do not change it).
"""

from __future__ import annotations

import copy

import pytest
import torch

import tiny_families as tf
from conftest import import_pack, pack_module, record_guided_calls, rel_change

pytestmark = pytest.mark.comfy


def table_entry(family):
    return pack_module("families").find_family(family.patcher)


@pytest.fixture(scope="module", params=tf.keys(tf.dit_suite))
def family(request):
    import_pack()
    return tf.Tiny(request.param)


def modes_of(family, mode):
    """Skip a mode the family does not have (cross-attention families guide in text mode)."""
    entry = table_entry(family)
    if mode not in entry.modes:
        pytest.skip(f"{entry.display_name} has no {mode!r} mode (modes: {entry.modes})")
    return entry


@pytest.fixture
def gag_hits(monkeypatch, dit_hook):
    """Every attention call that ran GAG, as (layer, mode, query tokens of the call)."""
    return record_guided_calls(monkeypatch, dit_hook, lambda override, layer, call: (
        str(layer), override.mode, call.query_tokens))


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_gag_changes_the_sample(family, api, mode):
    modes_of(family, mode)
    plain = family.sample()
    guided = family.sample(api.apply_gag(family.patcher, mode=mode))
    assert torch.isfinite(guided).all()
    assert rel_change(guided, plain) > 1e-3


@pytest.mark.parametrize("mode", ["text", "joint"])
@pytest.mark.parametrize("key", tf.keys(tf.dit_smoke))
def test_gag_changes_the_sample_of_a_smoke_tested_variant(api, key, mode):
    """Variants that share their class and hooks with a sibling (FLUX.1 schnell)."""
    import_pack()
    variant = tf.Tiny(key)
    plain = variant.sample()
    assert rel_change(variant.sample(api.apply_gag(variant.patcher, mode=mode)), plain) > 1e-3


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_only_the_selected_blocks_run_gag(family, api, gag_hits, mode):
    entry = modes_of(family, mode)
    steps = 3
    patched = api.apply_gag(family.patcher, layers=family.selection, mode=mode)
    family.sample(patched, steps=steps)
    selected = sorted(item.strip() for item in family.selection.split(","))
    # A family guided on all blocks together cannot name the block of a call (None).
    expected = ["None"] if entry.all_blocks_only else selected
    assert sorted({layer for layer, _, _ in gag_hits}) == expected
    assert all(hit_mode == mode for _, hit_mode, _ in gag_hits)
    # One denoiser call per step (cond and uncond batched together), one GAG call per block.
    assert len(gag_hits) == steps * len(selected)


def test_default_preset_guides_every_block(family, api, gag_hits):
    table = pack_module("families")
    family.sample(api.apply_gag(family.patcher), steps=1)
    entry = table.find_family(family.patcher)
    every = sorted(str(ref) for ref in table.available_layers(entry, family.patcher))
    if entry.all_blocks_only:
        assert len(gag_hits) == len(every)
    else:
        assert sorted(layer for layer, _, _ in gag_hits) == every


def test_the_family_is_recognised(family):
    """The tiny model is claimed by its own table entry (not by a sibling sharing its class)."""
    assert table_entry(family).id == family.family


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
    modes_of(family, mode)
    patched = api.apply_gag(family.patcher, mode=mode)
    noise = torch.randn(family.noise_shape(2), generator=torch.Generator().manual_seed(5))
    together = family.sample(patched, noise=noise)
    apart = torch.cat([family.sample(patched, noise=noise[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(together, apart, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_cond_and_uncond_joined_equals_split(family, api, gag_hits, monkeypatch, mode):
    modes_of(family, mode)
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
    last = table_entry(family).modes[-1]
    once = api.apply_gag(family.patcher, scale=3.0, layers=family.selection, mode=last)
    twice = api.apply_gag(api.apply_gag(family.patcher, scale=12.0, mode="text"), scale=3.0,
                          layers=family.selection, mode=last)
    assert torch.equal(family.sample(twice), family.sample(once))
    assert {mode for _, mode, _ in gag_hits} == {last}
    # two samples of 2 steps, once per selected block: the first GAG left no trace
    assert len(gag_hits) == 2 * 2 * len(family.selection.split(","))
