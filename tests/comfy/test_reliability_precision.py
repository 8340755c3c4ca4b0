"""GAG in the precisions ComfyUI runs models in, and with attention scores that overflow float16.

* Tiny SDXL and FLUX built with ComfyUI's own weight/compute dtype machinery
  (``model_config.set_inference_dtype(weight_dtype, manual_cast_dtype)``, which picks
  ``comfy.ops.manual_cast`` when the two differ): bfloat16, float16, and float8_e4m3fn weights
  cast to float32 or bfloat16 per op. Sampling with GAG stays finite and differs from the
  unpatched model of the same precision; the guided attention receives q/k/v in the compute dtype,
  returns that dtype, and matches the float64 GAG reference to that dtype's rounding.
* Scores far beyond float16's range (|q·k|/√d ≈ 10⁵–10⁶) through gag_core and through the
  installed UNet patch in float16: finite, equal to the float64 reference. Float16 softmax of such
  scores would be inf/NaN; gag_core computes scores in float32.
* CUDA only (skips without a GPU): the same overflowing scores through gag_attention's "auto"
  backend (the fused kernel where it applies) in float16/bfloat16. The ComfyUI-level tests here
  run on CPU because tests/conftest.py forces ComfyUI into CPU mode.

CPU half-precision convolutions are slow, so each precision samples a 16×16 latent for 2 steps.
"""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

import tiny_models as tm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from reference import ref_gag_attention, ref_scores, rel_frobenius  # noqa: E402

F8 = getattr(torch, "float8_e4m3fn", None)

# name → (weight dtype, manual-cast compute dtype or None, compute dtype GAG sees, rel. tolerance)
PRECISIONS = {
    "bf16": (torch.bfloat16, None, torch.bfloat16, 2e-2),
    "fp16": (torch.float16, None, torch.float16, 3e-3),
    "fp8_e4m3fn-cast-fp32": (F8, torch.float32, torch.float32, 1e-5),
    "fp8_e4m3fn-cast-bf16": (F8, torch.bfloat16, torch.bfloat16, 2e-2),
}


@pytest.fixture(scope="module")
def gag(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.api")


def build(builder, weight_dtype, manual_cast, seed=0):
    """A tiny model from tiny_models in the given dtypes, set on its model config the way
    ComfyUI's loaders do it (set_inference_dtype(weight, manual_cast); get_model then picks
    comfy.ops for them)."""
    return builder(seed, dtypes=(weight_dtype, manual_cast))


def module(gag, name):
    """A module of the pack, next to nodes/api.py (name relative to nodes/)."""
    return importlib.import_module(gag.__name__.rsplit(".", 1)[0] + "." + name)


class FirstCall:
    """Stands in for gag_core.gag_attention where an adapter calls it; keeps the inputs and
    output of the first call."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0
        self.record = None

    def __call__(self, q, k, v, **kwargs):
        out = self.inner(q, k, v, **kwargs)
        if self.record is None:
            self.record = (q.detach().clone(), k.detach().clone(), v.detach().clone(),
                           dict(kwargs), out.detach().clone())
        self.calls += 1
        return out


def check_precision(gag, patcher, sample, precision, caller, monkeypatch, **gag_kwargs):
    """Sample once with GAG; check the sample and the first guided attention call, intercepted
    in ``caller`` (the module that calls gag_attention for this family)."""
    _, _, compute, tolerance = PRECISIONS[precision]
    spy = FirstCall(caller.gag_attention)
    monkeypatch.setattr(caller, "gag_attention", spy)
    guided = sample(gag.apply_gag(patcher, **gag_kwargs))
    monkeypatch.undo()
    assert spy.calls > 0, "GAG never ran"
    assert torch.isfinite(guided).all(), f"{precision}: non-finite sample"
    q, k, v, kw, out = spy.record
    assert q.dtype == compute and out.dtype == compute, (q.dtype, out.dtype)
    assert torch.isfinite(out).all()
    mask = kw.get("mask")
    expected = ref_gag_attention(q, k, v, kw["scale"], kw["eta"], kw["zeta"], kw["alpha"], mask)
    error = rel_frobenius(out, expected)
    assert error < tolerance, (precision, error)
    # ... and GAG changed the attention by far more than that rounding.
    plain = torch.softmax(ref_scores(q, k, mask), dim=-1) @ v.double()
    assert rel_frobenius(out, plain) > 10 * tolerance, (precision, rel_frobenius(out, plain))


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_unet_samples_in_each_weight_dtype(gag, monkeypatch, precision):
    weight, cast, _, _ = PRECISIONS[precision]
    if weight is None:
        pytest.skip("this torch has no float8_e4m3fn")
    patcher = build(tm.tiny_sdxl, weight, cast)
    if weight == F8:
        layer = patcher.model.diffusion_model.output_blocks[3][1].transformer_blocks[0].attn2.to_q
        assert layer.weight.dtype == F8 and type(layer).__module__ == "comfy.ops"
    pos, neg = tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2)
    check_precision(gag, patcher, lambda p: tm.sample(p, pos, neg, steps=1, cfg=5.0, size=16),
                    precision, module(gag, "guidance"), monkeypatch)


@pytest.mark.parametrize("precision", ["bf16", "fp8_e4m3fn-cast-bf16"])
def test_flux_samples_in_low_precision(gag, monkeypatch, precision):
    weight, cast, _, _ = PRECISIONS[precision]
    if weight is None:
        pytest.skip("this torch has no float8_e4m3fn")
    patcher = build(tm.tiny_flux, weight, cast)
    pos = tm.flux_conditioning(seed=1)
    # Joint mode hands the whole joint attention to gag_attention (through the runtime in
    # nodes/guidance.py), where the spy sees it; the default text mode (gag_core.joint) is
    # checked for finiteness only.
    check_precision(gag, patcher, lambda p: tm.sample_dit(p, pos, pos, steps=1, cfg=1.0, size=16),
                    precision, module(gag, "guidance"), monkeypatch, mode="joint")
    text_mode = tm.sample_dit(gag.apply_gag(patcher), pos, pos, steps=1, cfg=1.0, size=16)
    assert torch.isfinite(text_mode).all()


# ------------------------------------------------------------------------------------------
# scores beyond float16's range
# ------------------------------------------------------------------------------------------

def huge_qkv(dtype, seed=0, batch=2, heads=2, lq=24, lk=13, dim=16, magnitude=300.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, lq, dim, generator=g) * magnitude
    k = torch.randn(batch, heads, lk, dim, generator=g) * magnitude
    v = torch.randn(batch, heads, lk, dim, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("zeta,eta", [(0.0, 15.0), (1.0, math.inf)])
def test_core_handles_scores_that_overflow_fp16(pack, dtype, zeta, eta):
    core = importlib.import_module(f"{pack.__name__}.gag_core")
    q, k, v = huge_qkv(dtype)
    scores = q.double() @ k.double().transpose(-1, -2) / 4.0
    assert scores.abs().max() > 4 * torch.finfo(torch.float16).max  # really out of range
    # What a plain half-precision softmax does with them, for contrast:
    assert not torch.isfinite(torch.softmax(scores.half(), dim=-1)).all()
    out = core.gag_attention(q, k, v, scale=10.0, eta=eta, zeta=zeta)
    assert out.dtype == dtype and torch.isfinite(out).all()
    expected = ref_gag_attention(q, k, v, 10.0, eta, zeta, 1.5)
    assert rel_frobenius(out, expected) < (3e-3 if dtype == torch.float16 else 2e-2)


def test_unet_patch_handles_scores_that_overflow_fp16(gag, pack):
    patched = gag.apply_gag(tm.tiny_sdxl())
    replaces = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    patch = next(iter(replaces.values()))
    q, k, v = huge_qkv(torch.float16)
    to_tokens = lambda t: t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)
    extra = {"n_heads": 2, "dim_head": 16, "attn_precision": None, "block": ("output", 3),
             "block_index": 0, "sigmas": torch.tensor([1.0]), "cond_or_uncond": [0, 1]}
    out = patch(to_tokens(q), to_tokens(k), to_tokens(v), extra)
    assert out.dtype == torch.float16 and out.shape == (2, 24, 32)
    assert torch.isfinite(out).all()
    expected = to_tokens(ref_gag_attention(q, k, v, 10.0, 15.0, 0.0, 1.5))
    assert rel_frobenius(out, expected) < 3e-3


# ------------------------------------------------------------------------------------------
# GPU only (skipped without CUDA)
# ------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_gag_attention_with_overflowing_scores(pack, dtype):
    core = importlib.import_module(f"{pack.__name__}.gag_core")
    q, k, v = (t.cuda() for t in huge_qkv(dtype, lq=300, lk=77, dim=64, heads=4))
    out = core.gag_attention(q, k, v)  # backend "auto": the fused kernel where it applies
    assert out.dtype == dtype and torch.isfinite(out).all()
    expected = ref_gag_attention(q.cpu(), k.cpu(), v.cpu())
    assert rel_frobenius(out.cpu(), expected) < (3e-3 if dtype == torch.float16 else 2e-2)
