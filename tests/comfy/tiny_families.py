"""The tests' registry of model families: one ``Recipe`` per id of the family table
(``nodes/adapters/families.py``, ``FAMILIES``), and every parametrised family test derives its
cases from here.

A recipe says, for one family: how to build its tiny random-weight models through ComfyUI's real
classes (one ``Variant`` per model of the family the tests tell apart: FLUX.2 dev and Klein,
FLUX.1 dev and schnell, SDXL and SD1.5), their conditioning and sampler settings, the facts of
the released full-size models (what ComfyUI's detection reads from them, built on the meta device
at no cost), and the oldest ComfyUI the tests run the family on, with the reason.

A variant's test id is the table id (``zimage``), or ``id-variant`` where a family has several
(``flux2-klein``). ``tests/comfy/test_tiny_families.py`` fails when a supported family of the
table has no recipe or a recipe names no family of the table.

Adding a family: its table entry, then one block below (its tiny config and conditioning and a
``register(Recipe(...))``), then its own tests where it behaves specially. The family suites
(tests/comfy/test_dit_families.py, test_dit_attention.py, test_families_2026.py) pick it up.

Nothing here imports ComfyUI at module level (pytest collects these ids without ComfyUI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

import tiny_models as tm


# ---------------------------------------------------------------------------------------------
# the shape of a recipe
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One tiny model of a family.

    name: "" for a family's only model; otherwise the model it stands for ("klein", "sd15").
    comfy_class: its ``comfy.supported_models`` class; the variant is unavailable where the
        running ComfyUI lacks it.
    conditioning: ``conditioning(batch=1, seed=1, tokens=…, **extras)`` → a CONDITIONING list.
    latent: ``latent(batch, size)`` → the noise shape of a ``size``×``size`` latent.
    size: the latent size the tests sample at.
    settings: sampler settings over the defaults of ``sample`` (steps 2, cfg 1, euler, simple).
    config: the tiny unet_config (the keys ComfyUI's detection writes, narrower), built through
        ``comfy_class``; None where ``build`` builds the model (from detection keys).
    build: ``build(seed=0)`` → ModelPatcher, where ``config`` does not say it all.
    selection: a layer selection naming blocks of each kind but not all of them (all blocks
        where the family is guided on all blocks together or none).
    every_kind: a selection that covers every block kind of the family.
    text_tokens: how many text tokens attention holds with the default conditioning.
    suite: whether the family test suites run it; False: it shares its class and hooks with a
        sibling variant and gets the smoke test only.
    own_suite: the test module that runs the family properties on this variant instead of the
        image DiT suites (the video families: tests/comfy/test_video_families.py, which samples
        multi-frame and multi-stream latents); "" for the shared suites.
    downscale: image pixels per latent pixel of the family's VAE (the test node pack's stand-in
        VAE decodes at this scale).
    """
    name: str
    comfy_class: str
    conditioning: Callable[..., list]
    latent: Callable[[int, int], tuple]
    size: int = 8
    settings: dict = field(default_factory=dict)
    config: Optional[dict] = None
    build: Optional[Callable[..., Any]] = None
    selection: str = ""
    every_kind: str = "all"
    text_tokens: Optional[int] = None
    suite: bool = True
    own_suite: str = ""
    downscale: int = 8

    def make(self, seed: int = 0):
        """The tiny model, a ModelPatcher on the CPU in float32."""
        if self.build is not None:
            return self.build(seed)
        import comfy.supported_models as sm
        return finish(getattr(sm, self.comfy_class)(dict(self.config)), seed)


@dataclass(frozen=True)
class Loader:
    """A tiny model that ComfyUI's loader itself can recognise (detection reads every width from
    the weights): its unet_config (``size``) and the text width it takes."""
    size: dict
    text_width: int


@dataclass(frozen=True)
class Recipe:
    """The tests' knowledge of one family of the table.

    family: the table id. hook: the table's hook for it ("unet" or "joint"; checked against the
        table), which picks the suite that runs it.
    variants: its tiny models, the first the family's main one.
    min_comfyui / why: the oldest ComfyUI (of those the project supports) the tests run the
        family on, and why not older (the skip reason there).
    released: layout id of the table → ``build()`` of that released model on the meta device,
        a model holding ``.diffusion_model`` (the layer map's layouts are checked against them).
    full_size: what ComfyUI's detection returns for the released checkpoint (the model its
        loader builds); with it, ``full_size_state_dict`` gives real key names and shapes.
    detected: what detection must read from that checkpoint (the facts the table relies on).
    loader: a tiny model small enough to go through ComfyUI's loader, where there is one.
    """
    family: str
    hook: str
    variants: tuple[Variant, ...]
    min_comfyui: tuple[int, int, int] = (0, 3, 64)
    why: str = ""
    released: dict = field(default_factory=dict)
    full_size: Optional[dict] = None
    detected: dict = field(default_factory=dict)
    loader: Optional[Loader] = None

    def key(self, variant: Variant) -> str:
        return f"{self.family}-{variant.name}" if variant.name else self.family

    @property
    def main(self) -> Variant:
        return self.variants[0]


RECIPES: list[Recipe] = []


def register(recipe: Recipe) -> Recipe:
    if any(known.family == recipe.family for known in RECIPES):
        raise ValueError(f"two recipes for the family {recipe.family!r}")
    RECIPES.append(recipe)
    return recipe


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------

def finish(model_config, seed: int = 0):
    """Model on the CPU in float32 with weights drawn from ``seed`` (ComfyUI skips init), norm
    gains at 1 (with tiny random gains q/k norms shrink every attention map to uniform)."""
    patcher = tm._finish(model_config, seed)
    tm._unit_norms_of(patcher.model.diffusion_model)
    return patcher


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def image_latent(channels: int, frames: bool = False):
    """``latent(batch, size)`` for (B, C, size, size) latents, or (B, C, 1, size, size) for the
    families whose latent format is a video's."""
    if frames:
        return lambda batch, size: (batch, channels, 1, size, size)
    return lambda batch, size: (batch, channels, size, size)


def text_conditioning(width: int, tokens: int = 7, **extras):
    """Text (B, tokens, width) with fixed extras; a tensor-valued extra is given as a function
    ``(batch, generator) → tensor``, drawn after the text."""
    def conditioning(batch=1, seed=1, tokens=tokens):
        g = _generator(seed)
        text = torch.randn(batch, tokens, width, generator=g)
        return [[text, {name: value(batch, g) if callable(value) else value
                        for name, value in extras.items()}]]
    return conditioning


def _meta_model(comfy_class: str, config: dict):
    """The model ``comfy_class`` builds from ``config``, on the meta device (no memory)."""
    import comfy.supported_models as sm
    model_config = getattr(sm, comfy_class)(dict(config))
    model_config.set_inference_dtype(torch.float32, None)
    with torch.device("meta"):
        return model_config.get_model({}, device=torch.device("meta"))


def _meta_unet(**config):
    """A released UNet built from its structural config on the meta device, as a model holding
    it (``.diffusion_model``) like the DiT builders return."""
    def build():
        import types
        import comfy.ops
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
        unet = UNetModel(**config, device=torch.device("meta"),
                         operations=comfy.ops.disable_weight_init)
        return types.SimpleNamespace(diffusion_model=unet)
    return build


def _released_from_full_size(layout: str):
    """A layout built from its recipe's ``full_size`` config (see ``Recipe.released``)."""
    def build():
        recipe = next(r for r in RECIPES if layout in r.released)
        return _meta_model(recipe.main.comfy_class, recipe.full_size)
    return build


_SINCE_033 = ("older versions lack most of the 2026 image families' classes and set no "
              "block_type/block_index/img_slice for attention")


# =============================================================================================
# The recipes, in the table's order. One block per family.
# =============================================================================================

# --- unet: SD1.5 / SDXL UNets (cross-attention replaces) -------------------------------------
register(Recipe(
    family="unet", hook="unet",
    variants=(
        Variant("sdxl", "SDXL", tm.sdxl_conditioning, image_latent(4), size=32,
                settings=dict(steps=4, cfg=5.0, scheduler="normal"), build=tm.tiny_sdxl),
        Variant("sd15", "SD15", tm.sd15_conditioning, image_latent(4), size=32,
                settings=dict(steps=4, cfg=5.0, scheduler="normal"), build=tm.tiny_sd15),
    ),
    # ComfyUI's full-size configs (comfy/model_detection.py, structural keys) at the released
    # block counts; the layout does not depend on the widths.
    released={
        "sdxl": _meta_unet(image_size=32, in_channels=4, out_channels=4, model_channels=320,
                           use_spatial_transformer=True, legacy=False, num_classes="sequential",
                           adm_in_channels=2816, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
                           transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10,
                           transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                           use_linear_in_transformer=True, context_dim=2048,
                           num_head_channels=64),
        "sd15": _meta_unet(image_size=32, in_channels=4, out_channels=4, model_channels=320,
                           use_spatial_transformer=True, legacy=False, adm_in_channels=None,
                           num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                           transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                           transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                           use_linear_in_transformer=False, context_dim=768, num_heads=8),
    },
))


# --- chroma_radiance: Chroma's blocks on pixels, a NeRF head decoding patches -----------------
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


register(Recipe(
    family="chroma_radiance", hook="joint", min_comfyui=(0, 33, 0), why=_SINCE_033,
    # Chroma ignores the pooled vector, but its model class (a Flux subclass) asks for one.
    variants=(Variant("", "ChromaRadiance",
                      text_conditioning(48, pooled_output=lambda b, g: torch.zeros(b, 1)),
                      image_latent(3), size=16, config=chroma_radiance_config(),
                      selection="double 0, single 1", text_tokens=7, downscale=1),),
    released={"chroma_radiance": _released_from_full_size("chroma_radiance")},
    full_size=dict(image_model="chroma_radiance", in_channels=3, out_channels=3, patch_size=16,
                   context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19,
                   depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True,
                   in_dim=64, out_dim=3072, hidden_dim=5120, n_layers=5, txt_ids_dims=[],
                   vec_in_dim=None, nerf_hidden_size=64, nerf_mlp_ratio=4, nerf_depth=4,
                   nerf_max_freqs=8, nerf_tile_size=512, nerf_final_head_type="linear",
                   nerf_embedder_dtype=torch.float32, use_x0=False,
                   use_sequential_txt_ids=False),
    detected=dict(image_model="chroma_radiance", hidden_size=3072, num_heads=24, depth=19,
                  depth_single_blocks=38, patch_size=16, in_channels=3),
))


# --- chroma: FLUX-style blocks, modulation from the distilled-guidance approximator ----------
register(Recipe(
    family="chroma", hook="joint",
    variants=(Variant("", "Chroma", tm.chroma_conditioning, image_latent(16),
                      settings=dict(cfg=3.0), build=tm.tiny_chroma,
                      selection="double 0, single 1", every_kind="double 0, single 0",
                      text_tokens=20),),
    released={"chroma": lambda: tm.tiny_chroma(depth=19, single=38, device="meta")},
))


# --- flux2: FLUX.1's class with modulation shared across blocks -------------------------------
_FLUX2_WHY = "comfy.supported_models.Flux2 arrived after ComfyUI 0.3.64"
register(Recipe(
    family="flux2", hook="joint", min_comfyui=(0, 33, 0), why=_FLUX2_WHY,
    # 128-channel latents at 1/16 scale, 4×4 here (16 image tokens after the 512 padded text
    # tokens).
    variants=(
        Variant("dev", "Flux2", tm.flux2_conditioning, image_latent(128), size=4,
                build=tm.tiny_flux2, selection="double 1, single 0",
                every_kind="double 1, single 0, single 1", text_tokens=512, downscale=16),
        Variant("klein", "Flux2", tm.flux2_klein_conditioning, image_latent(128), size=4,
                build=tm.tiny_flux2_klein, selection="double 0, single 1",
                every_kind="double 0, single 1", text_tokens=512, downscale=16),
    ),
    released={"flux2": lambda: tm.tiny_flux2(depth=8, single=48, device="meta"),
              "flux2_klein_4b": lambda: tm.tiny_flux2(depth=5, single=20, device="meta"),
              "flux2_klein_9b": lambda: tm.tiny_flux2(depth=8, single=24, device="meta")},
))


# --- longcat_image: FLUX.1's blocks, Qwen2.5-VL text on 2-D text positions --------------------
def longcat_image_config():
    """LongCat-Image: FLUX blocks without pooled vector or guidance, 2-D text position ids
    (released: context 3584 from Qwen2.5-VL, hidden 3072, 19 + 38 blocks)."""
    return dict(image_model="flux", guidance_embed=False, vec_in_dim=None, context_in_dim=32,
                txt_ids_dims=[1, 2], in_channels=16, out_channels=16, hidden_size=64,
                mlp_ratio=2.0, num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6],
                theta=10000, patch_size=2, qkv_bias=True)


register(Recipe(
    family="longcat_image", hook="joint", min_comfyui=(0, 33, 0), why=_SINCE_033,
    variants=(Variant("", "LongCatImage", text_conditioning(32), image_latent(16),
                      config=longcat_image_config(), selection="double 1, single 0",
                      text_tokens=7),),
    released={"longcat_image": _released_from_full_size("longcat_image")},
    full_size=dict(image_model="flux", guidance_embed=False, vec_in_dim=None,
                   context_in_dim=3584, txt_ids_dims=[1, 2], in_channels=16, out_channels=16,
                   hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19,
                   depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
                   qkv_bias=True),
    detected=dict(image_model="flux", hidden_size=3072, num_heads=24, depth=19,
                  depth_single_blocks=38, context_in_dim=3584, vec_in_dim=None,
                  guidance_embed=False, txt_ids_dims=[1, 2]),
    # The FLUX branch of detection derives heads from a fixed head size of 128, so the
    # narrowest loadable model is 256 wide with 2 heads.
    loader=Loader(dict(longcat_image_config(), context_in_dim=3584, hidden_size=256,
                       num_heads=2, mlp_ratio=4.0, depth=1, depth_single_blocks=1,
                       axes_dim=[16, 56, 56]), text_width=3584),
))


# --- krea2: one single-stream sequence [text | image | references] ----------------------------
def krea2_config():
    """Krea2 single-stream DiT: 2 blocks, 64 wide, 4 query / 2 KV heads; text fusion over 3
    encoder layers of width 32 (released: 6144 wide, 48/12 heads of 128; detection reads
    features, layers, heads, kvheads, txtlayers, txtdim from the weights)."""
    return dict(image_model="krea2", features=64, channels=16, patch=2, layers=2, heads=4,
                kvheads=2, txtlayers=3, txtdim=32, txtheads=2, txtkvheads=2, multiplier=2,
                tdim=32)


register(Recipe(
    family="krea2", hook="joint", min_comfyui=(0, 33, 0), why=_SINCE_033,
    # Qwen3-VL hidden states of 3 layers packed as (B, tokens, 3·32). Krea2 uses the Wan 2.1
    # latent format, whose per-channel mean/std are 5-D: (B, C, T, H, W).
    variants=(Variant("", "Krea2", text_conditioning(3 * 32), image_latent(16, frames=True),
                      config=krea2_config(), selection="single 1", text_tokens=7),),
    released={"krea2": _released_from_full_size("krea2")},
    full_size=dict(image_model="krea2", features=6144, channels=16, patch=2, layers=28,
                   heads=48, kvheads=12, txtlayers=12, txtdim=2560),
    detected=dict(image_model="krea2", features=6144, heads=48, kvheads=12, layers=28,
                  txtlayers=12, txtdim=2560),
    # Krea2 derives heads from a fixed head size of 128: 256 wide with 2 heads is the least;
    # everything detection does not read stays at the class default.
    loader=Loader(dict(image_model="krea2", features=256, channels=16, patch=2, layers=2,
                       heads=2, kvheads=1, txtlayers=3, txtdim=40), text_width=3 * 40),
))


# --- flux: FLUX.1 dev and schnell --------------------------------------------------------------
register(Recipe(
    family="flux", hook="joint",
    variants=(
        Variant("dev", "Flux", tm.flux_conditioning, image_latent(16), build=tm.tiny_flux,
                selection="double 1, single 0", every_kind="double 1, single 0, single 1",
                text_tokens=20),
        # schnell shares dev's model class and hooks: the smoke test only.
        Variant("schnell", "FluxSchnell", tm.flux_conditioning, image_latent(16),
                build=lambda seed=0: tm.tiny_flux(seed, schnell=True),
                selection="double 0, single 1", every_kind="double 0, single 1",
                text_tokens=20, suite=False),
    ),
    released={"flux": lambda: tm.tiny_flux(depth=19, single=38, device="meta")},
))


# --- sd3: SD3 / SD3.5 MMDiT -----------------------------------------------------------------------
register(Recipe(
    family="sd3", hook="joint",
    variants=(Variant("", "SD3", tm.sd3_conditioning, image_latent(16), settings=dict(cfg=3.0),
                      build=tm.tiny_sd3, selection="joint 0", every_kind="joint 0, joint 1",
                      text_tokens=20),),
    released={"sd3": lambda: tm.tiny_sd3(depth=24, device="meta"),
              "sd35_large": lambda: tm.tiny_sd3(depth=38, device="meta")},
))


# --- qwen_image -------------------------------------------------------------------------------------
register(Recipe(
    family="qwen_image", hook="joint",
    variants=(Variant("", "QwenImage", tm.qwen_image_conditioning,
                      image_latent(16, frames=True), settings=dict(cfg=2.5),
                      build=tm.tiny_qwen_image, selection="joint 1",
                      every_kind="joint 0, joint 1", text_tokens=20),),
    released={"qwen_image": lambda: tm.tiny_qwen_image(layers=60, device="meta")},
))


# --- zimage: NextDiT with the caption padded to a multiple of 32 ---------------------------------
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


register(Recipe(
    family="zimage", hook="joint", min_comfyui=(0, 33, 0), why=_SINCE_033,
    # 7 caption tokens, padded to 32 by the model.
    variants=(Variant("", "ZImage", text_conditioning(32), image_latent(16),
                      config=zimage_config(), selection="joint 1", text_tokens=32),),
    released={"zimage": _released_from_full_size("zimage")},
    full_size=dict(image_model="lumina2", patch_size=2, in_channels=16, dim=3840,
                   cap_feat_dim=2560, n_layers=30, qk_norm=True, n_heads=30, n_kv_heads=30,
                   axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512], rope_theta=256.0,
                   ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0,
                   pad_tokens_multiple=32),
    detected=dict(image_model="lumina2", dim=3840, n_heads=30, n_kv_heads=30, n_layers=30,
                  pad_tokens_multiple=32, z_image_modulation=True),
))


# --- lumina2: Z-Image's architecture without padding, GQA -----------------------------------------
def lumina2_config():
    """Lumina 2 (NextDiT): 2 layers + 2 noise / 2 context refiners, dim 64, 4 query heads sharing
    2 KV heads (the released model: dim 2304, 24 heads / 8 KV heads, 26 layers)."""
    return dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=32,
                n_layers=2, n_refiner_layers=2, qk_norm=True, n_heads=4, n_kv_heads=2,
                axes_dims=[4, 6, 6], axes_lens=[300, 512, 512], rope_theta=10000.0,
                ffn_dim_multiplier=4.0, multiple_of=16)


register(Recipe(
    family="lumina2", hook="joint", min_comfyui=(0, 33, 0), why=_SINCE_033,
    variants=(Variant("", "Lumina2", text_conditioning(32), image_latent(16),
                      config=lumina2_config(), selection="joint 0", text_tokens=7),),
    released={"lumina2": _released_from_full_size("lumina2")},
    full_size=dict(image_model="lumina2", patch_size=2, in_channels=16, dim=2304,
                   cap_feat_dim=2304, n_layers=26, qk_norm=True, n_heads=24, n_kv_heads=8,
                   axes_dims=[32, 32, 32], axes_lens=[300, 512, 512], rope_theta=10000.0,
                   ffn_dim_multiplier=4.0),
    detected=dict(image_model="lumina2", dim=2304, n_heads=24, n_kv_heads=8, n_layers=26),
))


# --- hunyuan_image21: FLUX-style blocks, Qwen2.5-VL text followed by byT5 glyph tokens ----------
def hunyuan_image21_config():
    """HunyuanImage 2.1: FLUX-style 2 double + 2 single blocks, hidden 64, 4 heads, 2-D patches
    of 1 on a 64-channel latent, byT5 glyph tokens mapped in (released: hidden 3584, 28 heads
    of 128, 20 double + 40 single blocks, byT5 on)."""
    return dict(image_model="hunyuan_video", in_channels=64, out_channels=64, patch_size=[1, 1],
                vec_in_dim=None, axes_dim=[8, 8], meanflow=False, context_in_dim=32,
                hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2, depth_single_blocks=2,
                theta=256, qkv_bias=True, byt5=True, guidance_embed=True,
                use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)


def _hunyuan_image21_conditioning(batch=1, seed=1, tokens=7, glyph_tokens=3, guidance=3.5):
    """Qwen2.5-VL text (B, tokens, 32) plus byT5 glyph features (B, glyph_tokens, 1472), the
    fixed width ``ByT5Mapper`` takes."""
    g = _generator(seed)
    extra = {"guidance": guidance}
    if glyph_tokens:
        extra["conditioning_byt5small"] = torch.randn(batch, glyph_tokens, 1472, generator=g)
    return [[torch.randn(batch, tokens, 32, generator=g), extra]]


register(Recipe(
    family="hunyuan_image21", hook="joint", min_comfyui=(0, 33, 0), why=_SINCE_033,
    # 7 text tokens and 3 glyph tokens.
    variants=(Variant("", "HunyuanImage21", _hunyuan_image21_conditioning, image_latent(64),
                      size=4, config=hunyuan_image21_config(),
                      selection="double 0, single 1", text_tokens=10, downscale=32),),
    released={"hunyuan_image21": _released_from_full_size("hunyuan_image21")},
    full_size=dict(image_model="hunyuan_video", in_channels=64, out_channels=64,
                   patch_size=[1, 1], vec_in_dim=None, axes_dim=[64, 64], meanflow=False,
                   context_in_dim=3584, hidden_size=3584, mlp_ratio=4.0, num_heads=28,
                   depth=20, depth_single_blocks=40, theta=256, qkv_bias=True, byt5=True,
                   guidance_embed=False, use_cond_type_embedding=False, vision_in_dim=None,
                   meanflow_sum=False),
    detected=dict(image_model="hunyuan_video", hidden_size=3584, num_heads=28, depth=20,
                  depth_single_blocks=40, byt5=True, vec_in_dim=None, patch_size=[1, 1]),
    loader=Loader(dict(hunyuan_image21_config(), hidden_size=256, num_heads=2, mlp_ratio=4.0,
                       depth=1, depth_single_blocks=1, axes_dim=[64, 64]), text_width=32),
))


# --- hidream: image tokens first, then the text; guided on all blocks together or none ----------
def hidream_config():
    """HiDream-I1: 2 double-stream + 2 single-stream blocks, 4 heads of 16, MoE with 2 experts
    (released: 16 + 32 blocks, 20 heads of 128, 4 routed / 2 active experts)."""
    return dict(image_model="hidream", patch_size=2, in_channels=16, num_layers=2,
                num_single_layers=2, attention_head_dim=16, num_attention_heads=4,
                caption_channels=[32, 32], text_emb_dim=24, num_routed_experts=2,
                num_activated_experts=1, axes_dims_rope=[8, 4, 4], max_resolution=[128, 128],
                llama_layers=[0, 1, 2, 3])


def _hidream_conditioning(batch=1, seed=1, tokens=7, llama_tokens=5):
    """T5 (B, tokens, 32), pooled CLIP-L+G (B, 24), Llama-3.1 hidden states of 4 layers
    (B, 4, llama_tokens, 32)."""
    g = _generator(seed)
    return [[torch.randn(batch, tokens, 32, generator=g),
             {"pooled_output": torch.randn(batch, 24, generator=g),
              "conditioning_llama3": torch.randn(batch, 4, llama_tokens, 32, generator=g)}]]


register(Recipe(
    family="hidream", hook="joint", min_comfyui=(0, 33, 0), why=_SINCE_033,
    # 7 T5 tokens and the Llama-3 tokens (5) twice.
    variants=(Variant("", "HiDream", _hidream_conditioning, image_latent(16),
                      config=hidream_config(),
                      selection="double 0, double 1, single 0, single 1", text_tokens=17),),
    released={"hidream": _released_from_full_size("hidream")},
    full_size=dict(image_model="hidream", patch_size=2, in_channels=16, num_layers=16,
                   num_single_layers=32, attention_head_dim=128, num_attention_heads=20,
                   caption_channels=[4096, 4096], text_emb_dim=2048, num_routed_experts=4,
                   num_activated_experts=2, axes_dims_rope=[64, 32, 32],
                   max_resolution=[128, 128], llama_layers=list(range(32)) + [31] * 16),
    detected=dict(image_model="hidream", num_layers=16, num_attention_heads=20,
                  attention_head_dim=128),
))


# --- kandinsky5: image self-attention, then cross-attention to the text ------------------------
def kandinsky5_config():
    """Kandinsky 5 Image Lite: 1 text + 2 visual blocks, model dim 64, 4 heads of 16 (released:
    model dim 2560, 2 text + 50 visual blocks, head 128)."""
    return dict(image_model="kandinsky5", model_dim=64, time_dim=32, ff_dim=128,
                visual_embed_dim=64, num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 6, 6),
                rope_scale_factor=(1.0, 1.0, 1.0), in_text_dim=32, in_text_dim2=24,
                in_visual_dim=16, out_visual_dim=16, patch_size=(1, 2, 2))


register(Recipe(
    family="kandinsky5", hook="joint", min_comfyui=(0, 33, 0), why=_SINCE_033,
    variants=(Variant("", "Kandinsky5Image",
                      text_conditioning(32, pooled_output=lambda b, g: torch.randn(
                          b, 24, generator=g)),
                      image_latent(16), config=kandinsky5_config(), selection="visual 1",
                      text_tokens=7),),
    released={"kandinsky5_image": _released_from_full_size("kandinsky5_image")},
    full_size=dict(image_model="kandinsky5", model_dim=2560, time_dim=512, ff_dim=10240,
                   visual_embed_dim=64, num_text_blocks=2, num_visual_blocks=50,
                   axes_dims=(32, 48, 48), rope_scale_factor=(1.0, 1.0, 1.0)),
    detected=dict(image_model="kandinsky5", model_dim=2560, num_visual_blocks=50,
                  num_text_blocks=2, visual_embed_dim=64),
))

# qwen_image21 is refused by the table (no recipe): tests/comfy/test_dit_attention.py checks the
# refusal on a stand-in class.


# --- video families: Wan 2.1/2.2, HunyuanVideo 1.5, LTX-Video, LTX-2 -----------------------------
# Their tiny models, conditioning and released configs are in tests/comfy/tiny_video.py (built
# through ComfyUI's own loader and detection, multi-frame latents, LTX-2's video+audio
# NestedTensor); tests/comfy/test_video_families.py runs the family suite's properties on them
# (own_suite keeps the image-latent DiT suites off them). ``full_size`` is left out for LTX-2:
# the shared released-checkpoint tests sample a single-tensor latent.
import tiny_video as _tv  # noqa: E402  (imports no ComfyUI at module level)


def _video_variant(family: str, **overrides) -> Variant:
    video = _tv.RECIPES[family]

    def latent(batch, size, _video=video):
        return _video.latent_shape(batch, _video.frames, size)

    return Variant("", video.model_class, video.conditioning, latent, size=video.size,
                   build=lambda seed=0, _video=video: _video.build(seed),
                   selection=video.selection, every_kind="all",
                   own_suite="test_video_families.py", **overrides)


def _video_released(layout_id: str):
    return lambda: _tv.released_model(layout_id)


for _family, _layouts, _text, _downscale in (
        ("wan22_ti2v", ("wan22_ti2v_5b",), 7, 16),   # Wan 2.2's 16× VAE
        ("wan_i2v", ("wan21_i2v_14b",), 7, 8),
        ("wan", ("wan22_a14b", "wan21_14b", "wan21_1_3b"), 7, 8),
        ("wan_vace", ("wan_vace_14b", "wan_vace_1_3b"), 7, 8),
        ("wan_animate2", ("wan_animate2_14b",), 7, 8),
        ("hunyuan_video15", ("hunyuan_video15",), 10, 16),   # 7 text + 3 byT5 glyph tokens
        ("ltx2", ("ltx2",), 7, 32),
        ("ltxv", ("ltxv_13b", "ltxv_2b"), 7, 32)):
    _video = _tv.RECIPES[_family]
    register(Recipe(
        family=_family, hook="joint", min_comfyui=_video.min_comfyui,
        why=_video.needs or "tested on every supported ComfyUI",
        variants=(_video_variant(_family, text_tokens=_text, downscale=_downscale),),
        released={layout: _video_released(layout) for layout in _layouts},
        # LTX-2 and Wan-Animate-2 are told apart by their checkpoints' metadata, which the
        # shared released-checkpoint tests do not pass
        full_size=None if _video.metadata else _video.full_size,
        detected={} if _video.metadata else _video.detected))


# =============================================================================================
# Reading the registry
# =============================================================================================

def find(key: str) -> tuple[Recipe, Variant]:
    """The recipe and variant of a test id ("zimage", "flux2-klein")."""
    family, _, name = key.partition("-")
    for recipe in RECIPES:
        if recipe.family == family:
            for variant in recipe.variants:
                if variant.name == name:
                    return recipe, variant
            raise KeyError(f"{family} has no variant {name!r}; variants: "
                           f"{[recipe.key(v) for v in recipe.variants]}")
    raise KeyError(f"no recipe for the family {family!r}; recipes: {[r.family for r in RECIPES]}")


def recipe(family: str) -> Recipe:
    for known in RECIPES:
        if known.family == family:
            return known
    raise KeyError(f"no recipe for the family {family!r}")


def keys(where: Callable[[Recipe, Variant], bool] = lambda recipe, variant: True) -> list[str]:
    """The test ids of the variants ``where(recipe, variant)`` picks, in the registry's order:
    the parameters of a family test."""
    return [r.key(v) for r in RECIPES for v in r.variants if where(r, v)]


def dit_suite(recipe: Recipe, variant: Variant) -> bool:
    """The variants the DiT family suites run."""
    return recipe.hook == "joint" and variant.suite and not variant.own_suite


def dit_smoke(recipe: Recipe, variant: Variant) -> bool:
    """The DiT variants that get the DiT suites' smoke test only (they share their class and
    hooks with a sibling)."""
    return recipe.hook == "joint" and not variant.suite and not variant.own_suite


def comfyui_version() -> tuple[int, int, int]:
    """The running ComfyUI's version (its comfyui_version.py, on sys.path once ComfyUI is
    imported: conftest.import_comfy)."""
    try:
        import comfyui_version
    except ImportError as error:
        raise RuntimeError("ComfyUI is not on sys.path yet: import it first "
                           "(tests/conftest.py import_comfy or import_pack)") from error
    return tuple(int(x) for x in comfyui_version.__version__.split(".")[:3])


def has_model_class(name: str) -> bool:
    """Whether this ComfyUI's ``comfy.supported_models`` has the class ``name``."""
    import comfy.supported_models as sm
    return hasattr(sm, name)


def unavailable(key: str) -> Optional[str]:
    """Why the tiny model ``key`` cannot be tested on this ComfyUI, or None."""
    recipe, variant = find(key)
    version = comfyui_version()
    if version < recipe.min_comfyui:
        return (f"ComfyUI {'.'.join(map(str, version))}: {recipe.family} is tested from ComfyUI "
                f"{'.'.join(map(str, recipe.min_comfyui))} on ({recipe.why})")
    if not has_model_class(variant.comfy_class):
        return f"this ComfyUI has no comfy.supported_models.{variant.comfy_class} ({key})"
    return None


def skip_unavailable(key: str) -> None:
    reason = unavailable(key)
    if reason:
        import pytest
        pytest.skip(reason)


def sample(key: str, patcher, positive, negative, *, noise=None, batch=1, size=None, seed=0,
           **overrides):
    """Run ComfyUI's real sampler on a latent of the variant's shape with its settings
    (``overrides`` win); returns the result."""
    import comfy.sample
    _, variant = find(key)
    settings = dict(dict(steps=2, cfg=1.0, sampler="euler", scheduler="simple"),
                    **variant.settings)
    settings.update(overrides)
    if noise is None:
        shape = variant.latent(batch, size or variant.size)
        noise = torch.randn(shape, generator=_generator(seed))
    latent = torch.zeros_like(noise)
    return comfy.sample.sample(patcher, noise, settings["steps"], settings["cfg"],
                               settings["sampler"], settings["scheduler"], positive, negative,
                               latent, seed=seed, disable_pbar=True)


class Tiny:
    """A built tiny model of one variant, with its conditioning and sampler settings; skips the
    calling test where this ComfyUI cannot run it."""

    def __init__(self, key: str, seed: int = 0):
        skip_unavailable(key)
        self.key = key
        self.recipe, self.variant = find(key)
        self.family = self.recipe.family
        self.selection = self.variant.selection
        self.every_kind = self.variant.every_kind
        self.text_tokens = self.variant.text_tokens
        self.config = self.variant.config
        self.patcher = self.variant.make(seed)

    def conditioning(self, **kwargs):
        return self.variant.conditioning(**kwargs)

    def noise_shape(self, batch: int, size: Optional[int] = None) -> tuple:
        return self.variant.latent(batch, size or self.variant.size)

    def sample(self, patcher=None, *, noise=None, positive=None, negative=None, cond=None,
               **overrides):
        """One prompt (ComfyUI repeats it over a batch of noise): the conditioning of seed 1
        against that of seed 2 (``cond``: their keyword arguments)."""
        cond = cond or {}
        positive = positive if positive is not None else self.conditioning(seed=1, **cond)
        negative = negative if negative is not None else self.conditioning(seed=2, **cond)
        return sample(self.key, self.patcher if patcher is None else patcher, positive,
                      negative, noise=noise, **overrides)


# --- full-size facts ------------------------------------------------------------------------------

def released_models(recipe: Recipe) -> dict:
    """Layout id → the released model of that layout, on the meta device."""
    return {layout: build() for layout, build in recipe.released.items()}


def full_size_state_dict(family: str) -> dict:
    """The released model's diffusion-model state dict, key names and shapes only (meta
    tensors, nothing allocated): what ``comfy.model_detection`` reads to pick a model class."""
    import comfy.supported_models as sm
    found = recipe(family)
    model_config = getattr(sm, found.main.comfy_class)(dict(found.full_size))
    model_config.set_inference_dtype(torch.bfloat16, None)
    return dict(model_config.get_model({}, device="meta").diffusion_model.state_dict())



def detect_released(state_dict: dict, comfy_class: str, detected: dict):
    """ComfyUI's own detection on a released model's state dict: asserts it picks
    ``comfy_class`` and reads each ``detected`` config value; returns the model config."""
    import comfy.model_detection
    config = comfy.model_detection.detect_unet_config(state_dict, "")
    model_config = comfy.model_detection.model_config_from_unet(state_dict, "")
    assert type(model_config).__name__ == comfy_class
    for key, value in detected.items():
        got = config.get(key)
        assert (list(got) if isinstance(got, tuple) else got) == value, (key, got, value)
    return model_config

# --- through ComfyUI's loader ----------------------------------------------------------------------

def loader_conditioning(family: str, seed: int = 1, tokens: int = 7) -> list:
    """The family's conditioning with the text width of its loader-sized model."""
    found = recipe(family)
    [[text, extra]] = found.main.conditioning(seed=seed, tokens=tokens)
    width = found.loader.text_width
    return [[torch.randn(text.shape[0], tokens, width, generator=_generator(seed)), extra]]


def loader_model_config(family: str):
    """The family's ``comfy.supported_models`` config at its loader size."""
    import comfy.supported_models as sm
    found = recipe(family)
    return getattr(sm, found.main.comfy_class)(dict(found.loader.size))


def loader_state_dict(family: str, seed: int = 0) -> dict:
    """A random state dict with the released checkpoint's key names at the loader size."""
    return dict(finish(loader_model_config(family), seed).model.diffusion_model.state_dict())


def load_through_comfy(state_dict):
    """``comfy.sd.load_diffusion_model_state_dict`` in float32: ComfyUI's own detection picks the
    class and config from the key names and shapes."""
    import comfy.sd
    return comfy.sd.load_diffusion_model_state_dict(state_dict,
                                                    model_options={"dtype": torch.float32})
