"""Tiny random-weight models of the image families new in ComfyUI 0.33, for CPU tests.

Z-Image (Turbo), Lumina 2, Krea2, HunyuanImage 2.1, HiDream, Kandinsky 5 Image, Chroma Radiance
and LongCat-Image: each built from the family's own ``comfy.supported_models`` class with the
unet_config keys that ComfyUI's detection (``comfy/model_detection.py``) produces for the released
checkpoint, only narrower and shallower. The stock detection keys on full-size widths (Lumina 2 vs
Z-Image: ``dim`` 2304 vs 3840; Kandinsky 5 Image: ``model_dim`` 2560), so tiny state dicts would not
be recognised; ``full_size_state_dict`` gives the real key names and full shapes on the meta
device instead, which the detection tests feed through ``model_config_from_unet``.

Every family is a ``Family`` record: how to build the model, its conditioning and its latent
shape, so tests loop over one table. Nothing here imports ComfyUI at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------

def finish(model_config, seed: int = 0):
    """Model on the CPU in float32 with weights drawn from ``seed`` (ComfyUI skips init), norm
    gains at 1 (with tiny random gains q/k norms shrink every attention map to uniform)."""
    import tiny_models
    patcher = tiny_models._finish(model_config, seed)
    tiny_models._unit_norms_of(patcher.model.diffusion_model)
    return patcher


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def has_model_class(name: str) -> bool:
    """Whether this ComfyUI's ``comfy.supported_models`` has the class ``name``."""
    import comfy.supported_models as sm
    return hasattr(sm, name)


def comfyui_version() -> tuple[int, int, int]:
    """The running ComfyUI's version (its comfyui_version.py), (0, 0, 0) where unknown."""
    try:
        import comfyui_version
        return tuple(int(x) for x in comfyui_version.__version__.split(".")[:3])
    except (ImportError, AttributeError, ValueError):
        return (0, 0, 0)


def unavailable(name: str):
    """Why the tiny ``name`` model cannot be tested on this ComfyUI, or None. The 2026 families
    are tested from ComfyUI 0.33: older versions lack most of the classes, and those they have
    (Lumina 2, HiDream, HunyuanImage 2.1, Chroma Radiance) tell attention no block."""
    version = comfyui_version()
    if version < (0, 33, 0):
        return (f"ComfyUI {'.'.join(map(str, version))}: the 2026 image families are tested from "
                f"ComfyUI 0.33 on (older versions lack most of their classes and set no "
                f"block_type/block_index/img_slice for attention)")
    if not has_model_class(FAMILIES[name].model_class):
        return f"this ComfyUI has no comfy.supported_models.{FAMILIES[name].model_class} ({name})"
    return None


# ---------------------------------------------------------------------------------------------
# configs: the keys detection writes for the released checkpoint, at tiny widths
# ---------------------------------------------------------------------------------------------

def lumina2_config():
    """Lumina 2 (NextDiT): 2 layers + 2 noise / 2 context refiners, dim 64, 4 query heads sharing
    2 KV heads (the released model: dim 2304, 24 heads / 8 KV heads, 26 layers)."""
    return dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=32,
                n_layers=2, n_refiner_layers=2, qk_norm=True, n_heads=4, n_kv_heads=2,
                axes_dims=[4, 6, 6], axes_lens=[300, 512, 512], rope_theta=10000.0,
                ffn_dim_multiplier=4.0, multiple_of=16)


def zimage_config():
    """Z-Image (Turbo): Lumina 2's NextDiT with Z-Image modulation and the caption and image
    padded to a multiple of 32 tokens (the released model: dim 3840, 30 heads, 30 layers). Dim
    256 is the least that works: Z-Image's adaLN input is min(dim, 256) wide but its timestep
    embedder always gives 256."""
    return dict(image_model="lumina2", patch_size=2, in_channels=16, dim=256, cap_feat_dim=32,
                n_layers=2, n_refiner_layers=2, qk_norm=True, n_heads=8, n_kv_heads=8,
                axes_dims=[8, 12, 12], axes_lens=[1536, 512, 512], rope_theta=256.0,
                ffn_dim_multiplier=8.0 / 3.0, multiple_of=16, z_image_modulation=True,
                time_scale=1000.0, pad_tokens_multiple=32)


def krea2_config():
    """Krea2 single-stream DiT: 2 blocks, 64 wide, 4 query / 2 KV heads; text fusion over 3
    encoder layers of width 32 (released: 6144 wide, 48/12 heads of 128; detection reads
    features, layers, heads, kvheads, txtlayers, txtdim from the weights)."""
    return dict(image_model="krea2", features=64, channels=16, patch=2, layers=2, heads=4,
                kvheads=2, txtlayers=3, txtdim=32, txtheads=2, txtkvheads=2, multiplier=2,
                tdim=32)


def hunyuan_image21_config(byt5: bool = True):
    """HunyuanImage 2.1: FLUX-style 2 double + 2 single blocks, hidden 64, 4 heads, 2-D patches
    of 1 on a 64-channel latent; byT5 glyph tokens mapped in when ``byt5`` (released: hidden
    3584, 28 heads of 128, 20 double + 40 single blocks, byT5 on)."""
    return dict(image_model="hunyuan_video", in_channels=64, out_channels=64, patch_size=[1, 1],
                vec_in_dim=None, axes_dim=[8, 8], meanflow=False, context_in_dim=32,
                hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2, depth_single_blocks=2,
                theta=256, qkv_bias=True, byt5=byt5, guidance_embed=True,
                use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)


def hidream_config():
    """HiDream-I1: 2 double-stream + 2 single-stream blocks, 4 heads of 16, MoE with 2 experts
    (released: 16 + 32 blocks, 20 heads of 128, 4 routed / 2 active experts)."""
    return dict(image_model="hidream", patch_size=2, in_channels=16, num_layers=2,
                num_single_layers=2, attention_head_dim=16, num_attention_heads=4,
                caption_channels=[32, 32], text_emb_dim=24, num_routed_experts=2,
                num_activated_experts=1, axes_dims_rope=[8, 4, 4], max_resolution=[128, 128],
                llama_layers=[0, 1, 2, 3])


def kandinsky5_image_config():
    """Kandinsky 5 Image Lite: 1 text + 2 visual blocks, model dim 64, 4 heads of 16 (released:
    model dim 2560, 2 text + 50 visual blocks, head 128)."""
    return dict(image_model="kandinsky5", model_dim=64, time_dim=32, ff_dim=128,
                visual_embed_dim=64, num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 6, 6),
                rope_scale_factor=(1.0, 1.0, 1.0), in_text_dim=32, in_text_dim2=24,
                in_visual_dim=16, out_visual_dim=16, patch_size=(1, 2, 2))


def chroma_radiance_config():
    """Chroma Radiance: Chroma's blocks (2 double + 2 single, hidden 64) on 3-channel pixels in
    patches of 4, a 1-deep NeRF head (released: patch 16, hidden 3072, 19 + 38 blocks)."""
    return dict(image_model="chroma_radiance", in_channels=3, out_channels=3, patch_size=4,
                context_in_dim=48, hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2,
                depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10000, qkv_bias=True,
                in_dim=64, out_dim=64, hidden_dim=64, n_layers=2, txt_ids_dims=[],
                vec_in_dim=None, nerf_hidden_size=16, nerf_mlp_ratio=2, nerf_depth=1,
                nerf_max_freqs=4, nerf_tile_size=512, nerf_final_head_type="linear",
                nerf_embedder_dtype=torch.float32, use_x0=False, use_sequential_txt_ids=False)


def longcat_image_config():
    """LongCat-Image: FLUX blocks without pooled vector or guidance, 2-D text position ids
    (released: context 3584 from Qwen2.5-VL, hidden 3072, 19 + 38 blocks)."""
    return dict(image_model="flux", guidance_embed=False, vec_in_dim=None, context_in_dim=32,
                txt_ids_dims=[1, 2], in_channels=16, out_channels=16, hidden_size=64,
                mlp_ratio=2.0, num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6],
                theta=10000, patch_size=2, qkv_bias=True)


# ---------------------------------------------------------------------------------------------
# the family table
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    """One tiny family: ``model_class`` names its comfy.supported_models class; ``config`` gives
    the tiny unet_config; ``conditioning(batch, seed, tokens)`` a CONDITIONING list;
    ``latent_shape(batch, size)`` the noise shape for a ``size``×``size`` latent."""
    name: str
    model_class: str
    config: Callable[[], dict]
    conditioning: Callable[..., list]
    latent_shape: Callable[[int, int], tuple]
    default_size: int = 8

    def build(self, seed: int = 0):
        import comfy.supported_models as sm
        return finish(getattr(sm, self.model_class)(self.config()), seed)


def _text(dim):
    def conditioning(batch=1, seed=1, tokens=7):
        return [[torch.randn(batch, tokens, dim, generator=_generator(seed)), {}]]
    return conditioning


def _hunyuan_image21_conditioning(batch=1, seed=1, tokens=7, glyph_tokens=3, guidance=3.5):
    """Qwen2.5-VL text (B, tokens, 32) plus byT5 glyph features (B, glyph_tokens, 1472), the
    fixed width ``ByT5Mapper`` takes."""
    g = _generator(seed)
    extra = {"guidance": guidance}
    if glyph_tokens:
        extra["conditioning_byt5small"] = torch.randn(batch, glyph_tokens, 1472, generator=g)
    return [[torch.randn(batch, tokens, 32, generator=g), extra]]


def _hidream_conditioning(batch=1, seed=1, tokens=7, llama_tokens=5):
    """T5 (B, tokens, 32), pooled CLIP-L+G (B, 24), Llama-3.1 hidden states of 4 layers
    (B, 4, llama_tokens, 32)."""
    g = _generator(seed)
    return [[torch.randn(batch, tokens, 32, generator=g),
             {"pooled_output": torch.randn(batch, 24, generator=g),
              "conditioning_llama3": torch.randn(batch, 4, llama_tokens, 32, generator=g)}]]


def _krea2_conditioning(batch=1, seed=1, tokens=7):
    """Qwen3-VL hidden states of 3 layers packed as (B, tokens, 3·32)."""
    return [[torch.randn(batch, tokens, 3 * 32, generator=_generator(seed)), {}]]


def _kandinsky5_conditioning(batch=1, seed=1, tokens=7):
    g = _generator(seed)
    return [[torch.randn(batch, tokens, 32, generator=g),
             {"pooled_output": torch.randn(batch, 24, generator=g)}]]


def _chroma_radiance_conditioning(batch=1, seed=1, tokens=7):
    # Chroma ignores the pooled vector, but its model class (a Flux subclass) asks for one.
    return [[torch.randn(batch, tokens, 48, generator=_generator(seed)),
             {"pooled_output": torch.zeros(batch, 1)}]]


FAMILIES = {
    "zimage": Family("zimage", "ZImage", zimage_config, _text(32),
                     lambda b, s: (b, 16, s, s)),
    "lumina2": Family("lumina2", "Lumina2", lumina2_config, _text(32),
                      lambda b, s: (b, 16, s, s)),
    # Krea2 uses the Wan 2.1 latent format, whose per-channel mean/std are 5-D: (B, C, T, H, W).
    "krea2": Family("krea2", "Krea2", krea2_config, _krea2_conditioning,
                    lambda b, s: (b, 16, 1, s, s)),
    "hunyuan_image21": Family("hunyuan_image21", "HunyuanImage21", hunyuan_image21_config,
                              _hunyuan_image21_conditioning, lambda b, s: (b, 64, s, s),
                              default_size=4),
    "hidream": Family("hidream", "HiDream", hidream_config, _hidream_conditioning,
                      lambda b, s: (b, 16, s, s)),
    "kandinsky5_image": Family("kandinsky5_image", "Kandinsky5Image", kandinsky5_image_config,
                               _kandinsky5_conditioning, lambda b, s: (b, 16, s, s)),
    "chroma_radiance": Family("chroma_radiance", "ChromaRadiance", chroma_radiance_config,
                              _chroma_radiance_conditioning, lambda b, s: (b, 3, s, s),
                              default_size=16),
    "longcat_image": Family("longcat_image", "LongCatImage", longcat_image_config, _text(32),
                            lambda b, s: (b, 16, s, s)),
}


# How the GAG tests use each family: the family table id GAG must recognise, and a selection of
# blocks that leaves others out (HiDream: every block; GAG guides it all or nothing).
GAG = {
    "zimage": ("zimage", "joint 1"),
    "lumina2": ("lumina2", "joint 0"),
    "krea2": ("krea2", "single 1"),
    "hunyuan_image21": ("hunyuan_image21", "double 0, single 1"),
    "hidream": ("hidream", "double 0, double 1, single 0, single 1"),
    "kandinsky5_image": ("kandinsky5", "visual 1"),
    "chroma_radiance": ("chroma_radiance", "double 0, single 1"),
    "longcat_image": ("longcat_image", "double 1, single 0"),
}


def sample(family: Family, patcher, positive, negative, *, steps=2, cfg=1.0, seed=0, size=None,
           batch=1, sampler="euler", scheduler="simple", noise=None):
    """Run ComfyUI's real sampler on a tiny latent of the family's shape; returns the result."""
    import comfy.sample
    if noise is None:
        shape = family.latent_shape(batch, size or family.default_size)
        noise = torch.randn(shape, generator=_generator(seed))
    latent = torch.zeros_like(noise)
    return comfy.sample.sample(patcher, noise, steps, cfg, sampler, scheduler, positive, negative,
                               latent, seed=seed, disable_pbar=True)


# ---------------------------------------------------------------------------------------------
# full-size released configs (for detection tests on the meta device, never run)
# ---------------------------------------------------------------------------------------------

FULL_SIZE = {
    # What detect_unet_config returns for the released checkpoints (0.33), i.e. the model each
    # family's loader builds; passing it to the class on the meta device gives real key names.
    "zimage": dict(image_model="lumina2", patch_size=2, in_channels=16, dim=3840,
                   cap_feat_dim=2560, n_layers=30, qk_norm=True, n_heads=30, n_kv_heads=30,
                   axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512], rope_theta=256.0,
                   ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0,
                   pad_tokens_multiple=32),
    "lumina2": dict(image_model="lumina2", patch_size=2, in_channels=16, dim=2304,
                    cap_feat_dim=2304, n_layers=26, qk_norm=True, n_heads=24, n_kv_heads=8,
                    axes_dims=[32, 32, 32], axes_lens=[300, 512, 512], rope_theta=10000.0,
                    ffn_dim_multiplier=4.0),
    "krea2": dict(image_model="krea2", features=6144, channels=16, patch=2, layers=28, heads=48,
                  kvheads=12, txtlayers=12, txtdim=2560),
    "hunyuan_image21": dict(image_model="hunyuan_video", in_channels=64, out_channels=64,
                            patch_size=[1, 1], vec_in_dim=None, axes_dim=[64, 64], meanflow=False,
                            context_in_dim=3584, hidden_size=3584, mlp_ratio=4.0, num_heads=28,
                            depth=20, depth_single_blocks=40, theta=256, qkv_bias=True,
                            byt5=True, guidance_embed=False, use_cond_type_embedding=False,
                            vision_in_dim=None, meanflow_sum=False),
    "hidream": dict(image_model="hidream", patch_size=2, in_channels=16, num_layers=16,
                    num_single_layers=32, attention_head_dim=128, num_attention_heads=20,
                    caption_channels=[4096, 4096], text_emb_dim=2048, num_routed_experts=4,
                    num_activated_experts=2, axes_dims_rope=[64, 32, 32],
                    max_resolution=[128, 128], llama_layers=list(range(32)) + [31] * 16),
    "kandinsky5_image": dict(image_model="kandinsky5", model_dim=2560, time_dim=512,
                             ff_dim=10240, visual_embed_dim=64, num_text_blocks=2,
                             num_visual_blocks=50, axes_dims=(32, 48, 48),
                             rope_scale_factor=(1.0, 1.0, 1.0)),
    "chroma_radiance": dict(image_model="chroma_radiance", in_channels=3, out_channels=3,
                            patch_size=16, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
                            num_heads=24, depth=19, depth_single_blocks=38,
                            axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, in_dim=64,
                            out_dim=3072, hidden_dim=5120, n_layers=5, txt_ids_dims=[],
                            vec_in_dim=None, nerf_hidden_size=64, nerf_mlp_ratio=4,
                            nerf_depth=4, nerf_max_freqs=8, nerf_tile_size=512,
                            nerf_final_head_type="linear", nerf_embedder_dtype=torch.float32,
                            use_x0=False, use_sequential_txt_ids=False),
    "longcat_image": dict(image_model="flux", guidance_embed=False, vec_in_dim=None,
                          context_in_dim=3584, txt_ids_dims=[1, 2], in_channels=16,
                          out_channels=16, hidden_size=3072, mlp_ratio=4.0, num_heads=24,
                          depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000,
                          patch_size=2, qkv_bias=True),
}


def full_size_state_dict(name: str) -> dict:
    """The released model's diffusion-model state dict, key names and shapes only (meta
    tensors, nothing allocated): what ``comfy.model_detection`` reads to pick a model class."""
    import comfy.supported_models as sm
    mc = getattr(sm, FAMILIES[name].model_class)(dict(FULL_SIZE[name]))
    mc.set_inference_dtype(torch.bfloat16, None)
    return dict(mc.get_model({}, device="meta").diffusion_model.state_dict())


# ---------------------------------------------------------------------------------------------
# tiny models through ComfyUI's real loader (where detection reads every width from the weights)
# ---------------------------------------------------------------------------------------------

LOADER_SIZE = {
    # Krea2 and the FLUX/Hunyuan branches derive heads from a fixed head size of 128, so the
    # narrowest loadable model is 256 wide with 2 heads; everything detection does not read
    # stays at the class default.
    "krea2": dict(image_model="krea2", features=256, channels=16, patch=2, layers=2, heads=2,
                  kvheads=1, txtlayers=3, txtdim=40),
    "longcat_image": dict(longcat_image_config(), context_in_dim=3584, hidden_size=256,
                          num_heads=2, mlp_ratio=4.0, depth=1, depth_single_blocks=1,
                          axes_dim=[16, 56, 56]),
    "hunyuan_image21": dict(hunyuan_image21_config(), hidden_size=256, num_heads=2,
                            mlp_ratio=4.0, depth=1, depth_single_blocks=1, axes_dim=[64, 64]),
}


LOADER_TEXT_WIDTH = {"krea2": 3 * 40, "longcat_image": 3584, "hunyuan_image21": 32}


def loader_conditioning(name: str, seed: int = 1, tokens: int = 7) -> list:
    """The family's conditioning with the text width of its ``LOADER_SIZE`` model."""
    [[text, extra]] = FAMILIES[name].conditioning(seed=seed, tokens=tokens)
    width = LOADER_TEXT_WIDTH[name]
    return [[torch.randn(text.shape[0], tokens, width, generator=_generator(seed)), extra]]


def loader_state_dict(name: str, seed: int = 0) -> dict:
    """A random state dict with the released checkpoint's key names at ``LOADER_SIZE`` widths."""
    import comfy.supported_models as sm
    mc = getattr(sm, FAMILIES[name].model_class)(dict(LOADER_SIZE[name]))
    return dict(finish(mc, seed).model.diffusion_model.state_dict())


def load_through_comfy(state_dict):
    """``comfy.sd.load_diffusion_model_state_dict`` in float32: ComfyUI's own detection picks the
    class and config from the key names and shapes."""
    import comfy.sd
    return comfy.sd.load_diffusion_model_state_dict(state_dict, model_options={"dtype": torch.float32})
