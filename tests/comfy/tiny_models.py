"""Tiny random-weight models built from ComfyUI's real architecture classes, for CPU tests.

Each builder returns a ModelPatcher whose model runs real ComfyUI code end to end in well under a
second per sampling run. Weights are drawn from a fixed seed, since ComfyUI skips initialisation.
"""

from __future__ import annotations

import torch


FP32 = (torch.float32, None)  # (weight dtype, manual-cast compute dtype or None)


def _finish(model_config, seed: int, dtypes=FP32):
    import comfy.model_patcher
    model_config.set_inference_dtype(*dtypes)
    model = _random_weights(model_config.get_model({}, device="cpu"), seed)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def tiny_sdxl(seed: int = 0, dtypes=FP32):
    """SDXL-family UNet (SDXL, Hyper-SDXL, DMD2 share it): cross-attention in input 5, the middle
    block and output 0-5, one transformer each in this tiny config; context dim 64. ``dtypes``:
    (weight dtype, manual-cast dtype or None), as ComfyUI's loaders pass them to the model
    config."""
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
    return _finish(mc, seed, dtypes)


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

def _unit_norms_of(diffusion_model):
    """Norm gains at 1, as trained models roughly have them. With random 0.05 gains the q/k RMS
    norms of these DiTs shrink q and k ~20× and every attention map is almost uniform, a regime
    in which no attention patch has anything to act on."""
    with torch.no_grad():
        for module in diffusion_model.modules():
            if "norm" not in type(module).__name__.lower():
                continue
            for name in ("weight", "scale"):
                gain = getattr(module, name, None)
                if isinstance(gain, torch.nn.Parameter):
                    gain.fill_(1.0)
    return diffusion_model


# --- building DiTs the way ComfyUI loads them -------------------------------------------------
#
# A DiT builder names the checkpoint keys ComfyUI's model detection reads (the real key names of
# the released files, with tiny shapes) and hands them to ComfyUI's own detection, which decides
# the model class and every constructor field this ComfyUI release needs (so a field that upstream
# adds, like FLUX's txt_ids_dims in 0.33, is filled in by upstream). ``tiny`` lists the widths the
# test wants. Where detection reads all of them from the weights, a random state dict with every
# real key goes through comfy.sd.load_diffusion_model_state_dict, ComfyUI's loader, end to end.
# Where this release fixes a width at its full size instead (FLUX.1 on 0.3.64: hidden 3072,
# context 4096; Chroma's guidance approximator; Qwen-Image's widths on every release), the
# detected config gets the tiny widths and the model is built from ComfyUI's model class for it.

_HEAD = 128  # FLUX-family head dim: detection derives the head count as hidden // 128


def _detected_model_config(detection_keys: dict, tiny: dict):
    """(model config, whether ComfyUI's detection alone reproduces ``tiny``)."""
    import comfy.model_detection as md
    keys = {name: torch.empty(shape, device="meta") for name, shape in detection_keys.items()}
    detected = md.detect_unet_config(keys, "")
    if detected is None:
        raise RuntimeError(f"ComfyUI's detection does not recognise {sorted(detection_keys)[:4]}…")
    config = dict(detected, **tiny)
    model_config = md.model_config_from_unet_config(config, keys)
    if model_config is None:
        raise RuntimeError(f"no ComfyUI model class matches the detected config {config}")
    return model_config, all(detected.get(k) == v for k, v in tiny.items())


def _random_weights(model, seed: int, random_buffers=()):
    """Weights drawn from ``seed`` (ComfyUI skips initialisation), and the named buffers that
    the model creates uninitialised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        for name, buffer in model.named_buffers():
            if name.rsplit(".", 1)[-1] in random_buffers:  # created with torch.empty
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.05)
    return model


def _dit(detection_keys: dict, tiny: dict, seed: int, random_buffers=(), device=None,
         dtypes=FP32):
    """A ModelPatcher of the DiT that ComfyUI detects from ``detection_keys`` (see above); with
    ``device="meta"`` just the model (no weights), for layout checks. ``dtypes`` other than
    float32 (weight dtype, manual-cast dtype or None) are set on the model config as ComfyUI's
    loader sets them (the loader itself picks the cast from the device, so it is not used)."""
    import comfy.model_patcher
    import comfy.sd
    model_config, loadable = _detected_model_config(detection_keys, tiny)
    loadable = loadable and dtypes == FP32
    model_config.set_inference_dtype(*dtypes)
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            return model_config.get_model({}, device=torch.device("meta"))
    model = model_config.get_model({}, device="cpu")
    _unit_norms_of(_random_weights(model.diffusion_model, seed, random_buffers))
    cpu = torch.device("cpu")
    if not loadable:
        return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    state = model.diffusion_model.state_dict()  # every key of the real checkpoint format
    patcher = comfy.sd.load_diffusion_model_state_dict(state, model_options={"dtype": torch.float32})
    if patcher is None:
        raise RuntimeError("comfy.sd.load_diffusion_model_state_dict did not recognise the model")
    return patcher


def _key_norms(prefix: str, count: int, path: str) -> dict:
    return {f"{prefix}.{i}.{path}": (_HEAD,) for i in range(count)}


def _flux_keys(hidden, context, *, guidance, vec_in=None, in_channels=64, flux2=False,
               depth=2, single=2, chroma=False):
    """The keys FLUX-family detection reads, named as in the released checkpoints."""
    keys = {"img_in.weight": (hidden, in_channels), "txt_in.weight": (hidden, context)}
    keys.update(_key_norms("double_blocks", depth, "img_attn.norm.key_norm.scale"))
    keys.update(_key_norms("single_blocks", single, "norm.key_norm.scale"))
    if vec_in:
        keys["vector_in.in_layer.weight"] = (hidden, vec_in)
    if guidance:
        keys["guidance_in.in_layer.weight"] = (hidden, 256)
    if flux2:
        keys["double_stream_modulation_img.lin.weight"] = (6 * 2 * hidden, hidden)
    if chroma:
        keys["distilled_guidance_layer.norms.0.scale"] = (64,)
    return keys


def tiny_flux(seed: int = 0, schnell: bool = False, depth: int = 2, single: int = 2,
              device=None, dtypes=FP32):
    """FLUX.1-dev (guidance-distilled) or, with ``schnell``, FLUX.1-schnell: ``depth`` double and
    ``single`` single blocks, hidden 256 = 2 heads of 128 (FLUX fixes the head size), context
    dim 48, pooled dim 32; 16-channel latents."""
    keys = _flux_keys(256, 48, guidance=not schnell, vec_in=32, depth=depth, single=single)
    return _dit(keys, dict(hidden_size=256, num_heads=2, context_in_dim=48), seed,
                device=device, dtypes=dtypes)


def comfyui_has_flux2() -> bool:
    import comfy.supported_models as sm
    return hasattr(sm, "Flux2")


def _require_flux2():
    """Skips the calling test on a ComfyUI without FLUX.2 (0.3.64)."""
    if not comfyui_has_flux2():
        import comfyui_version  # ComfyUI's root module, on sys.path once ComfyUI is imported
        import pytest
        pytest.skip(f"ComfyUI {comfyui_version.__version__} has no FLUX.2 "
                    "(comfy.supported_models.Flux2 arrived after 0.3.64)")


def tiny_flux2(seed: int = 0, klein: bool = False, depth: int | None = None,
               single: int = 2, device=None):
    """FLUX.2: one modulation shared by all blocks (global_modulation), no pooled text vector,
    128-channel latents at 1/16 scale (patch size 1), text front-padded to 512 tokens by
    ComfyUI. dev-like: guidance embedding, 2 double blocks; ``klein``-like (the step-distilled
    Klein models): no guidance embedding, 1 double block. Both 2 single blocks, hidden 256 =
    2 heads of 128, context dim 48. Skips the test on a ComfyUI without FLUX.2."""
    _require_flux2()
    depth = depth if depth is not None else (1 if klein else 2)
    keys = _flux_keys(256, 48, guidance=not klein, in_channels=128, flux2=True, depth=depth,
                      single=single)
    return _dit(keys, dict(hidden_size=256, num_heads=2, context_in_dim=48), seed,
                device=device)


def tiny_flux2_klein(seed: int = 0, **kwargs):
    return tiny_flux2(seed, klein=True, **kwargs)


def flux2_conditioning(batch: int = 1, seed: int = 1, tokens: int = 20,
                       guidance: float | None = 4.0):
    """FLUX.2 text conditioning (dev reads ``guidance``, Klein has no guidance embedding)."""
    g = torch.Generator().manual_seed(seed)
    extras = {} if guidance is None else {"guidance": guidance}
    return [[torch.randn(batch, tokens, 48, generator=g), extras]]


def flux2_klein_conditioning(batch: int = 1, seed: int = 1, tokens: int = 20):
    return flux2_conditioning(batch, seed, tokens, guidance=None)


def flux_conditioning(batch: int = 1, seed: int = 1, tokens: int = 20, guidance: float = 3.5):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 48, generator=g),
             {"pooled_output": torch.randn(batch, 32, generator=g), "guidance": guidance}]]


def tiny_chroma(seed: int = 0, depth: int = 2, single: int = 2, device=None):
    """Chroma: FLUX-style double/single blocks without pooled text, modulation from the
    distilled-guidance approximator (in_dim 64 is fixed by the model's timestep encoding). Hidden
    64 = 4 heads of 16, context dim 48; the approximator (full size in every release's detection)
    shrunk to 2 layers of 64."""
    keys = _flux_keys(64, 48, guidance=False, depth=depth, single=single, chroma=True)
    tiny = dict(hidden_size=64, num_heads=4, axes_dim=[4, 6, 6], mlp_ratio=2.0,
                context_in_dim=48, in_dim=64, out_dim=64, hidden_dim=64, n_layers=2)
    return _dit(keys, tiny, seed, device=device)


def chroma_conditioning(batch: int = 1, seed: int = 1, tokens: int = 20):
    # Chroma ignores the pooled vector, but its model class (a Flux subclass) requires one.
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 48, generator=g), {"pooled_output": torch.zeros(batch, 32)}]]


def tiny_sd3(seed: int = 0, depth: int = 2, device=None):
    """SD3.5-medium-like MMDiT: ``depth`` joint blocks (hidden 64·depth, ``depth`` heads of 64 —
    MMDiT ties both to the depth), RMS q/k norm, and an extra image-only self-attention (MMDiT-X)
    in block 0; context dim 48, pooled dim 32. Detection reads every field from these keys."""
    hidden = 64 * depth
    keys = {"x_embedder.proj.weight": (hidden, 16, 2, 2),
            "final_layer.linear.weight": (2 * 2 * 16, hidden),
            "y_embedder.mlp.0.weight": (hidden, 32),
            "context_embedder.weight": (hidden, 48),
            "pos_embed": (1, 32 * 32, hidden),
            "joint_blocks.0.context_block.attn.ln_q.weight": (64,),
            "joint_blocks.0.x_block.attn2.qkv.weight": (3 * hidden, hidden)}
    for i in range(depth):
        keys[f"joint_blocks.{i}.context_block.attn.qkv.weight"] = (3 * hidden, hidden)
    return _dit(keys, {}, seed, random_buffers=("pos_embed",), device=device)


def sd3_conditioning(batch: int = 1, seed: int = 1, tokens: int = 20):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 48, generator=g),
             {"pooled_output": torch.randn(batch, 32, generator=g)}]]


def tiny_qwen_image(seed: int = 0, layers: int = 2, device=None):
    """Qwen-Image: ``layers`` dual-stream blocks, 4 heads of 16, text dim 48 (detection reads only
    the block count and input width; the rest is fixed at full size, so shrunk here)."""
    keys = {"txt_norm.weight": (48,), "img_in.weight": (64, 64)}
    for i in range(layers):
        keys[f"transformer_blocks.{i}.attn.to_q.weight"] = (64, 64)
    tiny = dict(attention_head_dim=16, num_attention_heads=4, joint_attention_dim=48,
                axes_dims_rope=(4, 6, 6))
    return _dit(keys, tiny, seed, device=device)


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


# The DiTs bench/bench_dit.py --effect measures (its RESULTS are keyed by these names): name →
# (builder, conditioning(batch=, seed=), sample_dit keyword arguments, layer selection naming two
# blocks of different kinds where the family has them). The tests read the family registry,
# tests/comfy/tiny_families.py, instead.
DIT_FAMILIES = {
    "flux": (tiny_flux, flux_conditioning, {}, "double 1, single 0"),
    "flux_schnell": (lambda seed=0: tiny_flux(seed, schnell=True), flux_conditioning, {},
                     "double 0, single 1"),
    "chroma": (tiny_chroma, chroma_conditioning, {"cfg": 3.0}, "double 0, single 1"),
    "sd3": (tiny_sd3, sd3_conditioning, {"cfg": 3.0}, "joint 0"),
    "qwen_image": (tiny_qwen_image, qwen_image_conditioning, {"cfg": 2.5, "frames": 1},
                   "joint 1"),
    # FLUX.2 (skipped where the ComfyUI has none): 128-channel latents at 1/16 scale, 4×4 here
    # (16 image tokens after the 512 padded text tokens).
    "flux2": (tiny_flux2, flux2_conditioning, {"channels": 128, "size": 4}, "double 1, single 0"),
    "flux2_klein": (tiny_flux2_klein, flux2_klein_conditioning, {"channels": 128, "size": 4},
                    "double 0, single 1"),
}
