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
    """SDXL-family UNet (SDXL, Hyper-SDXL, DMD2 share it): input 4,5 / middle / output 0-5 have
    one transformer each in this tiny config; context dim 64."""
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
    """SD1.5 UNet: cross-attention in input 1,2,4,5,7,8, middle, output 3-11; context dim 64."""
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
