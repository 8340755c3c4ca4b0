"""The DiT hook at the attention level, on tiny real models sampled by ComfyUI: what GAG's
attention override returns for the q, k, v the model really computes (RoPE applied as the
model applies it), how it composes with patches installed before it, how it is removed, how
families are recognised, and how the failure paths report themselves."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import tiny_families as tf
from conftest import import_pack, pack_module

pytestmark = pytest.mark.comfy


F64 = torch.float64


@pytest.fixture(scope="module")
def pack():
    """The pack's modules these tests use (tests/conftest.py PACK_MODULES)."""
    return SimpleNamespace(api=pack_module("api"), table=pack_module("families"),
                           dit_hook=pack_module("dit_hook"), dit_replace=pack_module("dit_replace"),
                           model_call=pack_module("model_call"),
                           comfy_compat=pack_module("comfy_compat"), core=pack_module("core"))


@pytest.fixture(scope="module")
def api(pack):
    return pack.api


@pytest.fixture(scope="module")
def jh(pack):
    """The DiT hook module."""
    return pack.dit_hook


@pytest.fixture(scope="module")
def dr(pack):
    """ComfyUI 0.3.64's block-replace path of the DiT hook."""
    return pack.dit_replace


@pytest.fixture(scope="module")
def mc(pack):
    """The DiT hook's model-call wrapper."""
    return pack.model_call


@pytest.fixture(scope="module")
def compat(pack):
    return pack.comfy_compat


@pytest.fixture(scope="module")
def tm():
    """tiny_models, for the models outside the family table (AuraFlow) and the plain UNet."""
    import_pack()
    import tiny_models
    return tiny_models


# The DiT variants of the registry (tests/comfy/tiny_families.py); each skips where this ComfyUI
# cannot run it (FLUX.2 and the 2026 families before 0.33).
DITS = tf.keys(tf.dit_suite)


def build(key):
    """A freshly built tiny model of ``key`` (tiny_families.Tiny), or a skip."""
    import_pack()
    return tf.Tiny(key)


def table_entry(pack, model):
    return pack.table.find_family(model.patcher)


def joint_sequence(pack, model):
    """The family's table entry; skips a family whose text is not in the attention's joint
    sequence (a separate cross-attention: text="cross")."""
    entry = table_entry(pack, model)
    if entry.text not in ("first", "last"):
        pytest.skip(f"{entry.display_name}'s text is a separate cross-attention "
                    f"(text={entry.text!r}), not part of a joint sequence")
    return entry


def has_mode(pack, model, mode):
    entry = table_entry(pack, model)
    if mode not in entry.modes:
        pytest.skip(f"{entry.display_name} has no {mode!r} mode (modes: {entry.modes})")
    return entry


def expected_layers(pack, model, selection):
    """The layer names GAG reports for ``selection``: "None" for a family guided on all blocks
    together (a call cannot name its block), every available layer for "all"."""
    table = pack.table
    entry = table.find_family(model.patcher)
    if entry.all_blocks_only:
        return {"None"}
    if selection == "all":
        return {str(ref) for ref in table.available_layers(entry, model.patcher)}
    return {item.strip() for item in selection.split(",")}


def text_span(entry, length, t):
    """The text positions of a joint sequence of this family."""
    return slice(0, t) if entry.text == "first" else slice(length - t, length)


def gag_override(patched):
    return patched.model_options["transformer_options"]["optimized_attention_override"]


class Capture:
    """Wraps the ``guide`` step of a patched model's GAG override: for every attention call GAG
    guided, keeps the call, the layer, the text length, GAG's output and the unpatched attention
    of the same arguments."""

    def __init__(self, override):
        self.records = []
        self.inner = override.guide
        override.guide = self

    def __call__(self, layer, call, text_tokens, scale, func, args, kwargs):
        out = self.inner(layer, call, text_tokens, scale, func, args, kwargs)
        self.records.append({"call": call, "layer": layer, "text_tokens": text_tokens,
                             "out": out, "plain": func(*args, **kwargs)})
        return out


def capture(patched):
    return Capture(gag_override(patched))


def image_rows(length, text):
    rows = torch.ones(length, dtype=torch.bool)
    rows[text] = False
    return rows


@pytest.mark.parametrize("key", DITS)
def test_text_mode_changes_only_image_queries(api, pack, key):
    model = build(key)
    entry = joint_sequence(pack, model)
    patched = api.apply_gag(model.patcher, layers=model.every_kind, mode="text")
    spy = capture(patched)
    model.sample(patched)
    layers = {str(r["layer"]) for r in spy.records}
    assert layers == expected_layers(pack, model, model.every_kind)
    for record in spy.records:
        call, t = record["call"], record["text_tokens"]
        out = call.output_to_heads(record["out"])
        plain = call.output_to_heads(record["plain"])
        assert 0 < t < out.shape[2]
        text = text_span(entry, out.shape[2], t)
        image = image_rows(out.shape[2], text)
        assert torch.equal(out[:, :, text], plain[:, :, text]), "text queries must be untouched"
        assert not torch.allclose(out[:, :, image], plain[:, :, image], atol=1e-4)


@pytest.mark.parametrize("key", DITS)
def test_text_mode_guides_image_rows_by_the_formula_and_keeps_text_rows(api, pack, key):
    """Text mode on blocks of every kind: the text length is the family's rule (padding, glyph
    and Llama tokens), the text rows are the plain rows bit for bit wherever the text sits
    (first, or last for HiDream), and the image rows are plain + w·(GAG over text keys − softmax
    over text keys), recomputed in float64 from the q, k, v the model handed to its attention."""
    core = pack.core
    model = build(key)
    entry = joint_sequence(pack, model)
    patched = api.apply_gag(model.patcher, layers=model.every_kind, mode="text", scale=6.0,
                            eta=2.0)
    spy = capture(patched)
    model.sample(patched)
    assert spy.records
    for rec in spy.records:
        call, t = rec["call"], rec["text_tokens"]
        assert t == model.text_tokens
        q, k, v = (x.to(F64) for x in call.heads_qkv())
        text = text_span(entry, q.shape[2], t)
        image = image_rows(q.shape[2], text)
        out = call.output_to_heads(rec["out"])
        plain = call.output_to_heads(rec["plain"])
        assert torch.equal(out[:, :, text], plain[:, :, text]), "text queries must be untouched"
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        w = torch.softmax(scores, -1)[:, :, image][..., text].sum(-1, keepdim=True)
        dense, sparse = core.dense_sparse_attention(q[:, :, image], k[:, :, text], v[:, :, text])
        guided = core.gag_combine(dense, sparse, scale=6.0, eta=2.0, zeta=0.0)
        expected = plain[:, :, image].to(F64) + w * (guided - dense)
        torch.testing.assert_close(out[:, :, image].to(F64), expected, atol=2e-4, rtol=2e-4)
        assert not torch.allclose(out[:, :, image], plain[:, :, image], atol=1e-4)


@pytest.mark.parametrize("key", DITS)
def test_joint_mode_is_gag_attention_on_the_models_qkv(api, pack, key):
    core = pack.core
    model = build(key)
    has_mode(pack, model, "joint")
    patched = api.apply_gag(model.patcher, layers=model.every_kind, mode="joint", scale=8.0,
                            zeta=0.3)
    spy = capture(patched)
    model.sample(patched)
    assert spy.records
    assert {str(r["layer"]) for r in spy.records} == expected_layers(pack, model,
                                                                     model.every_kind)
    for record in spy.records:
        call = record["call"]
        q, k, v = call.heads_qkv()
        assert q.shape[2] == k.shape[2] > record["text_tokens"]  # every query, every key
        expected = core.gag_attention(q, k, v, scale=8.0, eta=15.0, zeta=0.3, alpha=1.5)
        out = call.output_to_heads(record["out"])
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(record["out"], record["plain"], atol=1e-4)


def test_flux_attention_sees_post_rope_queries(tm, api):
    """FLUX rotates q and k before attention: the q GAG receives must not equal the block's
    plain projection. Checked by rotating nothing: positions 0 (text ids are all zero) keep
    their values, image positions (non-zero ids) do not."""
    model = build("flux-dev")
    patcher = model.patcher
    patched = api.apply_gag(patcher, layers="double 0", mode="joint")
    spy = capture(patched)
    seen = {}
    block = patcher.model.diffusion_model.double_blocks[0]
    def keep_first_query(module, args, out):
        seen.setdefault("img_q", out[0].detach().clone())  # returns None: output unchanged

    hook = block.img_attn.norm.register_forward_hook(keep_first_query)
    try:
        model.sample(patched, steps=1)
    finally:
        hook.remove()
    call, t = spy.records[0]["call"], spy.records[0]["text_tokens"]
    q_img_attention = call.q[:, :, t:]
    assert q_img_attention.shape == seen["img_q"].shape
    assert not torch.allclose(q_img_attention, seen["img_q"].to(q_img_attention.dtype), atol=1e-4)
    # The first image token sits at (0, 0): its rotation is the identity.
    torch.testing.assert_close(q_img_attention[:, :, 0], seen["img_q"][:, :, 0].to(q_img_attention.dtype))


def test_mmdit_x_image_self_attention_is_left_alone(tm, api):
    """SD3.5-medium block 0 runs its joint attention and then an image-only self-attention with
    the same options; GAG must act on the first only."""
    model = build("sd3")
    patcher = model.patcher
    patched = api.apply_gag(patcher, layers="joint 0", mode="joint")
    lengths = []
    inner = gag_override(patched)

    def outer(func, *args, **kwargs):
        lengths.append(args[0].shape[1])
        return inner(func, *args, **kwargs)

    patched.model_options["transformer_options"] = dict(
        patched.model_options["transformer_options"], optimized_attention_override=outer)
    spy = Capture(inner)
    model.sample(patched, steps=1)
    assert 16 in lengths and 16 + 20 in lengths  # block 0 runs both attentions
    assert [r["call"].query_tokens for r in spy.records] == [16 + 20]


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_patches_installed_before_gag_still_run_inside_it(tm, api, jh, mode):
    model = build("flux-dev")
    patcher = model.patcher
    events = []

    def foreign_override(func, *args, **kwargs):
        events.append("attention")
        return func(*args, **kwargs)

    def foreign_block(args, extra):
        events.append("block")
        return extra["original_block"](args)

    base = patcher.clone()
    base.model_options["transformer_options"] = dict(
        base.model_options["transformer_options"], optimized_attention_override=foreign_override)
    base.set_model_patch_replace(foreign_block, "dit", "double_block", 1)
    plain = model.sample(base)
    plain_events = list(events)
    events.clear()

    patched = api.apply_gag(base, layers="double 1, single 0", mode=mode)
    spy = capture(patched)
    guided = model.sample(patched)
    # The same attention and block calls happen, each through the foreign patches: GAG takes
    # the plain attention of a guided call from the override installed before it.
    assert events == plain_events and events.count("block") == 2
    assert len(spy.records) == 4  # 2 steps × 2 guided blocks
    assert not torch.allclose(guided, plain, atol=1e-4)

    # Removing GAG puts the foreign patches back exactly.
    restored = patched.clone()
    assert jh.uninstall(restored) == 2
    options = restored.model_options["transformer_options"]
    assert options["optimized_attention_override"] is foreign_override
    assert options["patches_replace"]["dit"] == {("double_block", 1): foreign_block}
    assert torch.equal(model.sample(restored), plain)


def test_uninstall_of_plain_gag_leaves_no_trace(tm, api, jh, mc):
    patcher = build("qwen_image").patcher
    patched = api.apply_gag(patcher, mode="text")
    clone = patched.clone()
    assert jh.uninstall(clone) == 2
    options = clone.model_options["transformer_options"]
    assert "optimized_attention_override" not in options
    assert options.get("patches_replace", {}).get("dit", {}) == {}
    wrappers = options.get("wrappers", {})
    assert not any(mc.WRAPPER_KEY in by_key for by_key in wrappers.values())
    assert jh.uninstall(clone) == 0


def test_single_block_text_mode_knows_the_text_length(tm, api, jh):
    """Text mode on single blocks only: the text length comes from ComfyUI's img_slice (0.33+)
    or from the text context the model call received, whatever the double blocks do."""
    model = build("flux-dev")
    patcher = model.patcher
    patched = api.apply_gag(patcher, layers="single", mode="text")
    spy = capture(patched)
    model.sample(patched)
    assert {str(r["layer"]) for r in spy.records} == {"single 0", "single 1"}
    assert {r["text_tokens"] for r in spy.records} == {20}


@pytest.mark.parametrize("key", DITS)
def test_block_replaces_only_where_comfyui_does_not_tell_attention_its_block(api, compat, pack, key):
    """Where the model's forward sets block_type/block_index for every block group (ComfyUI
    0.33+ for FLUX, Chroma, Qwen-Image), GAG installs no per-block replace; elsewhere (0.3.64,
    SD3 everywhere: no block_type in its table entry) one `dit` replace per chosen block marks
    the block for the override. Families ComfyUI offers no `dit` replaces for skip."""
    model = build(key)
    entry = table_entry(pack, model)
    if not any(group.dit_replace for group in entry.groups):
        pytest.skip(f"ComfyUI offers no 'dit' block replaces for {entry.display_name}")
    patched = api.apply_gag(model.patcher, layers=model.every_kind)
    dit = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    if compat.model_sets_block_info(model.patcher.model.diffusion_model) and all(
            group.block_type for group in entry.groups):
        assert dit == {}
    else:
        assert len(dit) == len(model.every_kind.split(","))
    assert model.sample(patched).isfinite().all()


@pytest.mark.parametrize("key", tf.keys(lambda recipe, variant: recipe.family == "flux2"))
def test_flux2_blocks_keep_their_modulation_and_padded_text(api, key):
    """Real FLUX.2 (ComfyUI's Flux with global_modulation): its double blocks get ``vec`` as a
    tuple of shared modulations, which must reach the blocks untouched (through GAG's block
    replace where it has one, and through a replace installed before GAG); text mode finds the text where ComfyUI's
    Flux2.extra_conds put it, front-padded to 512 tokens."""
    model = build(key)
    patcher = model.patcher
    assert patcher.model.diffusion_model.params.global_modulation
    seen = []

    def foreign_block(args, extra):
        seen.append(type(args["vec"]))
        return extra["original_block"](args)

    base = patcher.clone()
    base.set_model_patch_replace(foreign_block, "dit", "double_block", 0)
    plain = model.sample(base)
    patched = api.apply_gag(base, layers=model.every_kind, mode="text")
    spy = capture(patched)
    guided = model.sample(patched)
    assert seen and set(seen) == {tuple}
    assert {r["text_tokens"] for r in spy.records} == {512}
    assert {str(r["layer"]) for r in spy.records} == {
        item.strip() for item in model.every_kind.split(",")}
    assert torch.isfinite(guided).all()
    assert not torch.allclose(guided, plain, atol=1e-4)


def test_unsupported_architecture_is_named(tm, api):
    patcher = tm.tiny_auraflow()
    with pytest.raises(ValueError, match=r"does not support this model \(AuraFlow/.*MMDiT\).*"
                                         r"FLUX\.1.*Qwen-Image"):
        api.apply_gag(patcher)


def test_unet_gets_no_attention_override(tm, api):
    patched = api.apply_gag(tm.tiny_sdxl())
    assert "optimized_attention_override" not in patched.model_options["transformer_options"]


def test_family_specific_errors(tm, api):
    patcher = build("flux-dev").patcher
    with pytest.raises(ValueError, match="'joint' does not apply to FLUX.1"):
        api.apply_gag(patcher, layers="joint")
    with pytest.raises(ValueError, match=r"double 5.*Valid layers: double 0-1; single 0-1"):
        api.apply_gag(patcher, layers="double 5")
    with pytest.raises(ValueError, match="mode"):
        api.apply_gag(patcher, mode="cross")


# --- the override on its own -----------------------------------------------------------------

def _runtime():
    """GAG's runtime with the default settings, on at every step (no sampler here)."""
    GuidanceRuntime = pack_module("runtime").GuidanceRuntime
    GAGSettings = pack_module("settings").GAGSettings

    class AlwaysOn(GuidanceRuntime):
        def __init__(self):
            self.settings = GAGSettings()
            self.readout = None

        def step_scale(self, options):
            return self.settings.scale

    return AlwaysOn()


def _block_patch(dr, separate_text=True, previous=None):
    LayerRef = pack_module("layer_spec").LayerRef
    return dr.DiTBlockPatch(LayerRef("double" if separate_text else "single", 0), separate_text,
                            previous)


def test_block_replace_without_transformer_options_is_an_error(dr):
    args = {"img": torch.zeros(1, 4, 8), "txt": torch.zeros(1, 3, 8)}
    with pytest.raises(RuntimeError, match="transformer_options"):
        _block_patch(dr)(args, {"original_block": lambda a: a})


def test_attention_that_never_sees_the_mark_is_an_error(dr):
    args = {"img": torch.zeros(1, 4, 8), "txt": torch.zeros(1, 3, 8), "transformer_options": {}}
    with pytest.raises(RuntimeError, match="never saw the GAG mark"):
        _block_patch(dr)(args, {"original_block": lambda a: {"img": a["img"], "txt": a["txt"]}})


def test_single_block_text_length_sources(dr, mc):
    seen = {}

    def block(args):
        seen["mark"] = args["transformer_options"][dr.MARK_KEY]
        seen["mark"].consumed = 1
        return {"img": args["img"]}

    joint = torch.zeros(1, 9, 8)
    single = _block_patch(dr, separate_text=False)
    single({"img": joint, "transformer_options": {"img_slice": [5, 9]}}, {"original_block": block})
    assert (seen["mark"].text_tokens, seen["mark"].joint_tokens) == (5, 9)
    single({"img": joint, "transformer_options": {mc.TEXT_TOKENS_KEY: 4}}, {"original_block": block})
    assert seen["mark"].text_tokens == 4
    single({"img": joint, "transformer_options": {}}, {"original_block": block})
    assert seen["mark"].text_tokens is None


def _joint_call(seed=0, batch=1, heads=2, length=9, dim=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=g) for _ in range(3)]


def _override(jh, mode="text", previous=None, layers=("double 0",)):
    LayerRef = pack_module("layer_spec").LayerRef
    refs = [LayerRef(item.split()[0], int(item.split()[1])) for item in layers]
    block_info = jh.BlockInfo({"double": "double", "single": "single"})
    return jh.JointAttentionOverride(refs, _runtime(), mode, (block_info,), previous)


def test_text_mode_with_unknown_text_length_is_a_clear_error(jh, comfy_path):
    import comfy.ldm.modules.attention as attention
    q, k, v = _joint_call()
    options = {"block_type": "double", "block_index": 0, "optimized_attention_override":
               _override(jh)}
    with pytest.raises(RuntimeError, match="number of text tokens .* is unknown"):
        attention.optimized_attention(q, k, v, 2, skip_reshape=True, transformer_options=options)
    # Joint mode does not need it.
    options["optimized_attention_override"] = _override(jh, mode="joint")
    assert attention.optimized_attention(q, k, v, 2, skip_reshape=True,
                                         transformer_options=options).isfinite().all()


def test_calls_gag_does_not_guide_reach_comfyui_unchanged(jh, comfy_path):
    import comfy.ldm.modules.attention as attention
    q, k, v = _joint_call()
    seen = []

    def previous(func, *args, **kwargs):
        seen.append(kwargs.get("transformer_options", {}).get("block_index"))
        return func(*args, **kwargs)

    override = _override(jh, previous=previous)
    plain = attention.optimized_attention(q, k, v, 2, skip_reshape=True)
    for options in ({}, {"block_type": "double", "block_index": 1},     # not a chosen block
                    {"block_type": "final", "block_index": 0},          # not a block group
                    {"block_type": "double", "block_index": 0, "img_slice": [3, 5]}):  # length
        options = dict(options, optimized_attention_override=override)
        out = attention.optimized_attention(q, k, v, 2, skip_reshape=True,
                                            transformer_options=options)
        assert torch.equal(out, plain)
    assert len(seen) == 4


def test_override_is_memory_efficient_like_what_it_wraps_and_has_no_container_function(jh,
                                                                                       comfy_path):
    import comfy.ldm.modules.attention as attention
    assert not hasattr(_override(jh), "container_function")

    def efficient(func, *args, **kwargs):
        return func(*args, **kwargs)
    efficient.memory_efficient = True

    def untrusted(func, *args, **kwargs):
        return func(*args, **kwargs)
    untrusted.memory_efficient = False

    def unmarked(func, *args, **kwargs):
        return func(*args, **kwargs)

    assert _override(jh, previous=efficient).memory_efficient is True
    assert _override(jh, previous=untrusted).memory_efficient is False
    assert _override(jh, previous=unmarked).memory_efficient is False
    own = attention.optimized_attention is not getattr(attention, "attention_basic", None)
    assert _override(jh).memory_efficient is own


def test_custom_softmax_scale_and_grouped_query_heads_are_honoured(jh, comfy_path):
    """Attention calls may carry their own softmax `scale` and fewer key/value heads
    (`enable_gqa`); GAG must guide the attention the model asked for."""
    import comfy.ldm.modules.attention as attention
    gag_attention = pack_module("core").gag_attention
    q, _, _ = _joint_call(heads=4)
    k, v = (t[:, :2] for t in _joint_call(seed=1, heads=4)[:2])
    override = _override(jh, mode="joint")
    options = {"block_type": "double", "block_index": 0, "optimized_attention_override": override}
    out = attention.optimized_attention(q, k, v, 4, skip_reshape=True, scale=0.7,
                                        enable_gqa=True, transformer_options=options)
    k4, v4 = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    expected = gag_attention(q * (0.7 * 8 ** 0.5), k4, v4, scale=10.0, eta=15.0)
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(1, 9, -1))


def test_attention_tensor_containers_are_unwrapped_for_gag(jh, comfy_path):
    """ComfyUI 0.33+ may hand attention single-owner tensor containers; with an override that
    has no container_function, ComfyUI unwraps them and GAG guides as usual."""
    import comfy.ldm.modules.attention as attention
    container = getattr(attention, "AttentionTensorContainer", None)
    if container is None:
        pytest.skip("this ComfyUI has no AttentionTensorContainer (added after 0.3.64)")
    q, k, v = _joint_call()
    options = {"block_type": "double", "block_index": 0,
               "optimized_attention_override": _override(jh, mode="joint")}
    boxed = attention.optimized_attention(container(q), container(k), container(v), 2,
                                          skip_reshape=True, transformer_options=dict(options))
    plain = attention.optimized_attention(q, k, v, 2, skip_reshape=True,
                                          transformer_options=dict(options))
    torch.testing.assert_close(boxed, plain)


def test_attention_without_block_info_on_the_block_info_path_is_an_error(tm, api, compat):
    """Where GAG relies on ComfyUI telling attention its block and a later patch hides that
    (as a node that replaced the model's forward would), sampling stops with the reason
    instead of silently not guiding."""
    model = build("flux-dev")
    patcher = model.patcher
    if not compat.model_sets_block_info(patcher.model.diffusion_model):
        pytest.skip("this ComfyUI does not tell attention its block (0.3.64): GAG uses block "
                    "replaces there, which check themselves")
    from comfy.patcher_extension import WrappersMP
    patched = api.apply_gag(patcher)

    # GAG re-chains its override on top of any override a model call's options hold, so the
    # hiding has to happen inside the model call, above GAG, as a node replacing the model's
    # forward would do it.
    def hide_block_info_inside_the_model_call(executor, *args, **kwargs):
        options = kwargs.get("transformer_options") or [a for a in args if isinstance(a, dict)][-1]
        above = options["optimized_attention_override"]

        def hide_block_info(func, *args, **kwargs):
            options = {key: value for key, value in kwargs["transformer_options"].items()
                       if key not in ("block_type", "block_index", "img_slice")}
            return above(func, *args, **dict(kwargs, transformer_options=options))

        options["optimized_attention_override"] = hide_block_info
        return executor(*args, **kwargs)

    patched.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test_hides_block_info",
                                 hide_block_info_inside_the_model_call)
    with pytest.raises(RuntimeError, match="without telling it which block"):
        model.sample(patched)


# --- family-specific behaviour ------------------------------------------------------------------

def test_zimage_pad_tokens_count_as_text(api):
    """40 caption tokens are padded to 64 by the model: all 64 are text for GAG."""
    model = build("zimage")
    patcher = model.patcher
    patched = api.apply_gag(patcher, layers="joint 0", mode="text")
    spy = capture(patched)
    model.sample(patched, cond=dict(tokens=40))
    assert {r["text_tokens"] for r in spy.records} == {64}
    assert {r["call"].query_tokens for r in spy.records} == {64 + 32}  # image 16, padded to 32


def test_hunyuan_image21_text_without_glyphs_is_the_context(api):
    """Without quoted text in the prompt there is no byT5 input: the text is the Qwen tokens."""
    model = build("hunyuan_image21")
    patcher = model.patcher
    patched = api.apply_gag(patcher, mode="text")
    spy = capture(patched)
    model.sample(patched, cond=dict(glyph_tokens=0))
    assert spy.records and {r["text_tokens"] for r in spy.records} == {7}


def test_kandinsky5_guides_the_cross_attention_only(api, pack):
    """Each visual block runs self-attention then cross-attention with the same block info;
    GAG guides the cross-attention (image queries, text keys) as GAG attention over the text,
    and the self-attention is ComfyUI's."""
    core = pack.core
    model = build("kandinsky5")
    patcher = model.patcher
    patched = api.apply_gag(patcher, layers="visual 1", scale=8.0)
    spy = capture(patched)
    model.sample(patched)
    assert [str(r["layer"]) for r in spy.records] == ["visual 1"] * 2  # 2 steps, one call each
    for rec in spy.records:
        q, k, v = rec["call"].heads_qkv()
        assert (q.shape[2], k.shape[2]) == (16, 7)
        expected = core.gag_attention(q, k, v, scale=8.0, eta=15.0, zeta=0.0, alpha=1.5)
        torch.testing.assert_close(rec["call"].output_to_heads(rec["out"]), expected,
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="mode 'joint' does not apply to Kandinsky 5"):
        api.apply_gag(patcher, mode="joint")


def test_kandinsky5_text_as_long_as_the_image_is_a_clear_error(api):
    model = build("kandinsky5")
    patcher = model.patcher
    with pytest.raises(RuntimeError, match="as many tokens as the text \\(16\\).*self-attention "
                                           "from its cross-attention"):
        model.sample(api.apply_gag(patcher), cond=dict(tokens=16))


def test_hidream_is_guided_on_all_blocks_together_or_refused(api):
    model = build("hidream")
    patcher = model.patcher
    api.apply_gag(patcher, layers="paper")
    api.apply_gag(patcher, layers="double 0-1, single")
    for selection in ("double 0-1", "single 0"):
        with pytest.raises(ValueError, match="HiDream .* on all its blocks together or not at "
                                             "all.*neither which block"):
            api.apply_gag(patcher, layers=selection)


@pytest.mark.parametrize("key", DITS)
def test_patches_installed_before_gag_still_run_inside_it_in_every_family(api, jh, pack, key):
    """An attention override (and, where the family has them, a `dit` block replace) installed
    before GAG: every call still goes through them, in the order they were wired, and removing
    GAG puts them back exactly."""
    model = build(key)
    patcher = model.patcher
    entry = pack.table.find_family(patcher)
    events = []

    def foreign_override(func, *args, **kwargs):
        events.append("attention")
        return func(*args, **kwargs)

    def foreign_block(args, extra):
        events.append("block")
        return extra["original_block"](args)

    base = patcher.clone()
    base.model_options["transformer_options"] = dict(
        base.model_options["transformer_options"], optimized_attention_override=foreign_override)
    replace = entry.groups[0].dit_replace
    if replace:
        base.set_model_patch_replace(foreign_block, "dit", replace, 0)
    plain = model.sample(base)
    plain_events = list(events)
    events.clear()
    mode = entry.modes[0]
    patched = api.apply_gag(base, mode=mode)
    spy = capture(patched)
    guided = model.sample(patched)
    assert events == plain_events and events.count("block") == (2 if replace else 0)
    assert spy.records and not torch.allclose(guided, plain, atol=1e-4)
    restored = patched.clone()
    jh.uninstall(restored)
    options = restored.model_options["transformer_options"]
    assert options["optimized_attention_override"] is foreign_override
    assert options.get("patches_replace", {}).get("dit", {}) == (
        {(replace, 0): foreign_block} if replace else {})
    assert torch.equal(model.sample(restored), plain)


def test_qwen_image21_is_refused_by_name(tm, pack, monkeypatch):
    """Qwen-Image 2.1 exists from ComfyUI 0.38 (not available here). Its entry names 0.38's
    class, which this ComfyUI lacks, so it matches nothing here; the refusal itself is checked
    by pointing a copy of the entry at a class this ComfyUI has (Qwen-Image's)."""
    import dataclasses
    families = pack_module("family_table")
    entry = families.family_by_id("qwen_image21")
    assert entry.model_class == ("comfy.ldm.qwen_image21.model", "QwenImage21Transformer2DModel")
    assert entry.refused and not entry.layouts
    patcher = tm.tiny_qwen_image()
    if families.family_class(entry) is None:
        assert not families.matches(entry, patcher)
    stand_in = dataclasses.replace(entry, model_class=("comfy.ldm.qwen_image.model",
                                                       "QwenImageTransformer2DModel"))
    monkeypatch.setattr(families, "FAMILIES", (stand_in,) + families.FAMILIES)
    with pytest.raises(ValueError, match=r"does not support Qwen-Image 2\.1 models yet \(.*\): "
                                         r"its blocks call attention through a closure"):
        pack.api.apply_gag(patcher)
    with pytest.raises(ValueError, match="supported families") as unknown:
        families.find_family(tm.tiny_auraflow())
    assert "Qwen-Image 2.1" not in str(unknown.value)
