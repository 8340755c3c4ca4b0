"""The DiT hook at the attention level, on tiny real models sampled by ComfyUI: what GAG's
attention override returns for the q, k, v the model really computes (RoPE applied as the
model applies it), how it composes with patches installed before it, how it is removed, how
families are recognised, and how the failure paths report themselves."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from conftest import import_pack

pytestmark = pytest.mark.comfy


F64 = torch.float64


@pytest.fixture(scope="module")
def pack():
    import_pack()
    return {name: importlib.import_module(f"comfyui_gag.{name}") for name in
            ("nodes.api", "nodes.adapters", "nodes.adapters.dit_common", "gag_core")}


@pytest.fixture(scope="module")
def api(pack):
    return pack["nodes.api"]


@pytest.fixture(scope="module")
def dc(pack):
    return pack["nodes.adapters.dit_common"]


@pytest.fixture(scope="module")
def tm():
    import_pack()
    import tiny_models
    return tiny_models


# FLUX.2 dev and Klein skip where the ComfyUI has no FLUX.2 (0.3.64).
FAMILIES = ["flux", "chroma", "sd3", "qwen_image", "flux2", "flux2_klein"]
# Selections that include every block kind of the family (text mode on FLUX single blocks
# needs the text length recorded by the double blocks).
ALL_KINDS = {"flux": "double 1, single 0, single 1", "chroma": "double 0, single 0",
             "sd3": "joint 0, joint 1", "qwen_image": "joint 0, joint 1",
             "flux2": "double 1, single 0, single 1", "flux2_klein": "double 0, single 1"}


def build(tm, name):
    builder, conditioning, kwargs, _ = tm.DIT_FAMILIES[name]
    return builder(), conditioning, dict(dict(size=8, steps=2), **kwargs)


def run(tm, patcher, conditioning, kwargs):
    return tm.sample_dit(patcher, conditioning(), conditioning(seed=2), **kwargs)


class Capture:
    """An attention override wrapped around GAG's: for every call where GAG acted, keeps the
    call's arguments, GAG's output and the unpatched attention of the same arguments."""

    def __init__(self, dc, inner):
        self.dc, self.inner, self.records = dc, inner, []

    def __deepcopy__(self, memo):
        return self

    def __call__(self, func, *args, **kwargs):
        mark = (kwargs.get("transformer_options") or {}).get(self.dc.MARK_KEY)
        consumed = mark.consumed if mark is not None else None
        out = self.inner(func, *args, **kwargs)
        if mark is not None and mark.consumed != consumed:
            self.records.append({"call": self.dc.AttentionCall(args, kwargs), "out": out,
                                 "plain": func(*args, **kwargs), "mark": mark})
        return out


def capture(dc, patched):
    options = dict(patched.model_options["transformer_options"])
    spy = Capture(dc, options["optimized_attention_override"])
    options["optimized_attention_override"] = spy
    patched.model_options["transformer_options"] = options
    return spy


@pytest.mark.parametrize("name", FAMILIES)
def test_text_mode_changes_only_image_queries(tm, api, dc, name):
    patcher, conditioning, kwargs = build(tm, name)
    patched = api.apply_gag(patcher, layers=ALL_KINDS[name], mode="text")
    spy = capture(dc, patched)
    run(tm, patched, conditioning, kwargs)
    layers = {str(r["mark"].layer) for r in spy.records}
    assert layers == {item.strip() for item in ALL_KINDS[name].split(",")}
    for record in spy.records:
        call, t = record["call"], record["mark"].text_tokens
        out = call.to_heads(record["out"], input_layout=False)
        plain = call.to_heads(record["plain"], input_layout=False)
        assert 0 < t < out.shape[2]
        assert torch.equal(out[:, :, :t], plain[:, :, :t]), "text queries must be untouched"
        assert not torch.allclose(out[:, :, t:], plain[:, :, t:], atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_text_mode_image_rows_follow_the_formula(tm, api, dc, pack, name):
    """Image rows = plain + w·(GAG over text keys − softmax over text keys), recomputed here in
    float64 from the q, k, v the model handed to its attention."""
    core = pack["gag_core"]
    patcher, conditioning, kwargs = build(tm, name)
    patched = api.apply_gag(patcher, layers=ALL_KINDS[name], mode="text", scale=6.0, eta=2.0)
    spy = capture(dc, patched)
    run(tm, patched, conditioning, kwargs)
    for record in spy.records:
        call, t = record["call"], record["mark"].text_tokens
        q, k, v = (call.to_heads(x).to(F64) for x in (call.q, call.k, call.v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        w = torch.softmax(scores, -1)[..., t:, :t].sum(-1, keepdim=True)
        dense, sparse = core.dense_sparse_attention(q[:, :, t:], k[:, :, :t], v[:, :, :t])
        guided = core.gag_combine(dense, sparse, scale=6.0, eta=2.0, zeta=0.0)
        plain = call.to_heads(record["plain"], input_layout=False).to(F64)
        expected = plain[:, :, t:] + w * (guided - dense)
        out = call.to_heads(record["out"], input_layout=False)[:, :, t:]
        torch.testing.assert_close(out.to(F64), expected, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_joint_mode_is_gag_attention_on_the_models_qkv(tm, api, dc, pack, name):
    core = pack["gag_core"]
    patcher, conditioning, kwargs = build(tm, name)
    patched = api.apply_gag(patcher, layers=ALL_KINDS[name], mode="joint", scale=8.0, zeta=0.3)
    spy = capture(dc, patched)
    run(tm, patched, conditioning, kwargs)
    assert spy.records
    for record in spy.records:
        call = record["call"]
        q, k, v = (call.to_heads(x) for x in (call.q, call.k, call.v))
        assert q.shape[2] == record["mark"].joint_tokens  # every query, every key
        expected = core.gag_attention(q, k, v, scale=8.0, eta=15.0, zeta=0.3, alpha=1.5)
        out = call.to_heads(record["out"], input_layout=False)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(record["out"], record["plain"], atol=1e-4)


def test_flux_attention_sees_post_rope_queries(tm, api, dc):
    """FLUX rotates q and k before attention: the q GAG receives must not equal the block's
    plain projection. Checked by rotating nothing: positions 0 (text ids are all zero) keep
    their values, image positions (non-zero ids) do not."""
    patcher, conditioning, kwargs = build(tm, "flux")
    patched = api.apply_gag(patcher, layers="double 0", mode="joint")
    spy = capture(dc, patched)
    seen = {}
    block = patcher.model.diffusion_model.double_blocks[0]
    def keep_first_query(module, args, out):
        seen.setdefault("img_q", out[0].detach().clone())  # returns None: output unchanged

    hook = block.img_attn.norm.register_forward_hook(keep_first_query)
    try:
        run(tm, patched, conditioning, {**kwargs, "steps": 1})
    finally:
        hook.remove()
    call, t = spy.records[0]["call"], spy.records[0]["mark"].text_tokens
    q_img_attention = call.q[:, :, t:]
    assert q_img_attention.shape == seen["img_q"].shape
    assert not torch.allclose(q_img_attention, seen["img_q"].to(q_img_attention.dtype), atol=1e-4)
    # The first image token sits at (0, 0): its rotation is the identity.
    torch.testing.assert_close(q_img_attention[:, :, 0], seen["img_q"][:, :, 0].to(q_img_attention.dtype))


def test_mmdit_x_image_self_attention_is_left_alone(tm, api, dc):
    """SD3.5-medium block 0 runs its joint attention and then an image-only self-attention with
    the same (marked) options; GAG must act on the first only."""
    patcher, conditioning, kwargs = build(tm, "sd3")
    patched = api.apply_gag(patcher, layers="joint 0", mode="joint")
    marked_calls = []
    inner = patched.model_options["transformer_options"]["optimized_attention_override"]

    def outer(func, *args, **kwargs):
        mark = kwargs["transformer_options"].get(dc.MARK_KEY)
        before = None if mark is None else mark.consumed
        out = inner(func, *args, **kwargs)
        if mark is not None:
            marked_calls.append((dc.AttentionCall(args, kwargs).query_tokens, before, mark.consumed))
        return out

    patched.model_options["transformer_options"] = dict(
        patched.model_options["transformer_options"], optimized_attention_override=outer)
    run(tm, patched, conditioning, {**kwargs, "steps": 1})
    (joint_len, b0, c0), (self_len, b1, c1) = marked_calls
    assert (b0, c0) == (0, 1) and (b1, c1) == (1, 1)
    assert self_len == 16 and joint_len == 16 + 20


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_patches_installed_before_gag_still_run_inside_it(tm, api, dc, mode):
    patcher, conditioning, kwargs = build(tm, "flux")
    events = []

    def foreign_override(func, *args, **kwargs):
        mark = kwargs["transformer_options"].get(dc.MARK_KEY)
        events.append(("attention", None if mark is None else mark.consumed))
        return func(*args, **kwargs)

    def foreign_block(args, extra):
        events.append(("block", dc.MARK_KEY in args["transformer_options"]))
        return extra["original_block"](args)

    base = patcher.clone()
    base.model_options["transformer_options"] = dict(
        base.model_options["transformer_options"], optimized_attention_override=foreign_override)
    base.set_model_patch_replace(foreign_block, "dit", "double_block", 1)
    plain = run(tm, base, conditioning, kwargs)
    plain_events = list(events)
    events.clear()

    patched = api.apply_gag(base, layers="double 1, single 0", mode=mode)
    guided = run(tm, patched, conditioning, kwargs)
    # The same attention calls and block calls happen, each through the foreign patches.
    assert [e[0] for e in events] == [e[0] for e in plain_events]
    # The foreign block replace runs inside GAG's, so it receives the marked options ...
    assert [e for e in events if e[0] == "block"] == [("block", True)] * 2
    # ... and the foreign override runs inside GAG's for the guided attentions (mark already
    # consumed), and on its own for the others.
    marked = [e for e in events if e[0] == "attention" and e[1] is not None]
    assert marked == [("attention", 1)] * 4  # 2 steps × 2 guided blocks
    assert not torch.allclose(guided, plain, atol=1e-4)

    # Removing GAG puts the foreign patches back exactly.
    adapter = importlib.import_module("comfyui_gag.nodes.adapters").find_adapter(patched)
    restored = patched.clone()
    assert adapter.uninstall(restored) == 2
    options = restored.model_options["transformer_options"]
    assert options["optimized_attention_override"] is foreign_override
    assert options["patches_replace"]["dit"] == {("double_block", 1): foreign_block}
    assert torch.equal(run(tm, restored, conditioning, kwargs), plain)


def test_uninstall_of_plain_gag_leaves_no_trace(tm, api):
    patcher, _, _ = build(tm, "qwen_image")
    patched = api.apply_gag(patcher, mode="text")
    adapter = importlib.import_module("comfyui_gag.nodes.adapters").find_adapter(patched)
    clone = patched.clone()
    assert adapter.uninstall(clone) == 2
    options = clone.model_options["transformer_options"]
    assert "optimized_attention_override" not in options
    assert options.get("patches_replace", {}).get("dit", {}) == {}
    assert adapter.uninstall(clone) == 0


def test_single_block_text_mode_records_text_length(tm, api, dc):
    """Text mode on single blocks only: the double blocks get recorders (no GAG) that tell
    the single blocks where the text ends."""
    patcher, conditioning, kwargs = build(tm, "flux")
    patched = api.apply_gag(patcher, layers="single", mode="text")
    dit = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    recorders = {key for key, p in dit.items() if isinstance(p, dc.DiTBlockPatch) and not p.guided}
    assert recorders == {("double_block", 0), ("double_block", 1)}
    spy = capture(dc, patched)
    run(tm, patched, conditioning, kwargs)
    assert {str(r["mark"].layer) for r in spy.records} == {"single 0", "single 1"}
    assert {r["mark"].text_tokens for r in spy.records} == {20}
    # Joint mode needs no text length, hence no recorders.
    joint = api.apply_gag(patcher, layers="single", mode="joint")
    dit = joint.model_options["transformer_options"]["patches_replace"]["dit"]
    assert set(dit) == {("single_block", 0), ("single_block", 1)}


# --- recognising families ----------------------------------------------------------------------

@pytest.mark.parametrize("name,family", [("flux", "flux"), ("flux_schnell", "flux"),
                                         ("chroma", "chroma"), ("sd3", "sd3"),
                                         ("qwen_image", "qwen_image"), ("flux2", "flux2"),
                                         ("flux2_klein", "flux2")])
def test_detection(tm, pack, name, family):
    patcher = tm.DIT_FAMILIES[name][0]()
    assert pack["nodes.adapters"].find_adapter(patcher).family == family


@pytest.mark.parametrize("name", ["flux2", "flux2_klein"])
def test_flux2_blocks_keep_their_modulation_and_padded_text(tm, api, dc, name):
    """Real FLUX.2 (ComfyUI's Flux with global_modulation): its double blocks get ``vec`` as a
    tuple of shared modulations, which GAG's block replace must hand on untouched to the blocks
    (and to a replace installed before GAG); text mode finds the text where ComfyUI's
    Flux2.extra_conds put it, front-padded to 512 tokens."""
    patcher, conditioning, kwargs = build(tm, name)
    assert patcher.model.diffusion_model.params.global_modulation
    seen = []

    def foreign_block(args, extra):
        seen.append(type(args["vec"]))
        return extra["original_block"](args)

    base = patcher.clone()
    base.set_model_patch_replace(foreign_block, "dit", "double_block", 0)
    plain = run(tm, base, conditioning, kwargs)
    patched = api.apply_gag(base, layers=ALL_KINDS[name], mode="text")
    spy = capture(dc, patched)
    guided = run(tm, patched, conditioning, kwargs)
    assert seen and set(seen) == {tuple}
    assert {r["mark"].text_tokens for r in spy.records} == {512}
    assert {str(r["mark"].layer) for r in spy.records} == {
        item.strip() for item in ALL_KINDS[name].split(",")}
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
    patcher, _, _ = build(tm, "flux")
    with pytest.raises(ValueError, match="'joint' does not apply to FLUX.1"):
        api.apply_gag(patcher, layers="joint")
    with pytest.raises(ValueError, match=r"double 5.*Valid layers: double 0-1; single 0-1"):
        api.apply_gag(patcher, layers="double 5")
    with pytest.raises(ValueError, match="mode"):
        api.apply_gag(patcher, mode="cross")


# --- failure paths of the block replace ----------------------------------------------------------

class _Settings:
    eta, zeta, alpha = 15.0, 0.0, 1.5


class _Runtime:
    settings = _Settings()

    def step_scale(self, options):
        return 10.0


def _patch(dc, stream, mode="text", previous=None):
    from comfyui_gag.gag_core.layer_spec import LayerRef
    return dc.DiTBlockPatch(LayerRef(stream, 0), stream, dc.JointAttentionOverride(), _Runtime(),
                            mode, previous)


def test_block_replace_without_transformer_options_is_an_error(dc):
    args = {"img": torch.zeros(1, 4, 8), "txt": torch.zeros(1, 3, 8)}
    with pytest.raises(RuntimeError, match="does not pass transformer_options"):
        _patch(dc, "double")(args, {"original_block": lambda a: a})


def test_attention_that_never_sees_the_mark_is_an_error(dc):
    args = {"img": torch.zeros(1, 4, 8), "txt": torch.zeros(1, 3, 8), "transformer_options": {}}
    with pytest.raises(RuntimeError, match="never saw the GAG mark"):
        _patch(dc, "double")(args, {"original_block": lambda a: {"img": a["img"], "txt": a["txt"]}})


def test_single_block_text_length_sources(dc):
    seen = {}

    def block(args):
        seen["mark"] = args["transformer_options"][dc.MARK_KEY]
        seen["mark"].consumed = 1
        return {"img": args["img"]}

    joint = torch.zeros(1, 9, 8)
    _patch(dc, "single")({"img": joint, "transformer_options": {"img_slice": [5, 9]}},
                         {"original_block": block})
    assert (seen["mark"].text_tokens, seen["mark"].joint_tokens) == (5, 9)
    _patch(dc, "single")({"img": joint, "transformer_options": {dc.TEXT_TOKENS_KEY: 4}},
                         {"original_block": block})
    assert seen["mark"].text_tokens == 4
    with pytest.raises(RuntimeError, match="number of text tokens .* is unknown"):
        _patch(dc, "single")({"img": joint, "transformer_options": {}}, {"original_block": block})
    # Joint mode does not need it.
    _patch(dc, "single", mode="joint")({"img": joint, "transformer_options": {}},
                                       {"original_block": block})
    assert seen["mark"].text_tokens is None
