"""Tiny random-weight models built from ComfyUI's real architecture classes, for CPU tests.

Each builder returns a ModelPatcher whose model runs real ComfyUI code end to end in well under a
second per sampling run. Weights are drawn from a fixed seed, since ComfyUI skips initialisation.
"""

from __future__ import annotations

import torch


def _finish(model_config, seed: int):
    import comfy.model_patcher
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def tiny_sdxl(seed: int = 0):
    """SDXL-family UNet (SDXL, Hyper-SDXL, DMD2 share it): cross-attention in input 5, the middle
    block and output 0-5, one transformer each in this tiny config; context dim 64."""
    import comfy.supported_models as sm
    cfg = dict(sm.SDXL.unet_config)
    cfg.update(model_channels=32, transformer_depth=[0, 0, 1, 1, 1, 1],
               transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1], transformer_depth_middle=1,
               context_dim=64, num_res_blocks=[1, 1, 1], channel_mult=[1, 2, 2], in_channels=4,
               out_channels=4, use_spatial_transformer=True, image_size=32,
               num_classes="sequential", adm_in_channels=2816, use_linear_in_transformer=True,
               legacy=False)
    mc = sm.SDXL(cfg)
    mc.unet_config["num_head_channels"] = 16  # BASE.__init__ resets it to 64
    return _finish(mc, seed)


def tiny_sdxl_deep(seed: int = 0):
    """Like tiny_sdxl but with two transformers in some blocks, to exercise transformer indices."""
    import comfy.supported_models as sm
    cfg = dict(sm.SDXL.unet_config)
    cfg.update(model_channels=32, transformer_depth=[0, 0, 2, 2, 1, 1],
               transformer_depth_output=[0, 0, 0, 2, 2, 2, 1, 1, 1], transformer_depth_middle=2,
               context_dim=64, num_res_blocks=[1, 1, 1], channel_mult=[1, 2, 2], in_channels=4,
               out_channels=4, use_spatial_transformer=True, image_size=32,
               num_classes="sequential", adm_in_channels=2816, use_linear_in_transformer=True,
               legacy=False)
    mc = sm.SDXL(cfg)
    mc.unet_config["num_head_channels"] = 16
    return _finish(mc, seed)


def tiny_sd15(seed: int = 0):
    """SD1.5 UNet: cross-attention in input 1, 3, 5, 7, the middle block and output 0-7 in this tiny
    config; context dim 64."""
    import comfy.supported_models as sm
    cfg = dict(sm.SD15.unet_config)
    cfg.update(model_channels=32, context_dim=64, num_res_blocks=[1, 1, 1, 1],
               channel_mult=[1, 1, 2, 2], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
               transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1], transformer_depth_middle=1,
               in_channels=4, out_channels=4, image_size=32, use_linear_in_transformer=False,
               adm_in_channels=None, use_spatial_transformer=True, legacy=False)
    mc = sm.SD15(cfg)
    mc.unet_config["num_heads"] = 2
    mc.unet_config["num_head_channels"] = -1
    return _finish(mc, seed)


def sdxl_conditioning(batch: int = 1, seed: int = 1, tokens: int = 77):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 64, generator=g),
             {"pooled_output": torch.randn(batch, 1280, generator=g)}]]


def sd15_conditioning(batch: int = 1, seed: int = 1, tokens: int = 77):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 64, generator=g), {}]]


def sample(patcher, positive, negative, *, steps=4, cfg=5.0, seed=0, size=32, batch=1,
           sampler="euler", scheduler="normal", noise=None):
    """Run ComfyUI's real sampler; returns the denoised latent (batch, 4, size/8·8…)."""
    import comfy.sample
    if noise is None:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(batch, 4, size, size, generator=g)
    latent = torch.zeros_like(noise)
    return comfy.sample.sample(patcher, noise, steps, cfg, sampler, scheduler, positive, negative,
                               latent, seed=seed, disable_pbar=True)


# ---------------------------------------------------------------------------------------------
# Tiny joint-attention DiTs (MMDiT family). Latents have 16 channels; Qwen-Image takes 5-D
# latents (B, C, frames, H, W). Use ``sample_dit`` to sample them.
# ---------------------------------------------------------------------------------------------

def _unit_norms(patcher):
    """Norm gains at 1, as trained models roughly have them. With the random 0.05 gains that
    ``_finish`` leaves, the q/k RMS norms of these DiTs shrink q and k ~20× and every attention
    map is almost uniform, a regime in which no attention patch has anything to act on."""
    with torch.no_grad():
        for module in patcher.model.diffusion_model.modules():
            if "norm" not in type(module).__name__.lower():
                continue
            for name in ("weight", "scale"):
                gain = getattr(module, name, None)
                if isinstance(gain, torch.nn.Parameter):
                    gain.fill_(1.0)
    return patcher


def tiny_flux(seed: int = 0, schnell: bool = False):
    """FLUX.1-dev (guidance-distilled) or, with ``schnell``, FLUX.1-schnell: 2 double and
    2 single blocks, hidden 64, 4 heads of 16, context dim 48, pooled dim 32."""
    import comfy.supported_models as sm
    cfg = dict(image_model="flux", guidance_embed=not schnell, in_channels=16, out_channels=16,
               vec_in_dim=32, context_in_dim=48, hidden_size=64, mlp_ratio=2.0, num_heads=4,
               depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10000, patch_size=2,
               qkv_bias=True)
    return _unit_norms(_finish((sm.FluxSchnell if schnell else sm.Flux)(cfg), seed))


def flux_conditioning(batch: int = 1, seed: int = 1, tokens: int = 20, guidance: float = 3.5):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 48, generator=g),
             {"pooled_output": torch.randn(batch, 32, generator=g), "guidance": guidance}]]


def tiny_chroma(seed: int = 0):
    """Chroma: FLUX-style double/single blocks without pooled text, modulation from the
    distilled-guidance approximator (in_dim 64 is fixed by the model's timestep encoding)."""
    import comfy.supported_models as sm
    cfg = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=48,
               hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2, depth_single_blocks=2,
               axes_dim=[4, 6, 6], theta=10000, patch_size=2, qkv_bias=True, in_dim=64,
               out_dim=64, hidden_dim=64, n_layers=2)
    return _unit_norms(_finish(sm.Chroma(cfg), seed))


def chroma_conditioning(batch: int = 1, seed: int = 1, tokens: int = 20):
    # Chroma ignores the pooled vector, but its model class (a Flux subclass) requires one.
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 48, generator=g), {"pooled_output": torch.zeros(batch, 32)}]]


def tiny_sd3(seed: int = 0):
    """SD3.5-medium-like MMDiT: 2 joint blocks (hidden 128, 2 heads of 64 — MMDiT fixes the
    head size at 64), RMS q/k norm, and an extra image-only self-attention (MMDiT-X) in
    block 0; context dim 48, pooled dim 32."""
    import comfy.supported_models as sm
    cfg = dict(sm.SD3.unet_config)
    cfg.update(in_channels=16, out_channels=16, patch_size=2, depth=2, input_size=None,
               adm_in_channels=32, pos_embed_max_size=32, num_patches=32 * 32,
               context_embedder_config={"target": "torch.nn.Linear",
                                        "params": {"in_features": 48, "out_features": 128}},
               qk_norm="rms", x_block_self_attn_layers=[0])
    patcher = _finish(sm.SD3(cfg), seed)
    # pos_embed is a buffer (torch.empty), not a parameter: give it values too.
    pos_embed = patcher.model.diffusion_model.pos_embed
    with torch.no_grad():
        pos_embed.copy_(torch.randn(pos_embed.shape, generator=torch.Generator().manual_seed(seed)) * 0.05)
    return _unit_norms(patcher)


def sd3_conditioning(batch: int = 1, seed: int = 1, tokens: int = 20):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 48, generator=g),
             {"pooled_output": torch.randn(batch, 32, generator=g)}]]


def tiny_qwen_image(seed: int = 0):
    """Qwen-Image: 2 dual-stream blocks, 4 heads of 16, text dim 48."""
    import comfy.supported_models as sm
    cfg = dict(image_model="qwen_image", in_channels=64, out_channels=16, num_layers=2,
               attention_head_dim=16, num_attention_heads=4, joint_attention_dim=48,
               axes_dims_rope=(4, 6, 6))
    return _unit_norms(_finish(sm.QwenImage(cfg), seed))


def qwen_image_conditioning(batch: int = 1, seed: int = 1, tokens: int = 20):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 48, generator=g), {}]]


def sample_dit(patcher, positive, negative, *, steps=3, cfg=1.0, seed=0, size=16, batch=1,
               channels=16, frames=None, sampler="euler", scheduler="simple", noise=None):
    """Like ``sample`` for latents with ``channels`` channels; ``frames`` adds the time axis
    that video-latent models (Qwen-Image) expect: (batch, channels, frames, size, size)."""
    import comfy.sample
    if noise is None:
        g = torch.Generator().manual_seed(seed)
        shape = (batch, channels) + ((frames,) if frames else ()) + (size, size)
        noise = torch.randn(shape, generator=g)
    latent = torch.zeros_like(noise)
    return comfy.sample.sample(patcher, noise, steps, cfg, sampler, scheduler, positive, negative,
                               latent, seed=seed, disable_pbar=True)


def tiny_auraflow(seed: int = 0):
    """AuraFlow: a joint-attention DiT that GAG does not support (for the error-path tests)."""
    import comfy.supported_models as sm
    cfg = dict(sm.AuraFlow.unet_config)
    cfg.update(max_seq=64, n_layers=2, n_double_layers=1, dim=64, n_heads=2, patch_size=2,
               in_channels=4, out_channels=4, cond_seq_dim=48, global_conddim=64)
    return _finish(sm.AuraFlow(cfg), seed)


# name → (builder, conditioning(batch=, seed=), sample_dit keyword arguments, layer selection
# naming two blocks of different kinds where the family has them)
DIT_FAMILIES = {
    "flux": (tiny_flux, flux_conditioning, {}, "double 1, single 0"),
    "flux_schnell": (lambda seed=0: tiny_flux(seed, schnell=True), flux_conditioning, {},
                     "double 0, single 1"),
    "chroma": (tiny_chroma, chroma_conditioning, {"cfg": 3.0}, "double 0, single 1"),
    "sd3": (tiny_sd3, sd3_conditioning, {"cfg": 3.0}, "joint 0"),
    "qwen_image": (tiny_qwen_image, qwen_image_conditioning, {"cfg": 2.5, "frames": 1},
                   "joint 1"),
}
