"""TEST-ONLY ComfyUI nodes: tiny random-weight stand-ins for model loaders and text encoders.

Loaded only by the test server (tests/comfy/comfy_server.py links this folder into its temporary
custom_nodes); never shipped, never loaded by a user's ComfyUI. The end-to-end tests take a
bundled workflow, convert it to API format and swap these in for the nodes that would read
multi-gigabyte files:

    CheckpointLoaderSimple  -> GAGTestTinyCheckpoint     (tiny SDXL UNet, CLIP stand-in, tiny VAE)
    UNETLoader              -> GAGTestTinyDiffusionModel (tiny FLUX.1 / FLUX.2 / Qwen-Image / Z-Image /
                                                          Wan DiT)
    DualCLIPLoader, CLIPLoader -> GAGTestTinyTextEncoderLoader (CLIP stand-in)
    VAELoader               -> GAGTestTinyVAE             (real AutoencoderKL code, tiny widths)
    LoraLoaderModelOnly     -> GAGTestTinyLora            (a random low-rank weight patch)
    CLIPTextEncode          -> GAGTestTinyTextEncode      (conditioning seeded by the text)

Each stand-in takes the same inputs as the node it replaces (plus a ``family`` where the real
node infers it from the file), so the graph keeps its links and widget values. Everything else
in the workflow (samplers, schedulers, FluxGuidance, ModelSampling*, latent nodes, VAEDecode,
SaveImage and the GAG nodes) runs as shipped. Models are built by the recipes of the tests'
family registry (tests/comfy/tiny_families.py; ``family`` takes its ids), so they are the same
tiny models the in-process tests use.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

_TESTS_COMFY = Path(__file__).resolve().parent.parent  # this folder is linked, not copied
if str(_TESTS_COMFY) not in sys.path:
    sys.path.insert(0, str(_TESTS_COMFY))

import tiny_families  # noqa: E402

CATEGORY = "_gag_test"


class _Family:
    """One tiny model of the tests' family registry (tests/comfy/tiny_families.py), as the
    stand-ins serve it."""

    def __init__(self, key):
        _, variant = tiny_families.find(key)
        self.build = variant.make                  # seed -> ModelPatcher
        self.conditioning = variant.conditioning   # seed= -> [[cond, extras]]
        shape = variant.latent(1, 8)
        self.latent_channels = shape[1]
        self.video_latents = len(shape) == 5       # samples (batch, channels, frames, h, w)
        self.downscale = variant.downscale         # image pixels per latent pixel
        # Video families (their own suite): the stand-in VAE decodes every latent frame, and
        # different model files give different models (Wan 2.2's high- and low-noise experts).
        self.frames = self.seed_by_file = bool(variant.own_suite)


# registry id ("unet-sdxl", "flux2-klein", "zimage", "wan") → the family the stand-ins build
FAMILIES = {key: _Family(key) for key in tiny_families.keys()}
DEFAULT_CHECKPOINT = "unet-sdxl"
DEFAULT_DIFFUSION_MODEL = "flux-dev"


class TinyTextEncoder:
    """What the CLIP socket carries in tests: which family's conditioning to make."""

    def __init__(self, family: str):
        self.family = family

    def encode(self, text: str):
        # Same text → same conditioning, different text → different conditioning, like a real
        # encoder; the real encoders leave guidance to FluxGuidance, so drop the builder's.
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        cond, extras = FAMILIES[self.family].conditioning(seed=seed)[0]
        extras = {k: v for k, v in extras.items() if k != "guidance"}
        return [[cond, extras]]


def tiny_vae(latent_channels: int, video_latents: bool = False, seed: int = 0,
             downscale: int = 8, frames: bool = False):
    """A real comfy.sd.VAE (AutoencoderKL, ``downscale``× down/up-scaling: 8, or 16 for FLUX.2's
    latents) with 32-wide layers and random weights, so VAEDecode runs its normal code path in a
    fraction of a second."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL
    levels = downscale.bit_length()  # one level more than the number of 2× steps
    config = {"ddconfig": {"double_z": True, "z_channels": latent_channels, "resolution": 256,
                           "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1] * levels,
                           "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0},
              "embed_dim": latent_channels}
    # Variance-preserving weights (std 1/sqrt(fan_in)), unit norms and zero biases, so that
    # differences between latents stay visible in the pixels; handing the VAE a complete state
    # dict also keeps its loader from logging every key as missing.
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, p in AutoencoderKL(**config).state_dict().items():
        if p.dim() > 1:
            state[name] = torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5
        elif ".norm" in name and name.endswith(".weight"):
            state[name] = torch.ones(p.shape)
        else:
            state[name] = torch.zeros(p.shape)
    if frames:
        vae_class = _framewise_vae_class()
    else:
        vae_class = _single_frame_vae_class() if video_latents else comfy.sd.VAE
    return vae_class(sd=state, config={"params": config})


def _single_frame_vae_class():
    import comfy.sd

    class SingleFrameVAE(comfy.sd.VAE):
        """Qwen-Image samples 5-D latents (batch, channels, frames, h, w) that its real video
        VAE decodes; this image VAE decodes the single frame of such a latent."""

        def decode(self, samples_in, *args, **kwargs):
            if samples_in.dim() == 5:
                samples_in = samples_in[:, :, 0]
            return super().decode(samples_in, *args, **kwargs)

    return SingleFrameVAE


def _framewise_vae_class():
    import comfy.sd

    class FramewiseVAE(comfy.sd.VAE):
        """Stands in for a video VAE (Wan's): decodes each frame of a (batch, channels, frames,
        h, w) latent as an image, so VAEDecode gives (batch·frames, H, W, 3), one image per
        latent frame (the real VAE also upsamples time 4×)."""

        def decode(self, samples_in, *args, **kwargs):
            if samples_in.dim() == 5:
                b, c, f, h, w = samples_in.shape
                samples_in = samples_in.movedim(2, 1).reshape(b * f, c, h, w)
            return super().decode(samples_in, *args, **kwargs)

    return FramewiseVAE


def _vae_of(spec):
    return tiny_vae(spec.latent_channels, spec.video_latents, downscale=spec.downscale,
                    frames=spec.frames)


def _family_input(default):
    return (list(FAMILIES), {"default": default})


def _any_string():
    return ("STRING", {"default": ""})


class GAGTestTinyCheckpoint:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": _any_string()},
                "optional": {"family": _family_input(DEFAULT_CHECKPOINT)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, ckpt_name, family=DEFAULT_CHECKPOINT):
        spec = FAMILIES[family]
        return (spec.build(0), TinyTextEncoder(family), _vae_of(spec))


class GAGTestTinyDiffusionModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": _any_string(), "weight_dtype": _any_string()},
                "optional": {"family": _family_input(DEFAULT_DIFFUSION_MODEL)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, unet_name, weight_dtype, family=DEFAULT_DIFFUSION_MODEL):
        spec = FAMILIES[family]
        seed = 0
        if spec.seed_by_file:
            seed = int.from_bytes(hashlib.sha256(unet_name.encode()).digest()[:4], "little")
        return (spec.build(seed),)


class GAGTestTinyTextEncoderLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"type": _any_string()},
                "optional": {"clip_name": _any_string(), "clip_name1": _any_string(),
                             "clip_name2": _any_string(), "device": _any_string(),
                             "family": _family_input(DEFAULT_DIFFUSION_MODEL)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, type, family=DEFAULT_DIFFUSION_MODEL, **file_names):
        return (TinyTextEncoder(family),)


class GAGTestTinyVAE:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": _any_string()},
                "optional": {"family": _family_input(DEFAULT_DIFFUSION_MODEL)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, vae_name, family=DEFAULT_DIFFUSION_MODEL):
        return (_vae_of(FAMILIES[family]),)


class GAGTestTinyLora:
    """Stands in for LoraLoaderModelOnly: a rank-4 random update of every attention
    projection, applied through ModelPatcher.add_patches like a real LoRA."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "lora_name": _any_string(),
                             "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0,
                                                          "max": 100.0})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model, lora_name, strength_model):
        patched = model.clone()
        generator = torch.Generator().manual_seed(
            int.from_bytes(hashlib.sha256(lora_name.encode()).digest()[:4], "little"))
        patches = {}
        for key, weight in model.model.state_dict().items():
            if "attn" in key and key.endswith(".weight") and weight.dim() == 2:
                out_features, in_features = weight.shape
                up = torch.randn(out_features, 4, generator=generator) * 0.05
                down = torch.randn(4, in_features, generator=generator) * 0.05
                patches[key] = (up @ down,)
        if not patches:
            raise RuntimeError("GAGTestTinyLora found no attention weights to patch")
        patched.add_patches(patches, strength_model)
        return (patched,)


class GAGTestTinyTextEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, text, clip):
        return (clip.encode(text),)


NODE_CLASS_MAPPINGS = {
    "GAGTestTinyCheckpoint": GAGTestTinyCheckpoint,
    "GAGTestTinyDiffusionModel": GAGTestTinyDiffusionModel,
    "GAGTestTinyTextEncoderLoader": GAGTestTinyTextEncoderLoader,
    "GAGTestTinyVAE": GAGTestTinyVAE,
    "GAGTestTinyLora": GAGTestTinyLora,
    "GAGTestTinyTextEncode": GAGTestTinyTextEncode,
}
