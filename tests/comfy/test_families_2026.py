"""What ComfyUI 0.33 hands to attention in the image families new since 0.3.64, pinned on tiny
random-weight models through its real samplers (the recipes of tests/comfy/tiny_families.py).

These are the facts a GAG hook for Z-Image, Lumina 2, Krea2, HunyuanImage 2.1, HiDream,
Kandinsky 5 Image, Chroma Radiance and LongCat-Image relies on: which ComfyUI class detection
picks for the released checkpoints, the q/k/v layout and keywords each attention call gets, what
``transformer_options`` says about the block (``block_type``, ``block_index``, ``total_blocks``,
``img_slice``) — including the refiner and text layers that run before any block is marked —
where the text tokens sit and how long they are, and which families take ``dit`` block replaces
(checked against what the family table says). That every attention call receives the
transformer_options and a pass-through override changes nothing is checked for every DiT of the
registry.

A spy ``optimized_attention_override`` records every call and returns ComfyUI's own result. The
module skips on ComfyUI older than 0.33 (no block marks; most classes missing) and per family
where the class is missing.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

import tiny_families as tf
from conftest import import_comfy

pytestmark = pytest.mark.comfy

# The families whose released checkpoints the registry describes (the 2026 families).
RELEASED = tf.keys(lambda recipe, variant: recipe.full_size is not None and variant is recipe.main)


def _comfy_version(path):
    text = (path / "comfyui_version.py").read_text()
    match = re.search(r'__version__\s*=\s*"(\d+)\.(\d+)\.(\d+)"', text)
    return tuple(int(x) for x in match.groups()) if match else (0, 0, 0)


@pytest.fixture(scope="module", autouse=True)
def comfyui_033():
    path = import_comfy()
    version = _comfy_version(path)
    if version < (0, 33, 0):
        pytest.skip(f"ComfyUI {'.'.join(map(str, version))} at {path}: these tests pin ComfyUI "
                    "0.33's attention facts (block_type/block_index/img_slice in "
                    "transformer_options, the 2026 model classes); older versions set neither")


_TINY = {}


@pytest.fixture(scope="module", autouse=True)
def _drop_models():
    """Release the shared tiny models with the module (a ModelPatcher left for interpreter exit
    complains in its __del__)."""
    yield
    _TINY.clear()


def tiny(key):
    """One tiny model per variant for the whole module (building is the slow part); skips where
    this ComfyUI lacks the variant's class."""
    if key not in _TINY:
        _TINY[key] = tf.Tiny(key)
    return _TINY[key]


def config(key):
    return tf.find(key)[1].config


# ---------------------------------------------------------------------------------------------
# the spy
# ---------------------------------------------------------------------------------------------

BLOCK_KEYS = ("block_type", "block_index", "total_blocks", "img_slice")


class AttentionSpy:
    """An ``optimized_attention_override`` that records what each call receives and returns the
    default attention's result unchanged."""

    def __init__(self):
        self.calls = []

    def __call__(self, func, *args, **kwargs):
        q, k, v = args[:3]
        heads = args[3] if len(args) > 3 else kwargs.get("heads")
        options = kwargs.get("transformer_options") or {}
        self.calls.append(dict(
            q=tuple(q.shape), k=tuple(k.shape), v=tuple(v.shape), heads=heads,
            heads_keyword="heads" in kwargs,
            skip_reshape=bool(kwargs.get("skip_reshape", False)),
            mask=kwargs.get("mask"),
            has_scale="scale" in kwargs, has_enable_gqa="enable_gqa" in kwargs,
            has_options="transformer_options" in kwargs,
            mark=options.get("gag_test_mark"),
            **{key: _copy(options[key]) for key in BLOCK_KEYS if key in options}))
        return func(*args, **kwargs)


def _copy(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def record(name, *, steps=2, cfg=2.0, size=None, patch=None, **cond_kwargs):
    """Sample with the spy installed; returns (calls, result). ``cfg`` > 1 so cond and uncond run,
    batched into one model call per step on these tiny models."""
    model = tiny(name)
    patcher = model.patcher.clone()
    spy = AttentionSpy()
    options = patcher.model_options.setdefault("transformer_options", {})
    options["optimized_attention_override"] = spy
    if patch is not None:
        patch(patcher)
    out = model.sample(patcher, steps=steps, cfg=cfg, size=size, cond=cond_kwargs)
    return spy.calls, out


def per_model_call(calls, steps):
    """Split the record into ``steps`` equal model calls (one per step here); check they match."""
    assert len(calls) % steps == 0, f"{len(calls)} calls do not split into {steps} model calls"
    n = len(calls) // steps
    chunks = [calls[i * n:(i + 1) * n] for i in range(steps)]
    shapes = [[(c["q"], c["k"], c.get("block_index")) for c in chunk] for chunk in chunks]
    assert all(s == shapes[0] for s in shapes), "model calls differ in their attention calls"
    return chunks


def marked(call):
    return any(key in call for key in BLOCK_KEYS)


def assert_bhld(call, heads, length, kv_length=None):
    """(B, H, L, D) with skip_reshape, every head of k/v present (no GQA left to the kernel)."""
    assert call["skip_reshape"]
    assert call["q"][1] == heads and call["q"][2] == length, call
    assert call["k"][1] == heads and call["v"][1] == heads, call
    assert call["k"][2] == (kv_length if kv_length is not None else length), call
    assert not call["has_enable_gqa"] and not call["has_scale"]


# ---------------------------------------------------------------------------------------------
# detection: the released checkpoints' keys and shapes pick the family's class
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RELEASED)
def test_released_checkpoint_is_detected_as_its_family(name):
    """Full-size key names and shapes (meta tensors) through comfy.model_detection pick the
    family's own class, not its sibling (Z-Image vs Lumina 2 differ only by dim 3840 vs 2304;
    LongCat vs FLUX by context 3584 without a pooled vector; Chroma Radiance vs Chroma by the
    NeRF head; Kandinsky 5 Image vs the video model by model_dim 2560)."""
    tf.skip_unavailable(name)
    recipe, variant = tf.find(name)
    tf.detect_released(tf.full_size_state_dict(name), variant.comfy_class, recipe.detected)


# ---------------------------------------------------------------------------------------------
# sampling works, and a pass-through override changes nothing
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", tf.keys(tf.dit_suite))
def test_samples_and_a_pass_through_override_is_exact(name):
    """Every DiT of the registry: each attention call gets the transformer_options (where GAG
    reads its block), and an override that returns ComfyUI's result changes nothing."""
    model = tiny(name)
    plain = model.sample(steps=2, cfg=2.0)
    calls, spied = record(name, steps=2, cfg=2.0)
    assert torch.isfinite(plain).all()
    assert plain.shape == model.noise_shape(1)
    assert calls, "the override was never called"
    assert all(c["has_options"] for c in calls)
    assert torch.equal(plain, spied)


# ---------------------------------------------------------------------------------------------
# what attention receives, family by family
# ---------------------------------------------------------------------------------------------

def test_zimage_attention():
    """Caption refiner (caption only), noise refiner (image only), then the main layers on
    [caption padded to 32·k | image padded to 32·k]; only the main layers are marked, and the
    refiners are unmarked in every step (no stale marks from the step before)."""
    steps, tokens = 2, 40
    calls, _ = record("zimage", steps=steps, tokens=tokens)
    cfg = config("zimage")
    heads, layers, refiners = cfg["n_heads"], cfg["n_layers"], cfg["n_refiner_layers"]
    cap = math.ceil(tokens / 32) * 32                       # 64
    img = (8 // 2) ** 2                                     # 16 image tokens (8×8 latent, patch 2)
    img_padded = math.ceil(img / 32) * 32                   # 32: pad tokens at the END
    for chunk in per_model_call(calls, steps):
        assert len(chunk) == 2 * refiners + layers
        for call in chunk[:refiners]:                       # context_refiner
            assert_bhld(call, heads, cap)
            assert not marked(call)
        for call in chunk[refiners:2 * refiners]:           # noise_refiner
            assert_bhld(call, heads, img_padded)
            assert not marked(call)
        for i, call in enumerate(chunk[2 * refiners:]):
            assert_bhld(call, heads, cap + img_padded)
            assert call["mask"] is None
            assert call["block_type"] == "double" and call["block_index"] == i
            assert call["total_blocks"] == layers
            assert "img_slice" not in call                  # text length: pad32(context length)


def test_lumina2_attention():
    """Like Z-Image without padding; GQA (4 query heads, 2 KV heads) is expanded before the
    call, so k and v arrive with every head."""
    steps, tokens = 2, 7
    calls, _ = record("lumina2", steps=steps, tokens=tokens)
    cfg = config("lumina2")
    heads, layers, refiners = cfg["n_heads"], cfg["n_layers"], cfg["n_refiner_layers"]
    assert cfg["n_kv_heads"] < heads
    img = 16
    for chunk in per_model_call(calls, steps):
        assert len(chunk) == 2 * refiners + layers
        for call in chunk[:refiners]:
            assert_bhld(call, heads, tokens)
            assert not marked(call)
        for call in chunk[refiners:2 * refiners]:
            assert_bhld(call, heads, img)
            assert not marked(call)
        for i, call in enumerate(chunk[2 * refiners:]):
            assert_bhld(call, heads, tokens + img)
            assert call["block_type"] == "double" and call["block_index"] == i
            assert call["total_blocks"] == layers
            assert "img_slice" not in call


def test_krea2_attention():
    """Text fusion first: 2 layer-wise blocks attend across the encoder layers of each token
    (batch B·tokens, length txtlayers), 2 refiner blocks over the text; then single-stream blocks
    on [text | image] with img_slice = [tokens, total] and every head of k/v present."""
    steps, tokens = 2, 7
    calls, _ = record("krea2", steps=steps, tokens=tokens)
    cfg = config("krea2")
    img = 16
    for chunk in per_model_call(calls, steps):
        fusion, refine, blocks = chunk[:2], chunk[2:4], chunk[4:]
        for call in fusion:
            assert call["q"][0] == 2 * tokens and call["q"][2] == cfg["txtlayers"]
            assert call["q"][1] == cfg["txtheads"] and call["skip_reshape"]
            assert not marked(call)
        for call in refine:
            assert_bhld(call, cfg["txtheads"], tokens)
            assert not marked(call)
        assert len(blocks) == cfg["layers"]
        for i, call in enumerate(blocks):
            assert_bhld(call, cfg["heads"], tokens + img)
            assert call["mask"] is None
            assert call["block_type"] == "single" and call["block_index"] == i
            assert call["total_blocks"] == cfg["layers"]
            assert call["img_slice"] == [tokens, tokens + img]


def test_hunyuan_image21_attention():
    """Token refiner over the Qwen text (unmarked), double blocks on [text, glyphs | image] without
    img_slice, single blocks with img_slice = [text + glyph tokens, total]."""
    steps, tokens, glyphs = 2, 7, 3
    calls, _ = record("hunyuan_image21", steps=steps, tokens=tokens, glyph_tokens=glyphs)
    cfg = config("hunyuan_image21")
    heads, img, txt = cfg["num_heads"], 4 * 4, tokens + glyphs
    for chunk in per_model_call(calls, steps):
        refiner, double, single = chunk[:2], chunk[2:2 + cfg["depth"]], chunk[2 + cfg["depth"]:]
        for call in refiner:
            assert_bhld(call, heads, tokens)
            assert not marked(call)
        for i, call in enumerate(double):
            assert_bhld(call, heads, txt + img)
            assert (call["block_type"], call["block_index"]) == ("double", i)
            assert "img_slice" not in call
        assert len(single) == cfg["depth_single_blocks"]
        for i, call in enumerate(single):
            assert_bhld(call, heads, txt + img)
            assert (call["block_type"], call["block_index"]) == ("single", i)
            assert call["img_slice"] == [txt, txt + img]


def test_hidream_attention():
    """(B, L, H·D) without skip_reshape, image tokens FIRST then text; nothing marked. Text =
    T5 tokens + Llama tokens (carried) + this block's Llama tokens, the same in both stages."""
    steps, tokens, llama = 2, 7, 5
    calls, _ = record("hidream", steps=steps, tokens=tokens, llama_tokens=llama)
    cfg = config("hidream")
    img, txt = 16, tokens + 2 * llama
    width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    for chunk in per_model_call(calls, steps):
        assert len(chunk) == cfg["num_layers"] + cfg["num_single_layers"]
        for call in chunk:
            assert not call["skip_reshape"]
            assert call["q"] == (2, img + txt, width) and call["k"] == call["q"]
            assert call["heads"] == cfg["num_attention_heads"] and call["mask"] is None
            assert not marked(call)


def test_kandinsky5_attention():
    """Text self-attention (unmarked), then per visual block: image self-attention, then
    cross-attention from image queries to the text keys (k length = context tokens); both calls
    of a block carry the same block_index; heads comes as a keyword."""
    steps, tokens = 2, 7
    calls, _ = record("kandinsky5", steps=steps, tokens=tokens)
    cfg = config("kandinsky5")
    heads, img = cfg["model_dim"] // sum(cfg["axes_dims"]), 16
    for chunk in per_model_call(calls, steps):
        text, visual = chunk[:cfg["num_text_blocks"]], chunk[cfg["num_text_blocks"]:]
        for call in text:
            assert_bhld(call, heads, tokens)
            assert not marked(call)
        assert len(visual) == 2 * cfg["num_visual_blocks"]
        for i in range(cfg["num_visual_blocks"]):
            self_attn, cross_attn = visual[2 * i], visual[2 * i + 1]
            assert_bhld(self_attn, heads, img)
            assert_bhld(cross_attn, heads, img, kv_length=tokens)
            for call in (self_attn, cross_attn):
                assert call["heads_keyword"] and call["mask"] is None
                assert (call["block_type"], call["block_index"]) == ("double", i)
                assert call["total_blocks"] == cfg["num_visual_blocks"]
                assert "img_slice" not in call


@pytest.mark.parametrize("name", ["chroma_radiance", "longcat_image"])
def test_flux_like_attention(name):
    """Chroma Radiance and LongCat-Image run FLUX's blocks: double blocks on [text | image]
    without img_slice in the options attention gets, single blocks with img_slice."""
    steps, tokens = 2, 7
    calls, _ = record(name, steps=steps, tokens=tokens)
    cfg = config(name)
    img = (tiny(name).variant.size // cfg["patch_size"]) ** 2
    for chunk in per_model_call(calls, steps):
        assert len(chunk) == cfg["depth"] + cfg["depth_single_blocks"]
        for i, call in enumerate(chunk[:cfg["depth"]]):
            assert_bhld(call, cfg["num_heads"], tokens + img)
            assert (call["block_type"], call["block_index"]) == ("double", i)
            assert "img_slice" not in call
        for i, call in enumerate(chunk[cfg["depth"]:]):
            assert (call["block_type"], call["block_index"]) == ("single", i)
            assert call["img_slice"] == [tokens, tokens + img]


# ---------------------------------------------------------------------------------------------
# `dit` block replaces
# ---------------------------------------------------------------------------------------------

def _pass_through(counter, index):
    """A replace that marks a copy of block ``index``'s transformer_options and runs the block."""
    def replace(args, extra):
        counter.append(1)
        args = dict(args)
        options = dict(args["transformer_options"])
        options["gag_test_mark"] = index
        args["transformer_options"] = options
        return extra["original_block"](args)
    return replace


def _install(counter, replaces):
    """Pass-through replaces at ``replaces``: `dit` replace key → number of blocks."""
    def patch(patcher):
        for kind, count in replaces.items():
            for i in range(count):
                patcher.set_model_patch_replace(_pass_through(counter, i), "dit", kind, i)
    return patch


# Families whose `dit` replace ComfyUI 0.33 consults but cannot run; their own test pins it.
BROKEN_DIT_REPLACES = {"kandinsky5": "test_kandinsky5_double_block_replace_is_broken"}


@pytest.mark.parametrize("name", RELEASED)
def test_dit_replaces_are_what_the_family_table_says(family_table, name):
    """Where the table offers `dit` replaces for a family's blocks, replaces on every block run,
    the copy of the options they pass on reaches attention, and a pass-through replace changes
    nothing. Where it offers none, the family never consults patches_replace["dit"]: a replace
    installed on double and single blocks is not called."""
    entry = family_table.family_by_id(tf.find(name)[0].family)
    model = tiny(name).patcher.model.diffusion_model
    replaces = {group.dit_replace: len(getattr(model, group.blocks))
                for group in entry.groups if group.dit_replace}
    counter = []
    if replaces:
        _, plain = record(name, steps=2)
        calls, out = record(name, steps=2, patch=_install(counter, replaces))
        assert len(counter) == 2 * sum(replaces.values())
        # Every replace's copy reaches its block's attention (LTX sets no block_index: the mark
        # alone tells the block there); where ComfyUI also sets block_index, the two agree.
        marked = [c for c in calls if c["mark"] is not None]
        assert {c["mark"] for c in marked} == set(range(max(replaces.values())))
        assert all(c["mark"] == c["block_index"] for c in marked if "block_index" in c)
        assert torch.equal(out, plain)
        return
    if name in BROKEN_DIT_REPLACES:
        pytest.skip(f"ComfyUI consults {entry.display_name}'s `dit` replace but cannot run it: "
                    f"{BROKEN_DIT_REPLACES[name]}")
    _, plain = record(name, steps=1)
    _, out = record(name, steps=1, patch=_install(counter, {"double_block": 4,
                                                            "single_block": 4}))
    assert counter == []
    assert torch.equal(out, plain)


def test_kandinsky5_double_block_replace_is_broken():
    """0.33's Kandinsky 5 calls the block with keywords (x=, context=) the block's forward does
    not take, so even a pass-through replace raises TypeError: its cross-attention has to be
    reached through the attention override instead."""
    counter = []
    with pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
        record("kandinsky5", steps=1, patch=_install(counter, {"double_block": 1}))
    assert counter == [1]


@pytest.mark.parametrize("name", tf.keys(lambda recipe, variant: recipe.loader is not None))
def test_loads_through_comfy_loader(name):
    """Where detection reads every width from the weights, a tiny random state dict with the real
    key names goes through comfy.sd.load_diffusion_model_state_dict: detection picks the family's
    class, rebuilds the very config the builder used, and the loaded model samples the same."""
    tf.skip_unavailable(name)
    _, variant = tf.find(name)
    state_dict = tf.loader_state_dict(name)
    loaded = tf.load_through_comfy(state_dict)
    assert type(loaded.model.model_config).__name__ == variant.comfy_class
    direct = tf.loader_model_config(name)
    for key, value in direct.unet_config.items():
        got = loaded.model.model_config.unet_config.get(key)
        assert (list(got) if isinstance(got, tuple) else got) == \
            (list(value) if isinstance(value, tuple) else value), key
    positive, negative = tf.loader_conditioning(name, seed=1), tf.loader_conditioning(name, seed=2)
    out = tf.sample(name, loaded, positive, negative, steps=1, cfg=2.0)
    assert torch.isfinite(out).all()
    assert out.shape == variant.latent(1, variant.size)
    built = tf.finish(direct, seed=0)  # the same weights, built without the loader
    assert torch.allclose(tf.sample(name, built, positive, negative, steps=1, cfg=2.0), out)
