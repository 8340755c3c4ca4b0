"""GAG on the video families (Wan 2.1/2.2, Wan VACE, Wan-Animate-2, HunyuanVideo 1.5, LTX-Video,
LTX-2), end to end through ComfyUI's real samplers on tiny random-weight models that ComfyUI's
own loader and detection built (tests/comfy/tiny_video.py). Wan's other siblings, and what VACE's
and Wan-Animate-2's extra attention gets: tests/comfy/test_wan_siblings.py.

Each test samples a few steps of a multi-frame latent and checks a property of the patched
model against the same model unpatched: GAG changes the result, acts exactly on the selected
blocks' text cross-attention (Wan, LTX) or joint attention (HunyuanVideo 1.5), is exactly off
outside its schedule window, leaves the input model alone, is per-sample (batching and the
cond/uncond split do not change it) and chains with patches installed before it. Wan I2V's
CLIP-image cross-attention stays unguided; Wan 2.2's two experts are each guided. Families a
ComfyUI lacks skip with the reason (HunyuanVideo 1.5, Wan-Animate-2 and LTX-2 on 0.3.64).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib

import pytest
import torch

import tiny_families as tf
from conftest import import_pack, record_guided_calls, rel_change

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def tv():
    import_pack()
    import tiny_video
    return tiny_video


SAMPLED = ["wan", "wan_i2v", "wan22_ti2v", "wan_vace", "wan_animate2", "hunyuan_video15",
           "ltxv", "ltx2"]
_MODELS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _drop_models():
    """Release the shared tiny models with the module (a ModelPatcher left for interpreter exit
    complains in its __del__)."""
    yield
    _MODELS.clear()


class Video:
    """A tiny video model of one recipe, sampled with the recipe's conditioning."""

    def __init__(self, tv, name, seed=0):
        self.tv, self.recipe = tv, tv.RECIPES[name]
        reason = self.recipe.unavailable()
        if reason:
            pytest.skip(reason)
        key = (name, seed)
        if key not in _MODELS:
            _MODELS[key] = self.recipe.build(seed)
        self.patcher = _MODELS[key]
        self.selection = self.recipe.selection

    def noise(self, batch=1, seed=0, frames=None):
        return self.tv.make_noise(self.recipe, batch, seed, frames)

    def row(self, noise, i):
        """Batch row ``i`` of (possibly nested: LTX-2's video and audio) noise."""
        if hasattr(noise, "tensors"):
            import comfy.nested_tensor
            return comfy.nested_tensor.NestedTensor([t[i:i + 1] for t in noise.tensors])
        return noise[i:i + 1]

    def sample(self, patcher=None, **kwargs):
        """The sampled video (LTX-2: its video stream; audio_of gives the audio)."""
        return self.tv.streams(self.sample_streams(patcher, **kwargs))[0]

    def sample_streams(self, patcher=None, **kwargs):
        r = self.recipe
        return self.tv.sample(r, patcher or self.patcher, r.conditioning(seed=1),
                              r.conditioning(seed=2), **kwargs)

    @property
    def video_tokens(self):
        """Query tokens of the video stream for the recipe's latent."""
        r = self.recipe
        patch = {"hunyuan_video15": 1, "ltxv": 1, "ltx2": 1}.get(r.family_id, 2)
        return r.frames * (r.size // patch) ** 2


@pytest.fixture(scope="module", params=SAMPLED)
def video(request, tv):
    return Video(tv, request.param)


@pytest.fixture
def gag_hits(monkeypatch, dit_hook):
    """Every attention call that ran GAG: (layer, query tokens, key tokens)."""
    return record_guided_calls(monkeypatch, dit_hook, lambda override, layer, call: (
        str(layer), call.query_tokens, call.key_tokens))


def selected(video):
    return sorted(item.strip() for item in video.selection.split(","))


# ---------------------------------------------------------------------------------------------
# detection and the family table
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["wan", "wan_i2v", "wan22_ti2v", "wan_vace", "hunyuan_video15",
                                  "ltxv", "ltx2"])
def test_released_checkpoint_is_detected_and_claimed_by_its_family(tv, family_table, name):
    """The released model's key names and shapes (meta tensors) through comfy.model_detection
    pick the recipe's class, with the facts the family entry relies on; the family table claims
    the model built from them, and one of the family's layer-map layouts has its block count."""
    import comfy.model_patcher
    recipe = tv.RECIPES[name]
    reason = recipe.unavailable()
    if reason:
        pytest.skip(reason)
    model_config = tf.detect_released(recipe.full_size_state_dict(), recipe.model_class,
                                      recipe.detected)
    model_config.set_inference_dtype(torch.bfloat16, None)
    model = model_config.get_model({}, device="meta")
    meta = torch.device("meta")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=meta, offload_device=meta)
    family = family_table.find_family(patcher)
    assert family.id == recipe.family_id
    blocks = {ref.group: 0 for ref in family_table.available_layers(family, patcher)}
    for ref in family_table.available_layers(family, patcher):
        blocks[ref.group] += 1
    assert blocks in [dict(layout.blocks) for layout in family.layouts]


def test_wan22_a14b_experts_are_wan(tv, family_table):
    """Wan 2.2 T2V and I2V A14B experts (no CLIP branch; I2V takes 36 input channels) are
    detected as WAN21_T2V and guided as the Wan family."""
    import comfy.model_detection
    import comfy.model_patcher
    recipe = tv.RECIPES["wan"]
    for in_dim in (16, 36):
        expert = dataclasses.replace(recipe, full_size=dict(recipe.full_size, in_dim=in_dim))
        state_dict = expert.full_size_state_dict()
        model_config = comfy.model_detection.model_config_from_unet(state_dict, "")
        assert type(model_config).__name__ == "WAN21_T2V"
        model_config.set_inference_dtype(torch.bfloat16, None)
        meta = torch.device("meta")
        patcher = comfy.model_patcher.ModelPatcher(model_config.get_model({}, device="meta"),
                                                   load_device=meta, offload_device=meta)
        assert family_table.find_family(patcher).id == "wan"


def test_ltx2_is_claimed_by_its_own_entry(family_table):
    """LTX-2 (LTXAVModel, a subclass of LTX-Video's) is the ltx2 entry, whose blocks are reached
    through `dit` replaces and whose text argument is the video context."""
    import comfy.supported_models as sm
    import comfy.model_patcher
    if not hasattr(sm, "LTXAV"):
        pytest.skip("this ComfyUI has no comfy.supported_models.LTXAV (LTX-2)")
    mc = sm.LTXAV(dict(image_model="ltxav", num_layers=48, attention_head_dim=128,
                       cross_attention_dim=4096))
    mc.set_inference_dtype(torch.bfloat16, None)
    meta = torch.device("meta")
    patcher = comfy.model_patcher.ModelPatcher(mc.get_model({}, device="meta"),
                                               load_device=meta, offload_device=meta)
    family = family_table.find_family(patcher)
    assert family.id == "ltx2" and family.text == "cross"
    assert family.group("blocks").text_arg == "v_context"
    assert len(family_table.available_layers(family, patcher)) == 48


def test_the_tiny_model_is_claimed_by_its_family(video, family_table):
    assert family_table.find_family(video.patcher).id == video.recipe.family_id


# ---------------------------------------------------------------------------------------------
# GAG on sampled video
# ---------------------------------------------------------------------------------------------

def test_gag_changes_the_sample(video, api):
    plain = video.sample()
    guided = video.sample(api.apply_gag(video.patcher))
    assert torch.isfinite(guided).all()
    assert rel_change(guided, plain) > video.recipe.min_effect


def test_only_the_selected_blocks_run_gag(video, api, gag_hits):
    steps = 3
    video.sample(api.apply_gag(video.patcher, layers=video.selection), steps=steps)
    assert sorted({layer for layer, _, _ in gag_hits}) == selected(video)
    # one model call per step (CFG 1), one guided call per selected block
    assert len(gag_hits) == steps * len(selected(video))


def test_the_guided_call_is_the_text_retrieval_of_every_frame(video, api, gag_hits, family_table):
    """Every frame's tokens are queries of the guided call: the cross-attention over the text
    (Wan, LTX) or the joint attention (HunyuanVideo 1.5: text, then the video)."""
    family = family_table.find_family(video.patcher)
    video.sample(api.apply_gag(video.patcher, layers=video.selection), steps=1)
    assert gag_hits
    text = 7 + (3 if family.id == "hunyuan_video15" else 0)  # + byT5 glyph tokens
    for _, queries, keys in gag_hits:
        if family.text == "cross":
            assert (queries, keys) == (video.video_tokens, text)
        else:
            assert queries == keys == video.video_tokens + text


def test_one_frame_and_many_frames(video, api):
    """A single-frame latent (an image) and a longer clip both run and are guided."""
    patched = api.apply_gag(video.patcher)
    for frames in (1, video.recipe.frames + 2):
        plain = video.sample(noise=video.noise(frames=frames))
        guided = video.sample(patched, noise=video.noise(frames=frames))
        assert guided.shape == plain.shape and guided.shape[2] == frames
        assert rel_change(guided, plain) > video.recipe.min_effect


def test_default_preset_guides_every_block(video, api, family_table, gag_hits):
    video.sample(api.apply_gag(video.patcher), steps=1)
    entry = family_table.find_family(video.patcher)
    every = sorted(str(ref) for ref in family_table.available_layers(entry, video.patcher))
    assert sorted(layer for layer, _, _ in gag_hits) == every


def test_schedule_window_without_steps_is_exactly_unpatched(video, api, gag_hits):
    plain = video.sample()
    patched = api.apply_gag(video.patcher, start_percent=0.99, end_percent=1.0)
    assert torch.equal(video.sample(patched), plain)
    assert gag_hits == []


def test_partial_window_guides_only_late_steps(video, api, gag_hits):
    patched = api.apply_gag(video.patcher, layers=video.selection, start_percent=0.5)
    video.sample(patched, steps=4)
    per_call = len(selected(video))
    assert 0 < len(gag_hits) < 4 * per_call and len(gag_hits) % per_call == 0


def test_input_model_is_not_mutated(video, api):
    before = video.sample()
    options_before = copy.deepcopy(video.patcher.model_options)
    video.sample(api.apply_gag(video.patcher))
    assert video.patcher.model_options == options_before
    assert "optimized_attention_override" not in video.patcher.model_options.get(
        "transformer_options", {})
    assert torch.equal(video.sample(), before)


def test_batch_equals_separate_runs(video, api):
    patched = api.apply_gag(video.patcher)
    noise = video.noise(batch=2, seed=5)
    together = video.sample(patched, noise=noise)
    apart = torch.cat([video.sample(patched, noise=video.row(noise, i)) for i in range(2)])
    torch.testing.assert_close(together, apart, atol=1e-4, rtol=1e-4)


def test_cond_and_uncond_joined_equals_split(video, api, gag_hits, monkeypatch):
    patched = api.apply_gag(video.patcher, layers=video.selection)
    steps, per_call = 2, len(selected(video))
    joined = video.sample(patched, steps=steps, cfg=3.0)
    assert len(gag_hits) == steps * per_call
    # calc_cond_batch batches cond with uncond only when 1.5× the model's memory estimate fits;
    # with an unbounded estimate each runs as its own model call.
    monkeypatch.setattr(patched.model, "memory_required", lambda *a, **k: float("inf"))
    gag_hits.clear()
    split = video.sample(patched, steps=steps, cfg=3.0)
    assert len(gag_hits) == 2 * steps * per_call
    torch.testing.assert_close(split, joined, atol=1e-4, rtol=1e-4)


class Shared:
    """Kept, not copied, when ComfyUI's clone() deep-copies model_options (0.3.64), as patch
    objects that keep state across clones do."""

    def __deepcopy__(self, memo):
        return self


class CountingOverride(Shared):
    """An attention override installed before GAG: counts its calls, returns the default."""

    def __init__(self):
        self.calls = 0

    def __call__(self, func, *args, **kwargs):
        self.calls += 1
        return func(*args, **kwargs)


class CountingBlockReplace(Shared):
    """A `dit` block replace installed before GAG: counts its calls, runs the block."""

    def __init__(self):
        self.calls = 0

    def __call__(self, args, extra):
        self.calls += 1
        return extra["original_block"](args)


def test_chains_with_patches_installed_before_it(video, api, gag_hits):
    """An earlier attention override still sees every attention call and an earlier `dit`
    replace still runs its block, with GAG on top; GAG still guides."""
    earlier = video.patcher.clone()
    override, replace = CountingOverride(), CountingBlockReplace()
    earlier.model_options.setdefault("transformer_options", {})[
        "optimized_attention_override"] = override
    earlier.set_model_patch_replace(replace, "dit", "double_block", 1)
    video.sample(earlier, steps=1)
    calls_alone, replaced_alone = override.calls, replace.calls
    assert calls_alone > 0 and replaced_alone == 1
    override.calls = replace.calls = 0
    plain_with_earlier = video.sample(earlier, steps=1)
    guided = video.sample(api.apply_gag(earlier, layers=video.selection), steps=1)
    assert override.calls == 2 * calls_alone and replace.calls == 2
    assert len(gag_hits) == len(selected(video))
    assert rel_change(guided, plain_with_earlier) > video.recipe.min_effect


# ---------------------------------------------------------------------------------------------
# family-specific
# ---------------------------------------------------------------------------------------------

def test_wan_i2v_clip_image_attention_is_not_guided(tv, api, gag_hits):
    """Wan I2V's blocks attend to the 257 CLIP-image tokens in a second cross-attention call:
    GAG guides only the text call, and the image call is exactly the unguided one."""
    video = Video(tv, "wan_i2v")
    video.sample(api.apply_gag(video.patcher), steps=1)
    assert len(gag_hits) == 2  # two blocks, one guided call each
    assert {keys for _, _, keys in gag_hits} == {7}


def test_wan22_both_experts_are_guided(tv, api, family_table, gag_hits):
    """Wan 2.2 A14B samples with a high-noise expert for the first steps and a low-noise
    expert for the rest (two models, as KSamplerAdvanced runs them). The same GAG settings
    patch each; both are guided and the result differs from the unguided pair."""
    import comfy.sample
    import comfy.samplers
    settings_mod = importlib.import_module("comfyui_gag.nodes.settings")
    high, low = Video(tv, "wan", seed=0), Video(tv, "wan", seed=1)
    settings = settings_mod.GAGSettings()
    guided = [api.patch_model(v.patcher, settings) for v in (high, low)]
    r = high.recipe
    positive, negative = r.conditioning(seed=1), r.conditioning(seed=2)
    noise = high.noise(seed=3)

    def pair(models):
        hits_per_expert = []
        latent = torch.zeros_like(noise)
        for i, model in enumerate(models):
            before = len(gag_hits)
            latent = comfy.sample.sample(
                model, noise if i == 0 else torch.zeros_like(noise), 4, 1.0, "euler", "simple",
                positive, negative, latent, start_step=2 * i, last_step=2 * i + 2,
                force_full_denoise=i == 1, disable_noise=i == 1, seed=3, disable_pbar=True)
            hits_per_expert.append(len(gag_hits) - before)
        return latent, hits_per_expert

    plain, plain_hits = pair([high.patcher, low.patcher])
    assert plain_hits == [0, 0]
    out, hits = pair(guided)
    assert hits == [2 * 2, 2 * 2]  # 2 steps × 2 blocks on each expert
    assert rel_change(out, plain) > 1e-3
    assert (family_table.find_family(high.patcher).id
            == family_table.find_family(low.patcher).id == "wan")


def test_hunyuan_video15_i2v_vision_tokens_count_as_conditioning(tv, api, gag_hits):
    """HunyuanVideo 1.5 I2V puts SigLIP image tokens before the byT5 and text tokens; text mode
    guides the video's retrieval of that whole conditioning span (the boundary ComfyUI's
    img_slice gives single blocks)."""
    video = Video(tv, "hunyuan_video15")
    r = video.recipe
    positive = r.conditioning(seed=1, image_tokens=5)
    negative = r.conditioning(seed=2, image_tokens=5)
    plain = tv.sample(r, video.patcher, positive, negative, steps=1)
    guided = tv.sample(r, api.apply_gag(video.patcher, layers="double 0"), positive, negative,
                       steps=1)
    assert rel_change(guided, plain) > 1e-3
    assert [(q, k) for _, q, k in gag_hits] == [(video.video_tokens + 15,) * 2]


# ---------------------------------------------------------------------------------------------
# the strength readout on video runs
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def readout():
    import_pack()
    return importlib.import_module("comfyui_gag.nodes.gain_readout")


def test_readout_reports_the_gain_of_a_video_run(video, api, family_table, readout, caplog):
    """The readout (GAG Model Patch's gain line) covers video runs: every guided block, every
    step, a gain above 1; the samples are bit-identical with and without it, and the log line
    is written."""
    import logging
    with_readout = api.apply_gag(video.patcher)
    without = api.apply_gag(video.patcher, readout=False)
    with caplog.at_level(logging.INFO, logger="comfyui_gag"):
        a = video.sample(with_readout, steps=2)
    b = video.sample(without, steps=2)
    assert torch.equal(a, b)
    result = readout.last_readout(with_readout)
    assert result is not None and readout.last_readout(without) is None
    family = family_table.find_family(video.patcher)
    layers = family_table.available_layers(family, video.patcher)
    assert [s for s, _ in result.steps] == [0, 1] and result.total_steps == 2
    assert set(result.groups) == {ref.group for ref in layers}
    assert result.layers == len(layers)
    assert result.overall.median > 1.0
    assert any(r.getMessage().startswith("GAG: attention gain") for r in caplog.records)


def test_readout_reports_each_wan22_expert(tv, api, readout):
    """Wan 2.2's experts are two sampling runs of two patched models: each reports its own
    steps of the split."""
    import comfy.sample
    settings = importlib.import_module("comfyui_gag.nodes.settings").GAGSettings()
    high, low = Video(tv, "wan", seed=0), Video(tv, "wan", seed=1)
    experts = [api.patch_model(v.patcher, settings) for v in (high, low)]
    r = high.recipe
    positive, negative = r.conditioning(seed=1), r.conditioning(seed=2)
    noise = high.noise(seed=3)
    latent = torch.zeros_like(noise)
    for i, model in enumerate(experts):
        latent = comfy.sample.sample(
            model, noise if i == 0 else torch.zeros_like(noise), 4, 1.0, "euler", "simple",
            positive, negative, latent, start_step=2 * i, last_step=2 * i + 2,
            force_full_denoise=i == 1, disable_noise=i == 1, seed=3, disable_pbar=True)
    for model in experts:
        result = readout.last_readout(model)
        assert result is not None and len(result.steps) == 2 and result.layers == 2
        assert result.overall.median > 1.0


# ---------------------------------------------------------------------------------------------
# LTX-2: video guided, audio left alone
# ---------------------------------------------------------------------------------------------

def test_ltx2_guides_only_the_video_text_cross_attention(tv, api, gag_hits, monkeypatch,
                                                         dit_hook):
    """Every LTX-2 block runs video self- and text cross-attention, audio self- and text
    cross-attention and audio↔video attention: GAG guides the video's text retrieval only, and
    every audio attention call goes to ComfyUI's attention unchanged."""
    video = Video(tv, "ltx2")
    calls = []
    original = dit_hook.JointAttentionOverride.__call__

    def spy(self, func, *args, **kwargs):
        call = importlib.import_module("comfyui_gag.nodes.adapters.attention_call").AttentionCall(
            args, kwargs)
        calls.append((call.query_tokens, call.key_tokens))
        return original(self, func, *args, **kwargs)

    monkeypatch.setattr(dit_hook.JointAttentionOverride, "__call__", spy)
    video.sample_streams(api.apply_gag(video.patcher), steps=1)
    audio_tokens = 5
    assert any(q == audio_tokens for q, _ in calls), "the tiny LTX-2 ran no audio attention"
    assert len(gag_hits) == 2  # one guided call per block
    assert {(q, k) for _, q, k in gag_hits} == {(video.video_tokens, 7)}


def test_ltx2_audio_is_changed_only_through_the_video(tv, api):
    """GAG changes LTX-2's video and, through the audio↔video attention, its audio; with the
    video stream's guidance off (schedule window empty) both are exactly unguided."""
    video = Video(tv, "ltx2")
    plain = video.sample_streams()
    guided = video.sample_streams(api.apply_gag(video.patcher))
    off = video.sample_streams(api.apply_gag(video.patcher, start_percent=0.99))
    for p, g, o in zip(tv.streams(plain), tv.streams(guided), tv.streams(off)):
        assert torch.equal(p, o)
    assert rel_change(tv.streams(guided)[0], tv.streams(plain)[0]) > video.recipe.min_effect


def test_ltx2_audio_only_call_is_refused_by_name(tv, api):
    """A model call that runs only LTX-2's audio stream (transformer_options run_vx False) has
    nothing GAG guides: a clear error, not a silent no-op."""
    video = Video(tv, "ltx2")
    patched = api.apply_gag(video.patcher)
    patched.model_options["transformer_options"]["run_vx"] = False
    with pytest.raises(RuntimeError, match="audio stream only"):
        video.sample_streams(patched, steps=1)
