"""Tiny random-weight video models (Wan 2.1/2.2, Wan VACE, Wan-Animate-2, HunyuanVideo 1.5,
LTX-Video, LTX-2) for CPU tests, one recipe per family table id (nodes/adapters/families.py),
and Wan's other siblings (``SIBLINGS``: models an existing entry claims, or the table refuses).

Each tiny model is made the way ComfyUI loads a checkpoint: a random state dict with the released
checkpoint's key names at tiny widths goes through ``comfy.sd.load_diffusion_model_state_dict``,
so ComfyUI's own detection (``comfy/model_detection.py``) picks the model class and config; the
build fails if it picks another class than the recipe's. The widths are ones detection reads
from the weights (Wan and HunyuanVideo derive the head count as width // 128, LTX as 32 heads of
to_k.shape[0] // 32), so the tiny models are 256 wide with 2 heads (Wan, HunyuanVideo) or 32
heads of 8 (LTX-Video). ``full_size`` gives the released model's detected config, which the
detection tests build on the meta device for its real key names and shapes.

A recipe is one block: the family id, the ComfyUI class, the tiny config, the conditioning, the
latent shape, a block selection that leaves blocks out, the released model's facts and the
oldest ComfyUI that has what the family needs. (To move into tests/comfy/tiny_families.py once
that registry lands.) Nothing here imports ComfyUI at module level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def comfyui_version() -> tuple[int, int, int]:
    """The running ComfyUI's version (its comfyui_version.py), (0, 0, 0) where unknown."""
    try:
        import comfyui_version
        return tuple(int(x) for x in comfyui_version.__version__.split(".")[:3])
    except (ImportError, AttributeError, ValueError):
        return (0, 0, 0)


# ---------------------------------------------------------------------------------------------
# conditioning
# ---------------------------------------------------------------------------------------------

def _clip_vision(tokens: int, width: int, batch: int, generator, attribute: str):
    """A ``comfy.clip_vision.Output`` with one hidden-state tensor, as CLIPVisionEncode gives."""
    import comfy.clip_vision
    out = comfy.clip_vision.Output()
    setattr(out, attribute, torch.randn(batch, tokens, width, generator=generator))
    return out


def wan_conditioning(batch=1, seed=1, tokens=7):
    """umT5-XXL text features (B, tokens, 4096): WanModel's text_dim, which detection does not
    read (ComfyUI's tokenizer pads real prompts to 512 tokens; tiny prompts keep tests fast)."""
    return [[torch.randn(batch, tokens, 4096, generator=_generator(seed)), {}]]


def wan_i2v_conditioning(batch=1, seed=1, tokens=7, image_tokens=257):
    """Wan 2.1 I2V: the text plus CLIP-H's penultimate hidden states (B, 257, 1280), which
    WanModel maps to the second cross-attention's keys."""
    g = _generator(seed)
    vision = _clip_vision(image_tokens, 1280, batch, g, "penultimate_hidden_states")
    return [[torch.randn(batch, tokens, 4096, generator=g), {"clip_vision_output": vision}]]


def wan_vace_conditioning(batch=1, seed=1, tokens=7, frames=None, size=None):
    """Wan VACE: the text; with ``frames`` and ``size``, also random control-video latents
    (B, 32, F, S, S: the inactive and reactive halves) and their mask (B, 64, F, S, S), as
    WanVaceToVideo gives. Without them WAN21_Vace.extra_conds builds zero frames and a mask of
    ones at the noise's shape: the VACE blocks still run, on an empty control video."""
    g = _generator(seed)
    extra = {}
    if frames:
        extra["vace_frames"] = [torch.randn(batch, 32, frames, size, size, generator=g)]
        extra["vace_mask"] = [torch.rand(batch, 64, frames, size, size, generator=g)]
    return [[torch.randn(batch, tokens, 4096, generator=g), extra]]


def wan_animate2_conditioning(batch=1, seed=1, tokens=7, pose_frames=0, size=4):
    """Wan-Animate-2: the text and CLIP-H image features as Wan I2V's; with ``pose_frames``
    (the generated latent frames less the reference slot), pose-video latents
    (B, 16, pose_frames, S, S), which make the model run its pose branch."""
    [[text, extra]] = wan_i2v_conditioning(batch, seed, tokens)
    if pose_frames:
        extra["pose_video_latent"] = torch.randn(batch, 16, pose_frames, size, size,
                                                 generator=_generator(seed + 100))
    return [[text, extra]]


def hunyuan_video15_conditioning(batch=1, seed=1, tokens=7, glyph_tokens=3, image_tokens=0):
    """Qwen2.5-VL text (B, tokens, 32: the tiny context width), byT5 glyph features
    (B, glyph_tokens, 1472) and, for I2V, SigLIP hidden states (B, image_tokens, 1152). The
    text encoder gives no pooled vector (``pooled_output`` None), which HunyuanVideo's
    conditioning reads."""
    g = _generator(seed)
    extra = {"pooled_output": None}
    if glyph_tokens:
        extra["conditioning_byt5small"] = torch.randn(batch, glyph_tokens, 1472, generator=g)
    if image_tokens:
        extra["clip_vision_output"] = _clip_vision(image_tokens, 1152, batch, g,
                                                   "last_hidden_state")
    return [[torch.randn(batch, tokens, 32, generator=g), extra]]


def ltxv_conditioning(batch=1, seed=1, tokens=7):
    """T5-XXL text features (B, tokens, 4096): LTXVModel's caption_channels, with the text
    encoder's attention mask (B, tokens) of integers (1 = a token), which LTXV's forward
    takes and turns into an additive mask."""
    return [[torch.randn(batch, tokens, 4096, generator=_generator(seed)),
             {"attention_mask": torch.ones(batch, tokens, dtype=torch.long)}]]


def ltx2_conditioning(batch=1, seed=1, tokens=7):
    """LTX-2's processed text: the video and audio contexts side by side on the feature axis,
    (B, tokens, 32 + 16) for the tiny model's cross-attention widths."""
    return [[torch.randn(batch, tokens, 32 + 16, generator=_generator(seed)), {}]]


# ---------------------------------------------------------------------------------------------
# the recipes
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoRecipe:
    """One video family's tiny model.

    family_id: the id in nodes/adapters/families.py that must claim the model.
    model_class: the comfy.supported_models class detection must pick.
    tiny: the unet_config of the tiny model (detection reads it back from the weights).
    conditioning(batch, seed, tokens): a CONDITIONING list.
    latent_shape(batch, frames, size): the noise shape of ``frames`` latent frames of
        ``size``×``size``; a list of shapes for a model with several streams (LTX-2: video,
        audio), sampled as ComfyUI's NestedTensor.
    selection: blocks to guide that leave others out.
    full_size: the released model's detected config; detected: what detection must read.
    min_comfyui / needs: the oldest ComfyUI the family is tested on, and what older ones lack.
    """
    family_id: str
    model_class: str
    tiny: Callable[[], dict]
    conditioning: Callable[..., list]
    latent_shape: Callable[[int, int, int], tuple]
    selection: str
    full_size: dict
    detected: dict
    min_comfyui: tuple = (0, 3, 64)
    needs: str = ""
    frames: int = 3
    size: int = 4
    sample_kwargs: dict = field(default_factory=dict)
    # what the checkpoint's metadata says (LTX-2 files carry their transformer config, which
    # detection reads; the tiny widths reach ComfyUI that way)
    metadata: Optional[dict] = None
    # the least relative change GAG must make to a sample of this tiny model: LTX-2's random
    # adaLN tables and output projections shrink every attention's share of the residual
    # stream, so the effect on the tiny model is ~1e-3 where the other families show ~0.3
    min_effect: float = 1e-3

    def unavailable(self) -> Optional[str]:
        """Why this ComfyUI cannot run the recipe, or None."""
        import comfy.supported_models as sm
        version = comfyui_version()
        if version < self.min_comfyui:
            return (f"ComfyUI {'.'.join(map(str, version))} lacks {self.needs} "
                    f"({self.family_id}; tested from "
                    f"{'.'.join(map(str, self.min_comfyui))})")
        if not hasattr(sm, self.model_class):
            return f"this ComfyUI has no comfy.supported_models.{self.model_class} ({self.family_id})"
        return None

    def state_dict(self, seed: int = 0) -> dict:
        """Random weights (unit norm gains) with the released checkpoint's key names."""
        import comfy.supported_models as sm
        import tiny_models
        mc = getattr(sm, self.model_class)(dict(self.tiny()))
        patcher = tiny_models._finish(mc, seed)
        tiny_models._unit_norms_of(patcher.model.diffusion_model)
        return dict(patcher.model.diffusion_model.state_dict())

    def build(self, seed: int = 0):
        """The tiny model loaded through ComfyUI's loader (detection picks class and config)."""
        import comfy.sd
        extra = {"metadata": self.metadata} if self.metadata else {}  # 0.3.64 takes none
        patcher = comfy.sd.load_diffusion_model_state_dict(
            self.state_dict(seed), model_options={"dtype": torch.float32}, **extra)
        if patcher is None:
            raise RuntimeError(f"ComfyUI's detection did not recognise the tiny {self.family_id}")
        picked = type(patcher.model.model_config).__name__
        if picked != self.model_class:
            raise RuntimeError(f"ComfyUI's detection picked {picked} for the tiny "
                               f"{self.family_id}, not {self.model_class}")
        return patcher

    def full_size_state_dict(self) -> dict:
        """The released model's state dict, names and shapes only (meta tensors)."""
        import comfy.supported_models as sm
        mc = getattr(sm, self.model_class)(dict(self.full_size))
        mc.set_inference_dtype(torch.bfloat16, None)
        return dict(mc.get_model({}, device="meta").diffusion_model.state_dict())


def _wan(**overrides):
    base = dict(image_model="wan2.1", model_type="t2v", dim=256, num_heads=2, ffn_dim=256,
                num_layers=2, in_dim=16, out_dim=16, patch_size=(1, 2, 2), freq_dim=256,
                window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
    return lambda: dict(base, **overrides)


def _wan_full(**overrides):
    return dict(dict(image_model="wan2.1", model_type="t2v", dim=5120, num_heads=40,
                     ffn_dim=13824, num_layers=40, in_dim=16, out_dim=16, patch_size=(1, 2, 2),
                     freq_dim=256, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True,
                     eps=1e-6), **overrides)


def _hunyuan_video15(hidden=256, heads=2, depth=2, single=0, context=32):
    return dict(image_model="hunyuan_video", in_channels=65, out_channels=32,
                patch_size=[1, 1, 1], vec_in_dim=None, axes_dim=[16, 56, 56], meanflow=False,
                context_in_dim=context, hidden_size=hidden, mlp_ratio=4.0, num_heads=heads,
                depth=depth, depth_single_blocks=single, theta=256, qkv_bias=True, byt5=True,
                guidance_embed=False, use_cond_type_embedding=True, vision_in_dim=1152,
                meanflow_sum=True)


def _ltxv(layers=2, head_dim=8, cross=256):
    return dict(image_model="ltxv", num_layers=layers, attention_head_dim=head_dim,
                cross_attention_dim=cross, use_keyframes_abs_pos_embedding=False)


def _ltx2_tiny():
    """LTX-2 with 2 blocks: video 4 heads of 8, audio 2 heads of 8, one-layer text connectors
    (released: 48 blocks, video 32 heads of 128, audio 32 of 64)."""
    return dict(image_model="ltxav", num_layers=2, attention_head_dim=8, num_attention_heads=4,
                cross_attention_dim=32, audio_attention_head_dim=8, audio_num_attention_heads=2,
                audio_cross_attention_dim=16, caption_channels=24,
                connector_attention_head_dim=8, connector_num_attention_heads=4,
                connector_num_layers=1)


RECIPES: dict[str, VideoRecipe] = {
    # Wan 2.1 T2V; Wan 2.2 T2V/I2V A14B experts share the architecture (WAN21_T2V class).
    "wan": VideoRecipe(
        "wan", "WAN21_T2V", _wan(), wan_conditioning,
        lambda b, f, s: (b, 16, f, s, s), "blocks 1",
        full_size=_wan_full(),
        detected=dict(image_model="wan2.1", model_type="t2v", dim=5120, num_heads=40,
                      num_layers=40, in_dim=16, out_dim=16)),
    "wan_i2v": VideoRecipe(
        "wan_i2v", "WAN21_I2V", _wan(model_type="i2v", in_dim=36), wan_i2v_conditioning,
        lambda b, f, s: (b, 16, f, s, s), "blocks 0",
        full_size=_wan_full(model_type="i2v", in_dim=36),
        detected=dict(image_model="wan2.1", model_type="i2v", dim=5120, num_layers=40,
                      in_dim=36)),
    "wan22_ti2v": VideoRecipe(
        "wan22_ti2v", "WAN22_T2V", _wan(in_dim=48, out_dim=48), wan_conditioning,
        lambda b, f, s: (b, 48, f, s, s), "blocks 1",
        full_size=_wan_full(dim=3072, num_heads=24, ffn_dim=14336, num_layers=30, in_dim=48,
                            out_dim=48),
        detected=dict(image_model="wan2.1", model_type="t2v", dim=3072, num_heads=24,
                      num_layers=30, in_dim=48, out_dim=48)),
    # Wan VACE: one VACE block (after main block 0; vace_in_dim 96 = 32 frame + 64 mask
    # channels), which runs self- and text cross-attention with main block 0's block info.
    "wan_vace": VideoRecipe(
        "wan_vace", "WAN21_Vace", _wan(model_type="vace", vace_layers=1, vace_in_dim=96),
        wan_vace_conditioning, lambda b, f, s: (b, 16, f, s, s), "blocks 0",
        full_size=_wan_full(model_type="vace", vace_layers=8, vace_in_dim=96),
        detected=dict(image_model="wan2.1", model_type="vace", dim=5120, num_layers=40,
                      vace_layers=8, vace_in_dim=96)),
    # Wan-Animate-2: Wan 2.1 I2V weights, picked by the checkpoint metadata's model_type as the
    # converted files carry it (their keys are Wan I2V's). The first latent frame is the
    # reference slot.
    "wan_animate2": VideoRecipe(
        "wan_animate2", "WAN_Animate2", _wan(model_type="i2v", in_dim=36),
        wan_animate2_conditioning, lambda b, f, s: (b, 16, f, s, s), "blocks 0",
        full_size=_wan_full(model_type="animate2", in_dim=36),
        detected=dict(image_model="wan2.1", model_type="animate2", dim=5120, num_layers=40,
                      in_dim=36),
        min_comfyui=(0, 33, 0), needs="Wan-Animate-2 (WanAnimate2Model)",
        metadata={"config": json.dumps({"transformer": {"model_type": "animate2"}})}),
    "hunyuan_video15": VideoRecipe(
        "hunyuan_video15", "HunyuanVideo15", lambda: _hunyuan_video15(),
        hunyuan_video15_conditioning, lambda b, f, s: (b, 32, f, s, s), "double 1",
        full_size=_hunyuan_video15(hidden=2048, heads=16, depth=54, single=0, context=3584),
        detected=dict(image_model="hunyuan_video", hidden_size=2048, num_heads=16, depth=54,
                      depth_single_blocks=0, vision_in_dim=1152, byt5=True,
                      patch_size=[1, 1, 1], in_channels=65, out_channels=32),
        min_comfyui=(0, 33, 0),
        needs="HunyuanVideo 1.5 (its HunyuanVideo model has no vision_in, and no block info)",
        frames=2),
    "ltxv": VideoRecipe(
        "ltxv", "LTXV", lambda: _ltxv(), ltxv_conditioning,
        lambda b, f, s: (b, 128, f, s, s), "blocks 1",
        full_size=_ltxv(layers=28, head_dim=64, cross=2048),
        detected=dict(image_model="ltxv", num_layers=28, attention_head_dim=64,
                      cross_attention_dim=2048),
        frames=2, size=3),
    "ltx2": VideoRecipe(
        "ltx2", "LTXAV", _ltx2_tiny, ltx2_conditioning,
        lambda b, f, s: [(b, 128, f, s, s), (b, 8, 5, 16)], "blocks 1",
        full_size=dict(image_model="ltxav", num_layers=48, attention_head_dim=128,
                       cross_attention_dim=4096),
        detected=dict(image_model="ltxav", num_layers=48, attention_head_dim=128,
                      cross_attention_dim=4096),
        min_comfyui=(0, 33, 0), needs="LTX-2 (LTXAVModel)", frames=2, size=2, min_effect=1e-4,
        metadata={"config": json.dumps({"transformer": {
            k: v for k, v in _ltx2_tiny().items() if k != "image_model"}})}),
}


# Every layer-map layout of the video families (nodes/adapters/families.py) → the comfy
# supported_models class and the config ComfyUI's detection gives the released model; the front
# end test builds each on the meta device and checks the layout against the hook's layers.
LAYOUTS: dict[str, tuple[str, dict]] = {
    "wan22_a14b": ("WAN21_T2V", _wan_full()),     # each expert (the I2V one: in_dim 36)
    "wan21_14b": ("WAN21_T2V", _wan_full()),
    "wan21_1_3b": ("WAN21_T2V", _wan_full(dim=1536, num_heads=12, ffn_dim=8960, num_layers=30)),
    "wan21_i2v_14b": ("WAN21_I2V", RECIPES["wan_i2v"].full_size),
    "wan22_ti2v_5b": ("WAN22_T2V", RECIPES["wan22_ti2v"].full_size),
    "wan_vace_14b": ("WAN21_Vace", RECIPES["wan_vace"].full_size),
    "wan_vace_1_3b": ("WAN21_Vace", _wan_full(model_type="vace", dim=1536, num_heads=12,
                                              ffn_dim=8960, num_layers=30, vace_layers=15,
                                              vace_in_dim=96)),
    "wan_animate2_14b": ("WAN_Animate2", RECIPES["wan_animate2"].full_size),
    "hunyuan_video15": ("HunyuanVideo15", RECIPES["hunyuan_video15"].full_size),
    "ltxv_2b": ("LTXV", RECIPES["ltxv"].full_size),
    "ltxv_13b": ("LTXV", _ltxv(layers=48, head_dim=128, cross=4096)),
    "ltx2": ("LTXAV", dict(image_model="ltxav", num_layers=48, attention_head_dim=128,
                           cross_attention_dim=4096)),
}


def released_model(layout_id: str):
    """The released model of a layout on the meta device (nothing allocated); AttributeError
    where this ComfyUI lacks its class (HunyuanVideo 1.5 and LTX-2 before 0.33)."""
    import comfy.supported_models as sm
    class_name, config = LAYOUTS[layout_id]
    model_config = getattr(sm, class_name)(dict(config))
    model_config.set_inference_dtype(torch.float32, None)
    with torch.device("meta"):
        return model_config.get_model({}, device=torch.device("meta"))


def make_noise(recipe: VideoRecipe, batch=1, seed=0, frames=None, size=None):
    """Noise of the recipe's latent shape: a tensor, or a NestedTensor of its streams."""
    shape = recipe.latent_shape(batch, frames or recipe.frames, size or recipe.size)
    g = _generator(seed)
    if isinstance(shape, list):
        import comfy.nested_tensor  # ComfyUI 0.33+ (LTX-2)
        return comfy.nested_tensor.NestedTensor([torch.randn(s, generator=g) for s in shape])
    return torch.randn(shape, generator=g)


def streams(latent) -> list:
    """The streams of a (possibly nested) latent: [video] or [video, audio]."""
    return list(latent.unbind()) if hasattr(latent, "tensors") else [latent]


def zeros_like(latent):
    if hasattr(latent, "tensors"):
        import comfy.nested_tensor
        return comfy.nested_tensor.NestedTensor([torch.zeros_like(t) for t in streams(latent)])
    return torch.zeros_like(latent)


def sample(recipe: VideoRecipe, patcher, positive, negative, *, steps=2, cfg=1.0, seed=0,
           frames=None, size=None, batch=1, sampler="euler", scheduler="simple", noise=None):
    """Run ComfyUI's real sampler on a tiny video latent of the recipe's shape."""
    import comfy.sample
    if noise is None:
        noise = make_noise(recipe, batch, seed, frames, size)
    latent = zeros_like(noise)
    return comfy.sample.sample(patcher, noise, steps, cfg, sampler, scheduler, positive, negative,
                               latent, seed=seed, disable_pbar=True)


# ---------------------------------------------------------------------------------------------
# Wan's siblings (ComfyUI's WanModel subclasses) that the Wan entries claim or that the table
# refuses: tests/comfy/test_wan_siblings.py. Each is built like the recipes above (detection
# picks the class from the sibling's own keys, or from the checkpoint metadata's model_type
# where the converted files carry it), with the conditioning its model_base.extra_conds reads,
# shaped for the recipe's frames and size. Not in the tests' family registry: a sibling is a
# model of its family's entry, not an entry of its own.
# ---------------------------------------------------------------------------------------------

def _with(conditioning, **extras):
    """``conditioning`` with tensors (or a builder of them from the generator) added to its
    options."""
    def build(batch=1, seed=1, tokens=7):
        [[text, extra]] = conditioning(batch, seed, tokens)
        g = _generator(seed + 100)
        extra = dict(extra, **{name: make(batch, g) for name, make in extras.items()})
        return [[text, extra]]
    return build


def _metadata(**transformer):
    return {"config": json.dumps({"transformer": transformer})}


def _sibling(family_id, model_class, tiny, conditioning, *, size=4, channels=16, **kwargs):
    return VideoRecipe(family_id, model_class, tiny, conditioning,
                       lambda b, f, s, _c=channels: (b, _c, f, s, s), "blocks 1", full_size={},
                       detected={}, size=size, **kwargs)


_FRAMES = 3   # the latent frames every sibling's conditioning is shaped for


def _scail(model_type, model_class):
    """SCAIL and SCAIL-2: the same inputs (a pose latent per frame, one reference frame)."""
    return _sibling("wan_i2v", model_class, _wan(model_type=model_type, in_dim=20),
                    _with(wan_i2v_conditioning,
                          pose_video_latent=lambda b, g: torch.randn(
                              b, 16, _FRAMES, 4, 4, generator=g),
                          reference_latents=lambda b, g: [torch.randn(
                              b, 16, 1, 4, 4, generator=g)]))


SIBLINGS: dict[str, VideoRecipe] = {
    # Wan 2.1 Camera (ReCamMaster-style): Wan I2V with a control adapter over Plücker camera
    # embeddings (B, 24, 4·F, 8·S, 8·S) added to the patch embedding.
    "camera": _sibling("wan_i2v", "WAN21_Camera", _wan(model_type="camera", in_dim=32),
                       _with(wan_i2v_conditioning, camera_conditions=lambda b, g: torch.randn(
                           b, 24, _FRAMES, 32, 32, generator=g))),
    # Wan 2.2 Camera (Fun Camera): the same adapter on a text-to-video block (no CLIP branch).
    "camera22": _sibling("wan", "WAN22_Camera", _wan(model_type="camera_2.2", in_dim=36),
                         _with(wan_conditioning, camera_conditions=lambda b, g: torch.randn(
                             b, 24, _FRAMES, 32, 32, generator=g))),
    # Wan 2.1 Fun Control: Wan I2V with 48 input channels (the control video's latents
    # concatenated; ComfyUI fills them with zeros when none is given).
    "fun_control": _sibling("wan_i2v", "WAN21_FunControl2V", _wan(model_type="i2v", in_dim=48),
                            wan_i2v_conditioning),
    # HuMo: an audio cross-attention in every block, per latent frame: queries the frame's
    # tokens, keys its 16 audio tokens (audio features (B, F, 8, 5, 1280)).
    "humo": _sibling("wan", "WAN21_HuMo", _wan(model_type="humo"),
                     _with(wan_conditioning, audio_embed=lambda b, g: torch.randn(
                         b, _FRAMES, 8, 5, 1280, generator=g))),
    # Wan 2.2 S2V: wav2vec features (B, 25 layers, 1024, 4·F) injected after block 0 by an
    # attention that gets no transformer_options.
    "s2v": _sibling("wan", "WAN22_S2V", _wan(model_type="s2v"),
                    _with(wan_conditioning, audio_embed=lambda b, g: torch.randn(
                        b, 25, 1024, 4 * _FRAMES, generator=g))),
    # Wan 2.2 Animate: pose latents added to the patch embedding, CLIP image features, and a
    # face adapter (a face attention without transformer_options after every fifth block; its
    # motion encoder takes 512-pixel face crops). Five blocks: ComfyUI builds one face block
    # per five, and detects the model by the first one's keys.
    "animate": _sibling("wan_i2v", "WAN22_Animate",
                        _wan(model_type="animate", in_dim=36, num_layers=5),
                        _with(wan_i2v_conditioning,
                              pose_video_latent=lambda b, g: torch.randn(
                                  b, 16, _FRAMES - 1, 4, 4, generator=g),
                              face_video_pixels=lambda b, g: torch.rand(
                                  b, 3, 1, 512, 512, generator=g))),
    # SCAIL / SCAIL-2: a reference latent frame before the video and the pose tokens after it
    # in one sequence: all are queries of the blocks' text cross-attention.
    "scail": _scail("scail", "WAN21_SCAIL"),
    "scail2": _scail("scail2", "WAN21_SCAIL2"),
    # WanDancer: music features (B, T, 35) through its own music encoder and injected after
    # block 0 per 1/8 latent frame (the frame's tokens must divide by 8: size 8).
    "wandancer": _sibling("wan_i2v", "WAN22_WanDancer",
                          _wan(model_type="wandancer", in_dim=36),
                          _with(wan_i2v_conditioning, audio_embed=lambda b, g: torch.randn(
                              b, 4 * _FRAMES, 35, generator=g)), size=8),
    # FlowRVS: plain WanModel sampled as image-to-image flow (ModelType.IMG_TO_IMG_FLOW).
    "flow_rvs": _sibling("wan", "WAN21_FlowRVS", _wan(), wan_conditioning,
                         min_comfyui=(0, 33, 0), needs="FlowRVS",
                         metadata=_metadata(model_type="flow_rvs")),
    # Wan 2.1 CausalAR (Self-Forcing / CausVid for the ar_video sampler): refused.
    "causal_ar": _sibling("wan_causal_ar", "WAN21_CausalAR_T2V", _wan(), wan_conditioning,
                          min_comfyui=(0, 33, 0), needs="CausalAR",
                          metadata=_metadata(causal_ar=True)),
}
