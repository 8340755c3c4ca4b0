"""Wan's siblings: the WanModel subclasses ComfyUI loads (comfy/model_base.py), each as a tiny
random-weight model that ComfyUI's own loader and detection built (tests/comfy/tiny_video.py
SIBLINGS and RECIPES), sampled through ComfyUI's real sampler with the conditioning its
``extra_conds`` reads.

What each gets from GAG (nodes/adapters/families.py says why):

- guided as Wan (``wan`` / ``wan_i2v``): Camera (2.1 and 2.2), Fun Control, HuMo, S2V,
  Wan-Animate, SCAIL, SCAIL-2, WanDancer, FlowRVS. GAG changes the sample, guides exactly the
  selected blocks' text cross-attention once per model call, and no attention the sibling adds
  (CLIP-image, HuMo's per-frame audio attention; S2V's and WanDancer's audio injection and
  Wan-Animate's face attention never reach an attention override: they get no
  transformer_options); batch N == N×1; cond/uncond joined == split; the per-model-call audit
  passes (sampling would raise otherwise).
- guided with their own entries through `dit` replace marks: Wan VACE (its vace_blocks run
  with the main block's block info) and Wan-Animate-2 (its pose branch likewise): that extra
  attention stays unguided. The full family suite runs on both in test_video_families.py.
- refused: Wan 2.1 CausalAR, whose ar_video sampler runs the blocks without
  transformer_options or model wrappers (shown here, so the refusal is revisited when ComfyUI
  changes that).

Siblings a ComfyUI lacks skip with the reason (0.3.64 has Camera, Fun Control, HuMo, S2V,
Wan-Animate and VACE). On 0.3.64 S2V's forward hands its blocks no transformer_options: GAG
refuses it there.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from conftest import import_pack, rel_change

pytestmark = pytest.mark.comfy

GUIDED = ["camera", "camera22", "fun_control", "humo", "s2v", "animate", "scail", "scail2",
          "wandancer", "flow_rvs"]
TEXT_TOKENS = 7
STEPS = 2
_MODELS: dict = {}


@pytest.fixture(scope="module")
def tv():
    import_pack()
    import tiny_video
    return tiny_video


@pytest.fixture(scope="module", autouse=True)
def _drop_models():
    yield
    _MODELS.clear()


class Sibling:
    """A tiny sibling model and its conditioning (tiny_video.SIBLINGS or RECIPES)."""

    def __init__(self, tv, name, recipes=None):
        self.tv = tv
        self.name = name
        self.recipe = (recipes or tv.SIBLINGS)[name]
        reason = self.recipe.unavailable()
        if reason:
            pytest.skip(reason)
        if name not in _MODELS:
            _MODELS[name] = self.recipe.build()
        self.patcher = _MODELS[name]

    def sample(self, patcher=None, positive=None, negative=None, **kwargs):
        r = self.recipe
        return self.tv.sample(r, patcher or self.patcher,
                              positive if positive is not None else r.conditioning(seed=1),
                              negative if negative is not None else r.conditioning(seed=2),
                              **kwargs)

    @property
    def video_tokens(self) -> int:
        r = self.recipe
        return r.frames * (r.size // 2) ** 2

    @property
    def guided_queries(self) -> int:
        """The queries of the blocks' text cross-attention: the video tokens, and for SCAIL the
        reference frame before them and the pose tokens after them in the same sequence."""
        if self.name.startswith("scail"):
            return self.video_tokens + (self.recipe.size // 2) ** 2 + self.video_tokens
        return self.video_tokens


def blocks_get_options(patcher) -> bool:
    compat = importlib.import_module("comfyui_gag.nodes.adapters.comfy_compat")
    return compat.blocks_get_transformer_options(patcher.model.diffusion_model)


@pytest.fixture(scope="module", params=GUIDED)
def sibling(request, tv):
    found = Sibling(tv, request.param)
    if not blocks_get_options(found.patcher):
        pytest.skip(f"{request.param}: this ComfyUI runs its blocks without transformer_options; "
                    f"GAG refuses it here (test_a_sibling_whose_blocks_get_no_options_is_refused)")
    return found


@pytest.fixture
def attention_calls(monkeypatch, dit_hook):
    """Every attention call that reached GAG's override: [ComfyUI's block_index (None on
    0.3.64), queries, keys, guided], guided: the block GAG guided the call as, or False."""
    AttentionCall = importlib.import_module(
        "comfyui_gag.nodes.adapters.attention_call").AttentionCall
    calls = []
    original_call = dit_hook.JointAttentionOverride.__call__
    original_guide = dit_hook.JointAttentionOverride.guide

    def spy_call(self, func, *args, **kwargs):
        call = AttentionCall(args, kwargs)
        options = kwargs.get("transformer_options") or {}
        calls.append([options.get("block_index"), call.query_tokens, call.key_tokens, False])
        return original_call(self, func, *args, **kwargs)

    def spy_guide(self, layer, call, *args):
        calls[-1][3] = layer.block   # the call being handled is the last one seen
        return original_guide(self, layer, call, *args)

    monkeypatch.setattr(dit_hook.JointAttentionOverride, "__call__", spy_call)
    monkeypatch.setattr(dit_hook.JointAttentionOverride, "guide", spy_guide)
    return calls


def guided(calls):
    """(block, queries, keys) of each call GAG guided, in order."""
    return [(block, q, k) for _, q, k, block in calls if block is not False]


# ---------------------------------------------------------------------------------------------
# siblings guided as Wan
# ---------------------------------------------------------------------------------------------

def test_the_sibling_is_claimed_by_its_wan_entry(sibling, family_table):
    assert family_table.find_family(sibling.patcher).id == sibling.recipe.family_id


def test_the_siblings_own_conditioning_is_live(sibling):
    """The tiny model reads the sibling's conditioning (audio, pose, camera, face, reference):
    without it the sample differs, so the tests below run the sibling's own code paths."""
    r = sibling.recipe
    [[text, extra]] = r.conditioning(seed=1)
    if not extra:
        pytest.skip(f"{sibling.name} takes no conditioning beyond the text")
    bare = [[text, {}]]
    [[neg_text, _]] = r.conditioning(seed=2)
    with_extra = sibling.sample(steps=1)
    without = sibling.sample(positive=bare, negative=[[neg_text, {}]], steps=1)
    assert rel_change(with_extra, without) > 1e-4


def test_gag_guides_exactly_the_selected_blocks_text_cross_attention(sibling, api,
                                                                    attention_calls):
    plain = sibling.sample(steps=STEPS)
    out = sibling.sample(api.apply_gag(sibling.patcher, layers="blocks 1"), steps=STEPS)
    assert torch.isfinite(out).all()
    assert rel_change(out, plain) > 1e-3
    # one model call per step (CFG 1), one guided call in it: block 1's text retrieval
    assert guided(attention_calls) == [(1, sibling.guided_queries, TEXT_TOKENS)] * STEPS
    # every block's text call ran once per step (block 0's unguided), and the sibling's other
    # calls that reached GAG (self-attention, CLIP image, audio) went unguided
    blocks = len(sibling.patcher.model.diffusion_model.blocks)
    text_calls = [c for c in attention_calls if (c[1], c[2]) == (sibling.guided_queries,
                                                                 TEXT_TOKENS)]
    assert len(text_calls) == blocks * STEPS
    assert len(attention_calls) > len(text_calls)


def test_every_block_by_default(sibling, api, attention_calls):
    sibling.sample(api.apply_gag(sibling.patcher), steps=1)
    blocks = len(sibling.patcher.model.diffusion_model.blocks)
    assert guided(attention_calls) == [(i, sibling.guided_queries, TEXT_TOKENS)
                                       for i in range(blocks)]


def test_batch_equals_separate_runs(sibling, api):
    patched = api.apply_gag(sibling.patcher)
    noise = sibling.tv.make_noise(sibling.recipe, batch=2, seed=5)
    together = sibling.sample(patched, noise=noise)
    apart = torch.cat([sibling.sample(patched, noise=noise[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(together, apart, atol=1e-4, rtol=1e-4)


def test_cond_and_uncond_joined_equals_split(sibling, api, attention_calls, monkeypatch):
    patched = api.apply_gag(sibling.patcher, layers="blocks 1")
    joined = sibling.sample(patched, cfg=3.0)
    assert len(guided(attention_calls)) == STEPS
    # calc_cond_batch batches cond with uncond only when 1.5× the memory estimate fits
    monkeypatch.setattr(patched.model, "memory_required", lambda *a, **k: float("inf"))
    attention_calls.clear()
    split = sibling.sample(patched, cfg=3.0)
    assert len(guided(attention_calls)) == 2 * STEPS
    torch.testing.assert_close(split, joined, atol=1e-4, rtol=1e-4)


def test_humo_audio_attention_reaches_gag_unguided(tv, api, attention_calls):
    """HuMo's per-frame audio cross-attention (each frame's tokens against its 16 audio
    tokens) runs with the block's block info and reaches GAG's override: GAG leaves it alone."""
    humo = Sibling(tv, "humo")
    humo.sample(api.apply_gag(humo.patcher), steps=1)
    frame_tokens = (humo.recipe.size // 2) ** 2
    audio = [c for c in attention_calls if (c[1], c[2]) == (frame_tokens, 16)]
    assert len(audio) == len(humo.patcher.model.diffusion_model.blocks)
    assert all(block is False for *_, block in audio)


def test_without_clip_vision_both_text_retrievals_are_guided(tv, api, attention_calls):
    """A Wan I2V-type block (Wan I2V, Camera 2.1, Wan-Animate, SCAIL, WanDancer) given no
    CLIP-vision features runs its image branch over the text as well: two calls of the same
    shape. GAG guides both on either ComfyUI (0.33's block info sees both; 0.3.64's block mark
    is not spent by the first), so the result does not depend on the ComfyUI version."""
    i2v = Sibling(tv, "wan_i2v", tv.RECIPES)
    positive, negative = tv.wan_conditioning(seed=1), tv.wan_conditioning(seed=2)
    plain = i2v.sample(positive=positive, negative=negative, steps=1)
    out = i2v.sample(api.apply_gag(i2v.patcher, layers="blocks 1"), positive, negative, steps=1)
    assert rel_change(out, plain) > 1e-3
    text_calls = [c for c in attention_calls if c[2] == TEXT_TOKENS]
    assert [block for *_, block in text_calls] == [False, False, 1, 1]


# ---------------------------------------------------------------------------------------------
# VACE and Wan-Animate-2: the extra attention that shares a main block's block info
# ---------------------------------------------------------------------------------------------

def test_vace_blocks_are_not_guided(tv, api, attention_calls):
    """VACE block 0 runs after main block 0 with block_index 0, its own self- and text
    cross-attention over the control video's tokens: GAG on block 0 guides the main block's
    text cross-attention only (one call per step, though two text calls carry block 0)."""
    vace = Sibling(tv, "wan_vace", tv.RECIPES)
    r = vace.recipe
    positive = r.conditioning(seed=1, frames=r.frames, size=r.size)
    negative = r.conditioning(seed=2, frames=r.frames, size=r.size)
    plain = vace.sample(positive=positive, negative=negative, steps=STEPS)
    out = vace.sample(api.apply_gag(vace.patcher, layers="blocks 0"), positive, negative,
                      steps=STEPS)
    assert rel_change(out, plain) > 1e-3
    # per step: main block 0, VACE block 0 (after it), main block 1
    text_calls = [c for c in attention_calls if c[2] == TEXT_TOKENS]
    assert [(q, block) for _, q, _, block in text_calls] == [
        (vace.video_tokens, 0), (vace.video_tokens, False), (vace.video_tokens, False)] * STEPS
    if text_calls[0][0] is not None:   # ComfyUI 0.33+ tells the block: VACE's says block 0
        assert [c[0] for c in text_calls] == [0, 0, 1] * STEPS


def test_vace_control_video_is_live(tv):
    """The tiny VACE model reads the control video: the test above runs its VACE block on it."""
    vace = Sibling(tv, "wan_vace", tv.RECIPES)
    r = vace.recipe
    control = vace.sample(positive=r.conditioning(seed=1, frames=r.frames, size=r.size),
                          negative=r.conditioning(seed=2, frames=r.frames, size=r.size),
                          steps=1)
    assert rel_change(control, vace.sample(steps=1)) > 1e-4


def test_animate2_pose_branch_is_not_guided(tv, api, attention_calls):
    """With pose latents Wan-Animate-2 runs every block over the pose tokens first, text
    cross-attention included, with the block's block info: GAG guides the generation pass's
    text cross-attention only."""
    animate2 = Sibling(tv, "wan_animate2", tv.RECIPES)
    r = animate2.recipe
    hw = (r.size // 2) ** 2
    positive = r.conditioning(seed=1, pose_frames=r.frames - 1, size=r.size)
    negative = r.conditioning(seed=2, pose_frames=r.frames - 1, size=r.size)
    plain = animate2.sample(positive=positive, negative=negative, steps=STEPS)
    out = animate2.sample(api.apply_gag(animate2.patcher), positive, negative, steps=STEPS)
    assert rel_change(out, plain) > 1e-3
    blocks = len(animate2.patcher.model.diffusion_model.blocks)
    pose_text = [c for c in attention_calls if (c[1], c[2]) == ((r.frames - 1) * hw,
                                                                 TEXT_TOKENS)]
    assert len(pose_text) == blocks * STEPS
    assert all(block is False for *_, block in pose_text)
    assert guided(attention_calls) == [(i, animate2.video_tokens, TEXT_TOKENS)
                                       for i in range(blocks)] * STEPS


def test_a_sibling_whose_blocks_get_no_options_is_refused(tv, api):
    """Wan 2.2 S2V on ComfyUI 0.3.64 runs its blocks (and their `dit` replaces) without
    transformer_options: GAG could reach none of their attention, so it refuses the model when
    it is patched, naming it. ComfyUI 0.33 passes them, and S2V is guided (tests above)."""
    s2v = Sibling(tv, "s2v")
    if blocks_get_options(s2v.patcher):
        assert api.apply_gag(s2v.patcher) is not s2v.patcher
        pytest.skip("this ComfyUI hands S2V's blocks their transformer_options (0.33+): guided")
    with pytest.raises(ValueError, match=r"WanModel_S2V.*without transformer_options"):
        api.apply_gag(s2v.patcher)


def test_the_code_reading_judges_only_a_sibling_own_forward(tv, api, monkeypatch):
    """The check behind that refusal reads code, and a new ComfyUI's code style could fool it:
    it is asked only of a subclass that runs its own forward (S2V), never of one that runs the
    forward of its family's class, which the family's tests ran (Fun Control is a WanModel)."""
    compat = importlib.import_module("comfyui_gag.nodes.adapters.comfy_compat")
    monkeypatch.setattr(compat, "blocks_get_transformer_options", lambda model: False)
    fun_control = Sibling(tv, "fun_control")
    assert api.apply_gag(fun_control.patcher) is not fun_control.patcher
    s2v = Sibling(tv, "s2v")
    with pytest.raises(ValueError, match=r"WanModel_S2V.*without transformer_options"):
        api.apply_gag(s2v.patcher)


def test_animate2_with_the_core_pose_cache(tv, api, attention_calls):
    """With core WanAnimate2Cache the pose branch runs in the first model call only and later
    calls reuse its block inputs: GAG, applied after the cache node, guides the same calls and
    gives the same result as without the cache."""
    nodes_wan = pytest.importorskip("comfy_extras.nodes_wan")
    animate2 = Sibling(tv, "wan_animate2", tv.RECIPES)
    r = animate2.recipe
    positive = r.conditioning(seed=1, pose_frames=r.frames - 1, size=r.size)
    negative = r.conditioning(seed=2, pose_frames=r.frames - 1, size=r.size)
    without = animate2.sample(api.apply_gag(animate2.patcher), positive, negative, steps=STEPS)
    attention_calls.clear()
    cached = nodes_wan.WanAnimate2Cache.execute(animate2.patcher, "cpu").args[0]
    out = animate2.sample(api.apply_gag(cached), positive, negative, steps=STEPS)
    blocks = len(animate2.patcher.model.diffusion_model.blocks)
    hw = (r.size // 2) ** 2
    pose_text = [c for c in attention_calls if (c[1], c[2]) == ((r.frames - 1) * hw,
                                                                 TEXT_TOKENS)]
    assert len(pose_text) == blocks   # the first model call only
    assert guided(attention_calls) == [(i, animate2.video_tokens, TEXT_TOKENS)
                                       for i in range(blocks)] * STEPS
    torch.testing.assert_close(out, without, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# CausalAR: refused
# ---------------------------------------------------------------------------------------------

def test_causal_ar_is_refused_by_name(tv, api):
    causal = Sibling(tv, "causal_ar")
    with pytest.raises(ValueError, match=r"Wan 2\.1 CausalAR.*CausalWanModel.*ar_video"):
        api.apply_gag(causal.patcher)


class _CountingOverride:
    def __init__(self):
        self.calls = 0

    def __call__(self, func, *args, **kwargs):
        self.calls += 1
        return func(*args, **kwargs)

    def __deepcopy__(self, memo):
        return self


def test_causal_ar_sampler_runs_no_attention_override(tv):
    """Why CausalAR is refused: ComfyUI's ar_video sampler runs the blocks without handing
    attention its transformer_options, so no attention override (GAG's included) sees a call,
    while a standard sampler on the same model reaches it. If this starts failing, ComfyUI
    changed that and CausalAR may be supportable."""
    import comfy.sample
    import comfy.samplers
    causal = Sibling(tv, "causal_ar")
    patcher = causal.patcher.clone()
    counting = _CountingOverride()
    patcher.model_options.setdefault("transformer_options", {})[
        "optimized_attention_override"] = counting
    r = causal.recipe
    positive, negative = r.conditioning(seed=1), r.conditioning(seed=2)
    causal.sample(patcher, positive, negative, steps=1)
    assert counting.calls > 0
    counting.calls = 0
    noise = tv.make_noise(r)
    sampler = comfy.samplers.ksampler("ar_video", {"num_frame_per_block": 1})
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    out = comfy.sample.sample_custom(patcher, noise, 1.0, sampler, sigmas, positive, negative,
                                     torch.zeros_like(noise), seed=0, disable_pbar=True)
    assert torch.isfinite(out).all()
    assert counting.calls == 0
