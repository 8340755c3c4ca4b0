"""Shared pieces of the digits study: data, the tiny SD1.5-style UNet, the tiny FLUX-class
joint-attention DiT, the class-token "text encoder", the judge classifier and the Fréchet
distance.

Data representation (the "latent"): scikit-learn's 8×8 digits (pixel values 0–16) are scaled to
[−1, 1], upsampled bilinearly to 16×16 and folded space-to-depth (pixel_unshuffle, factor 2) into a
4×8×8 tensor. That tensor is what the UNet denoises, in ComfyUI's *model* space (after the SD1.5
latent format's scale factor), so the model is a stock 4-channel SD1.5 UNet and ComfyUI's sampler,
noise schedule (SD1.5's discrete ε-prediction, 1000 steps) and latent handling run unchanged.
Converting back is exact: pixel_shuffle undoes pixel_unshuffle.

Conditioning: each class (0–9, and 10 = the empty prompt used as CFG's negative) owns a sequence of
learned context tokens; a learned start token shared by all classes comes first, as CLIP's BOS token
does in real prompts. The UNet reads them only through cross-attention (attn2), which is where GAG
acts.

Nothing here imports the GAG pack: this module builds and judges the model; evaluate.py patches it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
UNET_WEIGHTS = HERE / "digits_unet.safetensors"
DIT_WEIGHTS = HERE / "digits_dit.safetensors"
JUDGE_WEIGHTS = HERE / "digits_judge.safetensors"

NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # the "empty prompt"
CLASS_TOKENS = 5  # per class, after the shared start token
CONTEXT_DIM = 64
IMAGE_SIZE = 16
LATENT_SHAPE = (4, 8, 8)
SPLIT_SEED = 0
TEST_FRACTION = 0.25

# The UNet: SD1.5's layout shrunk. Two levels (8×8 and 4×4 latent) with one ResBlock and one
# transformer each, a middle transformer, four output transformers: seven cross-attentions, named
# input 1/3, middle 0, output 0–3 by ComfyUI. GroupNorm(32) needs channel counts that are multiples
# of 32, hence 32 channels throughout (head size 16, 2 heads per layer). There is no 2×2 level:
# with 32 channels GroupNorm(32) normalises each channel on its own, which at 2×2 would leave four
# values per channel; self-attention already gives every level a global view.
UNET_CONFIG = dict(model_channels=32, context_dim=CONTEXT_DIM, num_res_blocks=[1, 1],
                   channel_mult=[1, 1], transformer_depth=[1, 1],
                   transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1,
                   in_channels=4, out_channels=4, image_size=8, use_linear_in_transformer=False,
                   adm_in_channels=None, use_spatial_transformer=True, legacy=False)
HEAD_CHANNELS = 16


# ----------------------------------------------------------------------------------------- data

def load_split():
    """(train_images, train_labels, test_images, test_labels): images (N, 1, 16, 16) in [−1, 1],
    float32; labels int64. A fixed stratified 75/25 split of the 1,797 digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                           align_corners=False).clamp(-1.0, 1.0)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                           stratify=digits.target)
    train_idx, test_idx = torch.tensor(np.sort(train_idx)), torch.tensor(np.sort(test_idx))
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def image_to_model_space(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 16, 16) → (N, 4, 8, 8), the tensor the UNet denoises."""
    return F.pixel_unshuffle(images, 2)


def model_space_to_image(latent: torch.Tensor) -> torch.Tensor:
    """(N, 4, 8, 8) → (N, 1, 16, 16); exact inverse of image_to_model_space."""
    return F.pixel_shuffle(latent, 2)


# ---------------------------------------------------------------------------------- the models

class ClassTokens(torch.nn.Module):
    """The stand-in text encoder: class id → (1 + CLASS_TOKENS, CONTEXT_DIM) context tokens."""

    def __init__(self):
        super().__init__()
        self.start = torch.nn.Parameter(torch.randn(1, CONTEXT_DIM))
        self.tokens = torch.nn.Parameter(torch.randn(NUM_CLASSES + 1, CLASS_TOKENS, CONTEXT_DIM))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        start = self.start.expand(labels.shape[0], 1, CONTEXT_DIM)
        return torch.cat([start, self.tokens[labels]], dim=1)


def unet_model_config():
    """ComfyUI's SD15 model config with the tiny UNet settings (comfy must be importable)."""
    import comfy.supported_models as sm
    config = dict(sm.SD15.unet_config)
    config.update(UNET_CONFIG)
    model_config = sm.SD15(config)
    # BASE.__init__ copies SD15's num_heads=8 / num_head_channels=-1 over whatever we pass.
    model_config.unet_config["num_heads"] = -1
    model_config.unet_config["num_head_channels"] = HEAD_CHANNELS
    model_config.set_inference_dtype(torch.float32, None)
    return model_config


def build_base_model():
    """A ComfyUI BaseModel (eps prediction, SD1.5 schedule) with the tiny UNet, untrained."""
    return unet_model_config().get_model({}, device="cpu")


def load_generator(path: Path = UNET_WEIGHTS):
    """(ModelPatcher, ClassTokens) with the shipped weights, ready for comfy.sample.sample."""
    return _load_generator(path, build_base_model())


def _load_generator(path: Path, model, released_names: bool = False):
    """``model`` (a ComfyUI BaseModel) with the ``unet.*`` weights of ``path`` as its diffusion
    model and the ``tokens.*`` weights as ClassTokens. ``released_names``: the file names its
    weights as the released checkpoints do (FLUX: ``…_norm.scale``), and ComfyUI's model config
    maps them to this release's module names, as its loader does."""
    import comfy.model_patcher
    from safetensors.torch import load_file
    state = load_file(str(path))
    unet_state = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    if released_names:
        unet_state = model.model_config.process_unet_state_dict(unet_state)
    model.diffusion_model.load_state_dict(unet_state, strict=True)
    model.eval()
    tokens = ClassTokens()
    tokens.load_state_dict({k[len("tokens."):]: v for k, v in state.items()
                            if k.startswith("tokens.")}, strict=True)
    tokens.eval()
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    return patcher, tokens


# The joint-attention DiT: ComfyUI's FLUX.1 class (comfy.ldm.flux.model.Flux, built through
# ComfyUI's own model detection, as a FLUX.1-schnell checkpoint without guidance embedding is) at
# tiny size. The 4×8×8 latent is cut into 2×2 patches: 16 image tokens of 16 values. The class
# reaches the model only as its 6 text tokens (ClassTokens, the same stand-in text encoder as the
# UNet's), which FLUX's double blocks and single blocks attend to jointly with the image tokens
# (text first): that joint attention is where GAG acts (text mode: image queries → text keys;
# joint mode: the whole attention). FLUX's pooled-text vector is fed a constant zero vector, so
# the class cannot bypass attention. Hidden 64 = 2 heads of 32 (FLUX's released head size is 128;
# the class takes any), RoPE axes 4+14+14 = 32, 2 double and 2 single blocks.
DIT_POOLED_DIM = 8
DIT_CONFIG = dict(hidden_size=64, num_heads=2, context_in_dim=CONTEXT_DIM,
                  vec_in_dim=DIT_POOLED_DIM, axes_dim=[4, 14, 14], in_channels=4, out_channels=4)
DIT_DEPTH, DIT_SINGLE = 2, 2


def _dit_detection_keys() -> dict:
    """The checkpoint keys (and shapes) ComfyUI's FLUX detection reads, at the tiny size."""
    hidden, head = DIT_CONFIG["hidden_size"], DIT_CONFIG["hidden_size"] // DIT_CONFIG["num_heads"]
    keys = {"img_in.weight": (hidden, LATENT_SHAPE[0] * 4), "txt_in.weight": (hidden, CONTEXT_DIM),
            "vector_in.in_layer.weight": (hidden, DIT_POOLED_DIM)}
    keys.update({f"double_blocks.{i}.img_attn.norm.key_norm.scale": (head,)
                 for i in range(DIT_DEPTH)})
    keys.update({f"single_blocks.{i}.norm.key_norm.scale": (head,) for i in range(DIT_SINGLE)})
    return keys


def dit_model_config():
    """ComfyUI's model config for the tiny FLUX (FluxSchnell: flow matching, shift 1), as
    ComfyUI's detection builds it from the checkpoint keys, with the tiny widths that FLUX
    detection fixes at full size (heads, context, RoPE axes) set on top."""
    import comfy.model_detection as md
    keys = {name: torch.empty(shape, device="meta") for name, shape in
            _dit_detection_keys().items()}
    config = dict(md.detect_unet_config(keys, ""), **DIT_CONFIG)
    model_config = md.model_config_from_unet_config(config, keys)
    if model_config is None or type(model_config).__name__ != "FluxSchnell":
        raise RuntimeError(f"ComfyUI did not build a FluxSchnell config for {config}")
    model_config.set_inference_dtype(torch.float32, None)
    return model_config


def build_dit_base_model():
    """A ComfyUI BaseModel (FLOW prediction) with the tiny FLUX, untrained."""
    return dit_model_config().get_model({}, device="cpu")


def dit_conditioning_extras(count: int) -> dict:
    """What a FLUX conditioning carries beside the text tokens: the pooled vector, zero here."""
    return {"pooled_output": torch.zeros(count, DIT_POOLED_DIM)}


def load_dit_generator(path: Path = DIT_WEIGHTS):
    """(ModelPatcher, ClassTokens) of the trained DiT, ready for comfy.sample.sample (pass
    ``dit_conditioning_extras`` in each conditioning's dict)."""
    return _load_generator(path, build_dit_base_model(), released_names=True)


class Judge(torch.nn.Module):
    """The independent judge: a small CNN on 16×16 images. ``features`` (64-d, the layer before the
    logits) is the space the Fréchet distance is measured in."""

    FEATURES = 64

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.fc = torch.nn.Linear(64 * 4 * 4, self.FEATURES)
        self.head = torch.nn.Linear(self.FEATURES, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(images)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def load_judge(path: Path = JUDGE_WEIGHTS) -> Judge:
    from safetensors.torch import load_file
    judge = Judge()
    judge.load_state_dict(load_file(str(path)), strict=True)
    judge.eval()
    return judge


# ------------------------------------------------------------------------------------ metrics

def feature_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = features.double().numpy()
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(stats_a, stats_b) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^{1/2}), the FID formula, in float64.

    The trace of the matrix square root is computed from the eigenvalues of Σa^{1/2} Σb Σa^{1/2}
    (symmetric PSD, so no complex round-off as with a general sqrtm of Σa Σb)."""
    mu_a, cov_a = stats_a
    mu_b, cov_b = stats_b
    eigval, eigvec = np.linalg.eigh(cov_a)
    sqrt_a = (eigvec * np.sqrt(np.clip(eigval, 0.0, None))) @ eigvec.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


@torch.no_grad()
def judge_images(judge: Judge, images: torch.Tensor, batch: int = 1000):
    """(predicted labels, features) for images (N, 1, 16, 16) in [−1, 1]."""
    preds, feats = [], []
    for chunk in images.split(batch):
        f = judge.features(chunk.clamp(-1.0, 1.0))
        feats.append(f)
        preds.append(judge.head(f).argmax(-1))
    return torch.cat(preds), torch.cat(feats)


def balanced_labels(count: int) -> torch.Tensor:
    """count labels cycling 0..9, so every class gets ⌊count/10⌋ or one more samples."""
    return torch.arange(count) % NUM_CLASSES


def mean_and_spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
