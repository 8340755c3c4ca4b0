"""GAG's installed patches under torch.compile (what ComfyUI's TorchCompileModel node does to the
whole diffusion model, with fullgraph=False).

Compiling a whole model on CPU takes 20-45 s even with dynamo's "eager" backend on a 2-core
machine, so CI traces the patch calls themselves: the UNet attn2 replace and the DiT attention
override, called exactly as ComfyUI calls them, through dynamo.explain and a fullgraph
aot_eager compile. What must hold:

* Default schedule (always on): no graph break in either patch, with or without repeat-padded
  keys (nodes/guidance.py drops repeats with a keep-mask under compile instead of a host read),
  and compiled output = eager output.
* A partial window or ramp needs σ on the host to decide whether a step is guided: exactly one
  kind of break, in GuidanceRuntime.step_scale, nowhere else.

The whole-model run (set_torch_compile_wrapper, ComfyUI's own compile wrapper) runs only with
GAG_TEST_COMPILE_MODEL=1 (dynamo "eager" backend) or =inductor.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

import tiny_models as tm

dynamo = pytest.importorskip("torch._dynamo")


@pytest.fixture(scope="module")
def gag(pack):
    name = pack.__name__
    return type("Gag", (), dict(api=importlib.import_module(f"{name}.nodes.api"),
                                dit_replace=importlib.import_module(f"{name}.nodes.adapters.dit_replace"),
                                model_call=importlib.import_module(f"{name}.nodes.adapters.model_call")))


@pytest.fixture(scope="module")
def sdxl(pack):
    return tm.tiny_sdxl()


def unet_patch(gag, model, **kwargs):
    patched = gag.api.apply_gag(model, **kwargs)
    replaces = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    return replaces[("output", 3, 0)]


def attn2_inputs(repeated: bool, seed=0, heads=2, dim_head=16):
    """q, k, v as ComfyUI hands them to an attn2 replace, (B, L, heads·dim_head); with
    ``repeated`` the first row's context is a 77-token prompt repeated to 154 (batched with a
    154-token negative), as comfy/conds.py pads it."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 64, heads * dim_head, generator=g) * 2
    k = torch.randn(2, 154, heads * dim_head, generator=g) * 2
    v = torch.randn(2, 154, heads * dim_head, generator=g)
    if repeated:
        k[0, 77:], v[0, 77:] = k[0, :77], v[0, :77]
    extra = {"n_heads": heads, "dim_head": dim_head, "attn_precision": None,
             "block": ("output", 3), "block_index": 0, "cond_or_uncond": [0, 1],
             "sigmas": torch.tensor([3.0, 3.0])}
    return q, k, v, extra


def break_sites(explanation) -> list[tuple[str, str]]:
    """(file name, function) of the innermost user frame of each graph break."""
    sites = []
    for reason in explanation.break_reasons:
        frame = reason.user_stack[-1]
        sites.append((os.path.basename(frame.filename), frame.name))
    return sites


@pytest.mark.parametrize("repeated", [False, True], ids=["distinct keys", "repeat-padded keys"])
def test_unet_patch_traces_without_breaks_and_compiles_to_the_eager_result(gag, sdxl, repeated):
    patch = unet_patch(gag, sdxl)
    q, k, v, extra = attn2_inputs(repeated)
    eager = patch(q, k, v, extra)
    dynamo.reset()
    explanation = dynamo.explain(patch)(q, k, v, extra)
    assert explanation.graph_break_count == 0, break_sites(explanation)
    dynamo.reset()
    compiled = torch.compile(patch, backend="aot_eager", fullgraph=True, dynamic=False)
    assert torch.allclose(compiled(q, k, v, extra), eager, rtol=1e-5, atol=1e-5)
    if repeated:  # the compiled keep-mask path drops the copies as the eager cut does
        q1, k1, v1 = q[:1], k[:1, :77], v[:1, :77]
        alone = patch(q1, k1, v1, dict(extra, cond_or_uncond=[0]))
        assert torch.allclose(eager[:1], alone, rtol=1e-5, atol=1e-5)


def test_partial_window_breaks_only_where_sigma_is_read(gag, sdxl):
    patch = unet_patch(gag, sdxl, start_percent=0.0, end_percent=0.5)
    q, k, v, extra = attn2_inputs(False)
    eager = patch(q, k, v, extra)
    fresh = lambda: dict(extra, sigmas=extra["sigmas"].clone())  # a new denoiser call
    dynamo.reset()
    explanation = dynamo.explain(patch)(q, k, v, fresh())
    sites = set(break_sites(explanation))
    assert sites == {("guidance.py", "step_scale")}, sites
    dynamo.reset()
    compiled = torch.compile(patch, backend="aot_eager")
    assert torch.allclose(compiled(q, k, v, fresh()), eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_dit_attention_override_traces_without_breaks(gag, mode):
    """The override as FLUX's attention calls it: post-RoPE q, k in (B, H, L, D),
    skip_reshape=True, text tokens first, the block in transformer_options (as 0.3.64's block
    replace marks it, and as ComfyUI 0.33+ tells it itself)."""
    from comfy.ldm.modules.attention import attention_pytorch
    from types import SimpleNamespace
    import comfy.ldm.modules.attention  # noqa: F401
    patched = gag.api.apply_gag(tm.tiny_flux(), mode=mode)
    options = patched.model_options["transformer_options"]
    override = options["optimized_attention_override"]
    g = torch.Generator().manual_seed(1)
    text, image, heads, dim = 20, 64, 4, 16
    q, k, v = (torch.randn(1, heads, text + image, dim, generator=g) for _ in range(3))
    layer = sorted(override.layers)[0]

    def attend(q, k, v):
        if override.block_types:
            block = {"block_type": "double", "block_index": layer.block,
                     gag.model_call.TEXT_TOKENS_KEY: text}
        else:
            block = {gag.dit_replace.MARK_KEY: gag.dit_replace.BlockMark(layer, text,
                                                                          text + image)}
        return override(attention_pytorch, q, k, v, heads, skip_reshape=True,
                        transformer_options=block)

    eager = attend(q, k, v)
    assert not torch.allclose(eager, attention_pytorch(q, k, v, heads, skip_reshape=True))
    dynamo.reset()
    explanation = dynamo.explain(attend)(q, k, v)
    assert explanation.graph_break_count == 0, break_sites(explanation)
    dynamo.reset()
    compiled = torch.compile(attend, backend="aot_eager", fullgraph=True, dynamic=False)
    assert torch.allclose(compiled(q, k, v), eager, rtol=1e-5, atol=1e-5)


def _whole_model_backend():
    """GAG_TEST_COMPILE_MODEL=1 → dynamo's "eager" backend (tracing and graph breaks, no code
    generation); =inductor → TorchCompileModel's default backend. The tests' ComfyUI runs in CPU
    mode (tests/conftest.py), so even on a GPU machine this compiles for the CPU."""
    value = os.environ.get("GAG_TEST_COMPILE_MODEL", "")
    return {"1": "eager", "eager": "eager", "inductor": "inductor"}.get(value)


@pytest.mark.skipif(_whole_model_backend() is None,
                    reason="compiling a whole model takes 20-45 s per model on CPU; set "
                           "GAG_TEST_COMPILE_MODEL=1 (or =inductor) to run it")
@pytest.mark.parametrize("family", ["unet-sdxl", "flux-dev"])  # tiny_families ids
def test_whole_model_under_comfyui_compile_wrapper_matches_eager(gag, family):
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    if family == "unet-sdxl":
        model = tm.tiny_sdxl()
        pos, neg = tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2, tokens=154)
        run = lambda p: tm.sample(p, pos, neg, steps=2, size=16)
    else:
        model = tm.tiny_flux()
        pos = tm.flux_conditioning(seed=1)
        run = lambda p: tm.sample_dit(p, pos, pos, steps=2, cfg=1.0, size=16)
    patched = gag.api.apply_gag(model)
    eager = run(patched)
    compiled = patched.clone()
    set_torch_compile_wrapper(compiled, backend=_whole_model_backend())
    dynamo.reset()
    assert torch.allclose(run(compiled), eager, rtol=1e-4, atol=1e-4)
