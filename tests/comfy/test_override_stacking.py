"""GAG is never silently off next to anything else that owns the attention override (issue 24).

* Order-free stacking: ComfyUI's own ModelAttentionBackend node writes the same
  ``optimized_attention_override`` key as GAG; with GAG re-chained on top at every model call,
  GAG guides in either node order, with the backend's attention as its dense path. Every DiT
  variant of the registry, text and joint mode.
* The audit of every guided model call: an override that takes GAG's calls without handing
  them on (a third-party stand-in defined here) stops sampling with an error naming its
  function; ComfyUI's SkipLayerGuidanceDiT, whose skip pass runs blocks without their
  attention, is an explained shortfall and sampling goes on.
* A stand-in of BlockSparseAttention's way of installing (on top of any override at every
  ON_PREPARE_STATE, taking the self-attention calls it wants): GAG still guides every block.
* ComfyUI's FluxKVCache: from the second step the keys outnumber the queries (cached reference
  tokens); GAG guides those calls too and the readout counts every step.
* Models wrapped by Nunchaku are refused with a message naming Nunchaku.
"""

from __future__ import annotations

import importlib
import logging

import pytest
import torch

import tiny_families as tf
from conftest import import_pack

pytestmark = pytest.mark.comfy

# Every DiT variant of the registry, the video families (which have their own suite) included,
# less LTX-2: its latent is a list of streams (video, audio) that only tiny_video's sampler
# builds; its video cross-attention goes through the same override as LTX-Video's, run here.
DITS = tf.keys(lambda recipe, variant: recipe.hook == "joint" and variant.suite
               and recipe.family != "ltx2")


@pytest.fixture(scope="module")
def api():
    import_pack()
    return importlib.import_module("comfyui_gag.nodes.api")


@pytest.fixture(scope="module")
def dit_hook():
    import_pack()
    return importlib.import_module("comfyui_gag.nodes.adapters.dit_hook")


@pytest.fixture
def guided(monkeypatch, dit_hook):
    """(layer, query tokens, key tokens) of every attention call GAG guides."""
    hits = []
    original = dit_hook.JointAttentionOverride.guide

    def spy(self, layer, call, *args):
        hits.append((str(layer), call.query_tokens, call.key_tokens))
        return original(self, layer, call, *args)

    monkeypatch.setattr(dit_hook.JointAttentionOverride, "guide", spy)
    return hits


def rel_change(a, b):
    return float((a - b).norm() / b.norm())


def mode_or_skip(model, mode):
    entry = importlib.import_module("comfyui_gag.nodes.adapters").find_family(model.patcher)
    if mode not in entry.modes:
        pytest.skip(f"{entry.display_name} has no {mode!r} mode (modes: {entry.modes})")


def core_node(module: str, name: str):
    import_pack()
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        found = None
    if found is None:
        pytest.skip(f"this ComfyUI has no core {name} node ({module})")
    return found


def backends():
    """What ModelAttentionBackend offers on this machine ("pytorch attention"; "comfy kitchen
    attention" where comfy-kitchen's int8 attention runs)."""
    try:
        import_pack()
        from comfy_extras.nodes_model_advanced import ModelAttentionBackend
    except Exception:  # ComfyUI 0.3.64 has no such node; the tests skip there
        return ["pytorch attention"]
    return list(ModelAttentionBackend.INPUT_TYPES()["required"]["attention"][0])


def with_backend(patcher, attention):
    node = core_node("comfy_extras.nodes_model_advanced", "ModelAttentionBackend")
    return node().patch(patcher, attention)[0]


# --- order-free stacking with ModelAttentionBackend -----------------------------------------------

@pytest.mark.parametrize("attention", backends())
@pytest.mark.parametrize("mode", ["text", "joint"])
@pytest.mark.parametrize("key", DITS)
def test_gag_guides_before_and_after_model_attention_backend(api, guided, key, mode, attention):
    model = tf.Tiny(key)
    mode_or_skip(model, mode)
    plain = model.sample()
    gag = model.sample(api.apply_gag(model.patcher, mode=mode))
    alone = len(guided)
    assert alone > 0
    orders = {
        "backend → GAG": api.apply_gag(with_backend(model.patcher, attention), mode=mode),
        "GAG → backend": with_backend(api.apply_gag(model.patcher, mode=mode), attention),
    }
    for order, patched in orders.items():
        del guided[:]
        out = model.sample(patched)
        assert len(guided) == alone, f"{order}: GAG guided {len(guided)} calls, alone {alone}"
        # The backend's attention is GAG's dense path: the same sample up to rounding.
        assert rel_change(out, plain) > 1e-3, f"{order}: GAG did not act"
        assert rel_change(out, gag) < 1e-3, f"{order}: {rel_change(out, gag)}"


def test_the_backend_override_is_named_as_the_core_node():
    import_pack()
    diagnose = importlib.import_module("comfyui_gag.nodes.adapters.diagnose")
    patched = with_backend(tf.Tiny("flux-dev").patcher, "pytorch attention")
    override = patched.model_options["transformer_options"]["optimized_attention_override"]
    assert "ModelAttentionBackend" in diagnose.describe_override(override)


# --- the audit --------------------------------------------------------------------------------------

def takes_attention_without_gag(func, *args, **kwargs):
    """A third-party pack's override that computes attention itself and never calls the
    override it replaced."""
    return func(*args, **kwargs)


def install_inside_each_model_call(executor, *args, **kwargs):
    """How the stand-in pack installs it: per model call, from its own model wrapper."""
    options = kwargs.get("transformer_options") or [a for a in args if isinstance(a, dict)][-1]
    options["optimized_attention_override"] = takes_attention_without_gag
    return executor(*args, **kwargs)


def with_swallowing_pack(patcher):
    from comfy.patcher_extension import WrappersMP
    patched = patcher.clone()
    patched.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "stand_in_pack",
                                 install_inside_each_model_call)
    return patched


@pytest.mark.parametrize("key", ["flux-dev", "qwen_image", "zimage"])
def test_an_override_that_takes_gags_calls_stops_sampling_with_its_name(api, guided, key):
    """Installed inside the model call, after GAG's model-call wrapper, the stand-in sits above
    GAG and takes every call: sampling stops naming its function. Where GAG reaches the blocks
    through 'dit' replaces (ComfyUI 0.3.64), those re-chain GAG on top inside each block, so
    GAG guides there instead. Either way GAG is never silently off."""
    compat = importlib.import_module("comfyui_gag.nodes.adapters.comfy_compat")
    model = tf.Tiny(key)
    plain = model.sample(with_swallowing_pack(model.patcher))
    patched = with_swallowing_pack(api.apply_gag(model.patcher))
    if compat.model_sets_block_info(model.patcher.model.diffusion_model):
        with pytest.raises(RuntimeError, match=r"takes_attention_without_gag in "
                                               r".*test_override_stacking\.py.*Apply GAG Model "
                                               r"Patch after"):
            model.sample(patched)
    else:
        assert rel_change(model.sample(patched), plain) > 1e-3 and guided
    # Applied in the other order, GAG is re-chained above it and guides every block.
    del guided[:]
    out = model.sample(api.apply_gag(with_swallowing_pack(model.patcher)))
    assert guided and rel_change(out, plain) > 1e-3


def test_an_override_set_on_the_model_after_gag_becomes_gags_dense_path(api, guided):
    """Most packs write the key on the model (as ModelAttentionBackend does); applied after
    GAG, GAG still guides every block it guided alone."""
    model = tf.Tiny("flux-dev")
    model.sample(api.apply_gag(model.patcher))
    alone, guided[:] = len(guided), []
    patched = api.apply_gag(model.patcher).clone()
    patched.model_options["transformer_options"]["optimized_attention_override"] = (
        takes_attention_without_gag)
    model.sample(patched)
    assert len(guided) == alone > 0


def test_skip_layer_guidance_is_an_explained_shortfall(api, guided, caplog):
    """ComfyUI's SkipLayerGuidanceDiT runs an extra model call whose chosen blocks are skipped
    by 'dit' replaces: GAG logs it once and sampling goes on."""
    node = core_node("comfy_extras.nodes_slg", "SkipLayerGuidanceDiT")
    model = tf.Tiny("flux-dev")
    slg = node.execute(api.apply_gag(model.patcher), scale=3.0, start_percent=0.0,
                       end_percent=1.0, double_layers="1", single_layers="")
    with caplog.at_level(logging.WARNING, logger="comfyui_gag"):
        out = model.sample(slg.result[0], cfg=2.0)
    assert torch.isfinite(out).all() and guided
    assert any("double 1" in r.getMessage() and "accepts" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


# --- a stand-in of BlockSparseAttention's installation ----------------------------------------

class SparseLike:
    """Installs itself as BlockSparseAttention does (newest ComfyUI; not in 0.33): on top of
    whatever override is on the model, at patch time and again at every ON_PREPARE_STATE; it
    computes the self-attention calls (as many keys as queries) itself and hands the rest to
    the override below it."""

    def __init__(self):
        self.installed, self.taken = set(), 0

    def make(self, previous):
        def sparse_like_override(func, q, k, v, heads, **kwargs):
            if q.shape == k.shape:
                self.taken += 1
                return func(q, k, v, heads, **kwargs)
            return previous(func, q, k, v, heads, **kwargs) if previous else func(
                q, k, v, heads, **kwargs)
        return sparse_like_override

    def install(self, options):
        current = options.get("optimized_attention_override")
        if current in self.installed:
            return
        override = self.make(current)
        self.installed.add(override)
        options["optimized_attention_override"] = override

    def apply(self, patcher):
        import inspect
        from comfy.patcher_extension import CallbacksMP
        if "model_options" not in inspect.signature(type(patcher).prepare_state).parameters:
            pytest.skip("this ComfyUI's ON_PREPARE_STATE callbacks get no model_options (0.3.64): "
                        "the way BlockSparseAttention re-installs itself does not exist here")
        patched = patcher.clone()
        self.install(patched.model_options["transformer_options"])
        patched.add_callback_with_key(CallbacksMP.ON_PREPARE_STATE, "sparse_like",
                                      lambda p, t, options: self.install(
                                          options["transformer_options"]))
        return patched


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_gag_guides_every_block_under_a_sparse_attention_node_in_either_order(api, guided, mode):
    model = tf.Tiny("flux-dev")
    model.sample(api.apply_gag(model.patcher, mode=mode))
    alone = len(guided)
    for order in ("sparse → GAG", "GAG → sparse"):
        sparse, guided[:] = SparseLike(), []
        patched = (api.apply_gag(sparse.apply(model.patcher), mode=mode)
                   if order == "sparse → GAG" else
                   sparse.apply(api.apply_gag(model.patcher, mode=mode)))
        model.sample(patched)
        assert len(guided) == alone, order
        assert sparse.taken > 0, f"{order}: the sparse stand-in computed GAG's dense path"


# --- FluxKVCache --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["text", "joint"])
@pytest.mark.parametrize("order", ["cache → GAG", "GAG → cache"])
def test_gag_guides_every_step_of_a_flux_kv_cache_edit(api, guided, mode, order):
    node = core_node("comfy_extras.nodes_flux", "FluxKVCache")
    model = tf.Tiny("flux2-klein")
    readout = importlib.import_module("comfyui_gag.nodes.gain_readout")
    steps, size = 3, model.variant.size
    positive = model.conditioning(seed=1)
    g = torch.Generator().manual_seed(5)
    reference = torch.randn(model.noise_shape(1, size), generator=g)
    positive[0][1]["reference_latents"] = [reference]
    cache = lambda patcher: node.execute(patcher).result[0]
    patched = (api.apply_gag(cache(model.patcher), mode=mode) if order == "cache → GAG"
               else cache(api.apply_gag(model.patcher, mode=mode)))
    out = model.sample(patched, positive=positive, negative=positive, steps=steps)
    assert torch.isfinite(out).all()
    layers = {layer for layer, _, _ in guided}
    assert len(guided) == steps * len(layers)
    # From the second step the cached reference keys follow the current tokens.
    first, later = guided[:len(layers)], guided[len(layers):]
    assert all(keys == queries for _, queries, keys in first)
    assert later and all(keys > queries for _, queries, keys in later)
    result = readout.last_readout(patched)
    assert result is not None and len(result.steps) == steps


# --- Nunchaku -------------------------------------------------------------------------------------

def as_nunchaku(patcher, module="ComfyUI-nunchaku.wrappers.stand_in"):
    """The diffusion model's class as Nunchaku's ports ship it: a subclass from the pack."""
    diffusion = patcher.model.diffusion_model
    base = type(diffusion)
    diffusion.__class__ = type("Nunchaku" + base.__name__, (base,), {"__module__": module})
    return patcher


@pytest.mark.parametrize("key", ["flux-dev", "qwen_image"])
def test_nunchaku_models_are_refused_by_name(api, key):
    model = tf.Tiny(key)
    with pytest.raises(ValueError, match=r"Nunchaku .*(fused CUDA kernels|without "
                                         r"transformer_options)"):
        api.apply_gag(as_nunchaku(model.patcher))


def test_a_model_nunchaku_wraps_in_its_own_module_is_refused_by_name(api):
    """Nunchaku's FLUX.1 is not ComfyUI's Flux class at all: still named, not 'unsupported'."""
    model = tf.Tiny("flux-dev")
    wrapper_class = type("ComfyFluxWrapper", (torch.nn.Module,),
                         {"__module__": "nunchaku.comfy_wrappers"})
    wrapper = wrapper_class()
    wrapper.inner = torch.nn.Linear(2, 2)
    model.patcher.model.diffusion_model = wrapper
    with pytest.raises(ValueError, match=r"GAG cannot guide this Nunchaku model "
                                         r"\(ComfyFluxWrapper"):
        api.apply_gag(model.patcher)


def test_nunchakus_z_image_passes_transformer_options_and_is_guided(api, guided):
    model = tf.Tiny("zimage")
    model.sample(api.apply_gag(as_nunchaku(model.patcher)))
    assert guided


# --- one guided pass per call ---------------------------------------------------------------------

def test_gag_applied_again_around_a_chaining_pack_guides_each_call_once(api, guided):
    """GAG → a pack whose override hands every call to the one below it → GAG again: the
    second GAG cannot unwind the first (it is below the pack's override), so both are in the
    chain; the call is guided once, by the GAG on top, and the result equals GAG applied once
    under the pack."""
    model = tf.Tiny("flux-dev")

    def chaining_pack(patcher):
        patched = patcher.clone()
        options = patched.model_options["transformer_options"]
        below = options.get("optimized_attention_override")

        def passes_calls_down(func, *args, **kwargs):
            return below(func, *args, **kwargs) if below else func(*args, **kwargs)

        options["optimized_attention_override"] = passes_calls_down
        return patched

    once = model.sample(api.apply_gag(chaining_pack(model.patcher)))
    alone, guided[:] = len(guided), []
    twice = model.sample(api.apply_gag(chaining_pack(api.apply_gag(model.patcher))))
    assert len(guided) == alone > 0
    assert rel_change(twice, once) < 1e-5


# The FLUX.2 [klein] KV edit template's own graph, through /prompt: test_template_kv_edit.py.
