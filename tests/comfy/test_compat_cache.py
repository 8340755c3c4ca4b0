"""GAG with the step caches users add to FLUX, through ComfyUI's real samplers.

* ComfyUI's own EasyCache and LazyCache (both ComfyUI versions): in either order nothing
  raises, the cache really skips steps, GAG acts on top of it, and the order does not matter.
* TeaCache and First Block Cache (Comfy-WaveSpeed), the real packs from $GAG_PEER_PACKS_DIR:
  they replace FLUX's ``forward_orig`` with their own copy, which calls the blocks without
  ``transformer_options``, so GAG cannot reach the attention. Sampling must fail with an error
  that names the cache pack and points to EasyCache, not with advice to update ComfyUI. Where a
  pack does not run on this ComfyUI by itself, the test skips and says so.
* First Block Cache on an SDXL UNet keeps ComfyUI's transformer_options: GAG acts there.
"""

from __future__ import annotations

import importlib
import logging
import re

import pytest
import torch

import peer_packs
import tiny_models as tm

STEPS = 6   # enough steps for the caches to skip some
SIZE = 16


@pytest.fixture(scope="module")
def gag(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.api")


@pytest.fixture(scope="module")
def flux(pack):
    return tm.tiny_flux(), tm.flux_conditioning(seed=1), tm.flux_conditioning(seed=2)


@pytest.fixture(scope="module")
def sdxl(pack):
    return tm.tiny_sdxl(), tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2)


def sample_flux(flux, patcher, steps=STEPS):
    _, pos, neg = flux
    return tm.sample_dit(patcher, pos, neg, steps=steps, cfg=1.0, size=SIZE)


def sample_sdxl(sdxl, patcher, steps=STEPS):
    _, pos, neg = sdxl
    return tm.sample(patcher, pos, neg, steps=steps, cfg=5.0, size=SIZE)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def node_output(result):
    return result.result[0] if hasattr(result, "result") else result[0]


# ------------------------------------------------------------------------------------------
# ComfyUI's EasyCache / LazyCache
# ------------------------------------------------------------------------------------------

def comfy_cache(name):
    """apply(model) → model for ComfyUI's cache node ``name``, or skip where this ComfyUI has
    none. The threshold is high enough that the tiny model's steps get reused."""
    module = importlib.import_module("comfy_extras.nodes_easycache")
    node = getattr(module, f"{name}Node", None)
    if node is None:
        pytest.skip(f"this ComfyUI has no {name} node")
    return lambda m: node_output(node.execute(m, 1.0, 0.0, 1.0, False))


def skipped_steps(caplog, name) -> int:
    """Steps the cache reported as reused in the sampling run just logged."""
    found = [int(m.group(1)) for r in caplog.records
             for m in [re.search(rf"{name} - skipped (\d+)/", r.getMessage())] if m]
    assert found, f"{name} logged no summary; it did not run"
    return found[-1]


@pytest.mark.parametrize("name", ["EasyCache", "LazyCache"])
@pytest.mark.parametrize("mode", ["text", "joint"])
def test_comfy_step_cache_stacks_with_gag_in_either_order(gag, flux, caplog, name, mode):
    caplog.set_level(logging.INFO)
    cache = comfy_cache(name)
    model = flux[0]
    alone_cache = sample_flux(flux, cache(model))
    assert skipped_steps(caplog, name) > 0, f"{name} reused no step; the test checks nothing"
    # λ 3 (the readout study's range): at λ 10 joint mode moves the tiny model's output so much
    # between steps that EasyCache's threshold reuses none of them.
    alone_gag = sample_flux(flux, gag.apply_gag(model, mode=mode, scale=3.0))
    caplog.clear()
    gag_then_cache = sample_flux(flux, cache(gag.apply_gag(model, mode=mode, scale=3.0)))
    assert skipped_steps(caplog, name) > 0, f"{name} skipped no step with GAG on"
    cache_then_gag = sample_flux(flux, gag.apply_gag(cache(model), mode=mode, scale=3.0))
    for what, out in (("GAG→cache", gag_then_cache), ("cache→GAG", cache_then_gag)):
        assert torch.isfinite(out).all(), f"{name} {what}: not finite"
    assert torch.equal(gag_then_cache, cache_then_gag), \
        f"{name}: order matters ({rel(gag_then_cache, cache_then_gag):.3g})"
    assert rel(gag_then_cache, alone_cache) > 1e-4, f"GAG had no effect under {name}"
    assert rel(gag_then_cache, alone_gag) > 1e-4, f"{name} had no effect under GAG"


# ------------------------------------------------------------------------------------------
# TeaCache and First Block Cache (peer packs)
# ------------------------------------------------------------------------------------------

def teacache():
    # The pack's __init__ also loads its CogVideoX nodes, which need diffusers; the TeaCache
    # node lives in nodes.py on its own.
    nodes = peer_packs.import_pack_module("ComfyUI-TeaCache", "nodes", run_init=False)
    return lambda m: nodes.TeaCache().apply_teacache(m, "flux", 0.4, 0.0, 1.0, "cpu")[0]


def fbcache():
    # The pack's __init__ also loads its compile/quantize nodes; FBCache is fbcache_nodes.py.
    nodes = peer_packs.import_pack_module("Comfy-WaveSpeed", "fbcache_nodes", run_init=False)
    return lambda m: nodes.ApplyFBCacheOnModel().patch(m, "diffusion_model", 0.12)[0]


PEER_CACHES = {"TeaCache": (teacache, "TeaCache"),
               "FBCache": (fbcache, "First Block Cache")}


def peer_cache_or_skip(name, run_alone):
    """The pack's apply function, after checking that the pack samples on its own here."""
    make, _ = PEER_CACHES[name]
    apply = make()
    try:
        out = run_alone(apply)
    except Exception as error:
        pytest.skip(f"{name} itself fails on this ComfyUI: {type(error).__name__}: {error}")
    assert torch.isfinite(out).all()
    return apply


@pytest.mark.parametrize("name", ["TeaCache", "FBCache"])
@pytest.mark.parametrize("mode", ["text", "joint"])
@pytest.mark.parametrize("order", ["gag_first", "cache_first"])
def test_forward_replacing_cache_fails_naming_the_cache(gag, flux, name, mode, order):
    model = flux[0]
    cache = peer_cache_or_skip(name, lambda apply: sample_flux(flux, apply(model)))
    stacked = (cache(gag.apply_gag(model, mode=mode)) if order == "gag_first"
               else gag.apply_gag(cache(model), mode=mode))
    with pytest.raises(RuntimeError) as caught:
        sample_flux(flux, stacked)
    message = str(caught.value)
    assert PEER_CACHES[name][1] in message, message
    assert "EasyCache" in message, message
    assert "Update ComfyUI" not in message, message
    assert re.search(r"(double|single) \d", message), f"the message names no block: {message}"


def test_fbcache_on_a_unet_keeps_gag_working(gag, sdxl):
    """On UNets First Block Cache runs its own copy of the UNet's forward, which still hands
    transformer_options to every block: GAG acts, in either order."""
    model = sdxl[0]
    cache = peer_cache_or_skip("FBCache", lambda apply: sample_sdxl(sdxl, apply(model)))
    alone_cache = sample_sdxl(sdxl, cache(model))
    gag_then_cache = sample_sdxl(sdxl, cache(gag.apply_gag(model)))
    cache_then_gag = sample_sdxl(sdxl, gag.apply_gag(cache(model)))
    assert torch.isfinite(gag_then_cache).all()
    assert torch.equal(gag_then_cache, cache_then_gag)
    assert rel(gag_then_cache, alone_cache) > 1e-4, "GAG had no effect under First Block Cache"


# ------------------------------------------------------------------------------------------
# The diagnosis itself (nodes/adapters/diagnose.py)
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def diagnose(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.adapters.diagnose")


def test_block_called_by_comfyui_itself_blames_the_comfyui_version(diagnose, flux):
    """When ComfyUI's own forward called the block replace without options, the version is the
    cause: the message keeps the advice to update ComfyUI and names no other node."""
    from comfy.ldm.flux.model import Flux
    message = diagnose.missing_options_message("double 0", {"original_block": Flux.forward_orig},
                                               flux[0].model.diffusion_model)
    assert "Update ComfyUI" in message and "another node" not in message, message


def test_model_call_cause_names_the_cache_during_the_model_call(diagnose, flux):
    """The check after a model call (a DIFFUSION_MODEL wrapper) finds the forward a step cache
    put in place for that call, and the cache's model wrapper on the ModelPatcher."""
    import comfy.patcher_extension
    model = flux[0]
    cache = peer_cache_or_skip("TeaCache", lambda apply: sample_flux(flux, apply(model), steps=2))
    cached = cache(model)
    assert "TeaCache" in diagnose.model_call_cause(cached)
    assert diagnose.model_call_cause(model) is None
    seen = []

    def probe(executor, *args, **kwargs):
        seen.append(diagnose.model_call_cause(executor.class_obj))
        return executor(*args, **kwargs)

    cached.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "probe", probe)
    sample_flux(flux, cached, steps=2)
    assert seen and all("forward_orig replaced by teacache_flux_forward" in s for s in seen), seen
    assert diagnose.model_call_cause(model.model.diffusion_model) is None  # restored after
