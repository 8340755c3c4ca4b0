"""Hostile inputs: every GAG node input at and beyond its limits, NaN/inf from upstream nodes,
degenerate layer texts and schedules, zero-length sampling, large batches, odd latent sizes,
regional (masked) conditioning, attention masks on the conditioning, and multi-chunk prompts.

The rule each case checks: it either works (finite sample) or fails when the node executes with a
ValueError naming the input — never deep inside sampling, never with NaN.
"""

from __future__ import annotations

import importlib
import math
import time

import pytest
import torch

import tiny_models as tm

SIZE = 16


@pytest.fixture(scope="module")
def gag(pack):
    name = pack.__name__
    mod = lambda m: importlib.import_module(f"{name}.nodes.{m}")
    return type("Gag", (), dict(
        api=mod("api"), Patch=mod("model_patch").GAGModelPatch, Layers=mod("layers").GAGLayers,
        Sparsity=mod("sparsity").GAGSparsity, Schedule=mod("schedule_node").GAGSchedule,
        guidance=mod("guidance"), repeats=mod("adapters.prompt_repeats")))


@pytest.fixture(scope="module")
def sdxl(pack):
    return tm.tiny_sdxl(), tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2)


@pytest.fixture(scope="module")
def flux(pack):
    return tm.tiny_flux(), tm.flux_conditioning(seed=1)


def out(result):
    return result.result[0] if hasattr(result, "result") else result[0]


def sample(sdxl, patcher, **kwargs):
    _, pos, neg = sdxl
    kwargs.setdefault("steps", 2)
    kwargs.setdefault("cfg", 5.0)
    kwargs.setdefault("size", SIZE)
    pos = kwargs.pop("positive", pos)
    neg = kwargs.pop("negative", neg)
    return tm.sample(patcher, pos, neg, **kwargs)


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def limits(node, name):
    for spec in node.define_schema().inputs:
        if spec.id == name:
            return spec.min, spec.max
    raise KeyError(name)


# ------------------------------------------------------------------------------------------
# every float input at its limits: works, finite
# ------------------------------------------------------------------------------------------

def patch_with(gag, model, *, scale=10.0, eta=15.0, zeta=0.0, alpha=None, window=None,
               ramp="constant", layers=None):
    sparsity = out(gag.Sparsity.execute(alpha)) if alpha is not None else None
    schedule = out(gag.Schedule.execute(*window, ramp)) if window is not None else None
    return out(gag.Patch.execute(model, scale, eta, zeta, layers=layers, sparsity=sparsity,
                                 schedule=schedule))


LIMIT_CASES = {
    # the strongest setting the node allows: correction up to λ·η = 10⁵ per token
    "scale max, eta max, zeta max": dict(scale="max", eta="max", zeta="max"),
    "scale min, eta min, zeta min": dict(scale="min", eta="min", zeta="min"),
    "scale max, eta min": dict(scale="max", eta="min"),
    "alpha min (bisection)": dict(alpha="min"),
    "alpha max (sparsemax)": dict(alpha="max"),
    "window at the very start": dict(window=("min", "min")),
    "window at the very end": dict(window=("max", "max")),
    "window min-max, cosine ramp": dict(window=("min", "max"), ramp="cosine down"),
}


@pytest.mark.parametrize("case", list(LIMIT_CASES))
def test_every_input_at_its_limits_samples_finite(gag, sdxl, case):
    spec = dict(LIMIT_CASES[case])
    node_of = {"scale": gag.Patch, "eta": gag.Patch, "zeta": gag.Patch, "alpha": gag.Sparsity}
    kwargs = {}
    for name, where in spec.items():
        if name == "window":
            lo_s, hi_s = limits(gag.Schedule, "start_percent")
            lo_e, hi_e = limits(gag.Schedule, "end_percent")
            kwargs["window"] = (lo_s if where[0] == "min" else hi_s,
                                lo_e if where[1] == "min" else hi_e)
        elif name == "ramp":
            kwargs["ramp"] = where
        else:
            lo, hi = limits(node_of[name], name)
            kwargs[name] = lo if where == "min" else hi
    result = sample(sdxl, patch_with(gag, sdxl[0], **kwargs))
    assert torch.isfinite(result).all(), case


def test_window_of_zero_length_at_the_end_is_the_unpatched_model(gag, sdxl):
    plain = sample(sdxl, sdxl[0])
    assert torch.equal(sample(sdxl, patch_with(gag, sdxl[0], window=(1.0, 1.0))), plain)
    middle = sample(sdxl, patch_with(gag, sdxl[0], window=(0.5, 0.5)))
    assert torch.isfinite(middle).all()


# ------------------------------------------------------------------------------------------
# beyond the limits, NaN and inf: ValueError naming the input, raised by the node
# ------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("name,value", [
    ("scale", NAN), ("scale", INF), ("scale", -INF),
    ("eta", NAN), ("eta", 0.0), ("eta", -1.0), ("eta", -INF),
    ("zeta", NAN), ("zeta", INF), ("zeta", -0.01), ("zeta", 1.01),
])
def test_model_patch_rejects_bad_floats_naming_the_input(gag, sdxl, name, value):
    kwargs = dict(scale=10.0, eta=15.0, zeta=0.0)
    kwargs[name] = value
    with pytest.raises(ValueError, match=name):
        gag.Patch.execute(sdxl[0], **kwargs)


def test_eta_infinity_means_no_cap(gag, sdxl):
    """η = inf (e.g. from a math node upstream) is documented as 'no cap', not an error."""
    result = sample(sdxl, out(gag.Patch.execute(sdxl[0], 10.0, INF, 1.0)))
    assert torch.isfinite(result).all()


@pytest.mark.parametrize("value", [NAN, INF, -INF, 1.0, 0.5, 2.0001, 3.0])
def test_sparsity_rejects_bad_alpha(gag, value):
    with pytest.raises(ValueError, match="alpha"):
        gag.Sparsity.execute(value)


@pytest.mark.parametrize("start,end,named", [
    (NAN, 1.0, "start_percent"), (0.0, NAN, "end_percent"), (-0.1, 1.0, "start_percent"),
    (0.0, 1.5, "end_percent"), (INF, 1.0, "start_percent"), (0.0, -INF, "end_percent"),
    (0.8, 0.2, "start_percent"),   # start after end
])
def test_schedule_rejects_bad_windows(gag, start, end, named):
    with pytest.raises(ValueError, match=named):
        gag.Schedule.execute(start, end, "constant")


def test_schedule_rejects_unknown_ramp(gag):
    with pytest.raises(ValueError, match="ramp"):
        gag.Schedule.execute(0.0, 1.0, "exponential")


def test_layers_reject_unknown_mode(gag):
    with pytest.raises(ValueError, match="mode"):
        gag.Layers.execute("paper", "", "sideways")


def test_unknown_preset_fails_when_the_model_is_patched_naming_it(gag, sdxl):
    layers = out(gag.Layers.execute("not-a-preset", "", "auto"))
    with pytest.raises(ValueError, match="not-a-preset"):
        gag.Patch.execute(sdxl[0], 10.0, 15.0, 0.0, layers=layers)


# ------------------------------------------------------------------------------------------
# layer texts: empty, enormous, absurd
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "   ", " , ;\n,, ", "\n\n"])
def test_empty_custom_layer_text_is_rejected_by_the_layers_node(gag, text):
    with pytest.raises(ValueError, match="layer selection"):
        gag.Layers.execute("custom", text, "auto")


def test_enormous_custom_layer_texts(gag, sdxl):
    model = sdxl[0]
    too_long = "output 3, " * 1001            # 10 010 characters
    with pytest.raises(ValueError, match="characters"):
        gag.Layers.execute("custom", too_long, "auto")
    # Just under the limit: a thousand repeats of one item parse, resolve and patch quickly.
    long_ok = ("output 3, " * 999).rstrip(", ")
    started = time.perf_counter()
    layers = out(gag.Layers.execute("custom", long_ok, "auto"))
    patched = out(gag.Patch.execute(model, 10.0, 15.0, 0.0, layers=layers))
    assert time.perf_counter() - started < 5.0
    keys = set(patched.model_options["transformer_options"]["patches_replace"]["attn2"])
    assert keys == {("output", 3, 0)}
    # Huge numbers: a number past the grammar's 6 digits is refused by the Layers node; a block
    # the model lacks is an error listing the valid ones; a range wider than the model is fine.
    with pytest.raises(ValueError, match="longer than 6 digits"):
        gag.Layers.execute("custom", "input 99999999999999999999", "auto")
    with pytest.raises(ValueError, match="Valid layers"):
        gag.Patch.execute(model, 10.0, 15.0, 0.0,
                          layers=out(gag.Layers.execute("custom", "input 999999", "auto")))
    wide = out(gag.Patch.execute(model, 10.0, 15.0, 0.0,
                                 layers=out(gag.Layers.execute("custom", "input 0-999999",
                                                               "auto"))))
    assert {k[0] for k in wide.model_options["transformer_options"]["patches_replace"]["attn2"]} \
        == {"input"}


@pytest.mark.parametrize("text", ["input -1", "input 5-4", "4-5", "input four",
                                  "all 3", "input 4 :1", "ｉｎｐｕｔ 4"])
def test_malformed_layer_text_names_the_offending_item(gag, text):
    with pytest.raises(ValueError, match="layer selection"):
        gag.Layers.execute("custom", text, "auto")


# ------------------------------------------------------------------------------------------
# zero-length sampling
# ------------------------------------------------------------------------------------------

def test_zero_length_sampling_runs_are_the_identity(gag, sdxl):
    import comfy.sample
    model, pos, neg = sdxl
    patched = gag.api.apply_gag(model)
    noise = torch.randn(1, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    latent = torch.randn(1, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    for steps, denoise in ((0, 1.0), (3, 0.0)):
        results = [comfy.sample.sample(p, noise, steps, 5.0, "euler", "normal", pos, neg, latent,
                                       denoise=denoise, seed=0, disable_pbar=True)
                   for p in (model, patched)]
        assert torch.equal(results[0], results[1]), (steps, denoise)
        assert torch.isfinite(results[1]).all()
        assert torch.allclose(results[1], latent, atol=1e-5), (steps, denoise)


# ------------------------------------------------------------------------------------------
# batch sizes, odd latent sizes
# ------------------------------------------------------------------------------------------

def test_batch_of_16_matches_single_images(gag, sdxl):
    patched = gag.api.apply_gag(sdxl[0])
    noise = torch.randn(16, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    batched = sample(sdxl, patched, noise=noise, steps=1, batch=16)
    assert batched.shape[0] == 16 and torch.isfinite(batched).all()
    for i in (0, 15):
        single = sample(sdxl, patched, noise=noise[i:i + 1], steps=1)
        assert rel(batched[i:i + 1], single) < 1e-5, i


@pytest.mark.parametrize("family", ["unet-sdxl", "unet-sd15", "flux-dev"])  # tiny_families ids
def test_odd_latent_size_9x17(gag, sdxl, flux, family):
    """72×136 pixels → a 9×17 latent: UNets resample between levels of odd size, FLUX pads to
    its patch size. GAG must follow whatever token counts result."""
    noise = torch.randn(1, 16 if family == "flux-dev" else 4, 9, 17,
                        generator=torch.Generator().manual_seed(4))
    if family == "flux-dev":
        model, pos = flux
        run = lambda p: tm.sample_dit(p, pos, pos, steps=2, cfg=1.0, noise=noise)
    else:
        model = sdxl[0] if family == "unet-sdxl" else tm.tiny_sd15()
        cond = tm.sdxl_conditioning if family == "unet-sdxl" else tm.sd15_conditioning
        run = lambda p: tm.sample(p, cond(seed=1), cond(seed=2), steps=2, noise=noise)
    guided, plain = run(gag.api.apply_gag(model)), run(model)
    assert guided.shape == noise.shape and torch.isfinite(guided).all()
    assert rel(guided, plain) > 1e-6


# ------------------------------------------------------------------------------------------
# regional prompts (masked conditioning), attention masks on the conditioning
# ------------------------------------------------------------------------------------------

def test_regional_prompts_with_conditioning_masks(gag, sdxl):
    import nodes as comfy_nodes
    model, pos, neg = sdxl
    left = torch.zeros(SIZE * 8, SIZE * 8)
    left[:, : SIZE * 4] = 1.0
    other = tm.sdxl_conditioning(seed=9)
    set_mask = comfy_nodes.ConditioningSetMask()
    regional = (set_mask.append(pos, left, "default", 1.0)[0]
                + set_mask.append(other, 1.0 - left, "mask bounds", 0.8)[0])
    guided = sample(sdxl, gag.api.apply_gag(model), positive=regional)
    plain = sample(sdxl, model, positive=regional)
    assert torch.isfinite(guided).all() and rel(guided, plain) > 1e-6


def flux_with_attention_mask(flux, dropped: slice, bias: float):
    """FLUX conditioning carrying an attention mask the way StyleModelApply's attn_bias mode
    builds it: an additive (text+image)² bias, here ``bias`` on the keys of ``dropped`` text
    tokens for every query."""
    _, pos = flux
    txt, keys = pos[0]
    n_txt, n_img = txt.shape[1], (SIZE // 2) ** 2
    mask = torch.zeros(1, n_txt + n_img, n_txt + n_img, dtype=torch.float16)
    mask[:, :, dropped] = bias
    keys = dict(keys, attention_mask=mask, attention_mask_img_shape=(SIZE // 2, SIZE // 2))
    return txt, keys


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_attention_mask_on_the_conditioning(gag, flux, mode):
    model, _ = flux
    dropped = slice(12, 20)
    txt, keys = flux_with_attention_mask(flux, dropped, -INF)
    run = lambda p, t: tm.sample_dit(p, [[t, keys]], [[t, keys]], steps=2, cfg=1.0, size=SIZE)
    patched = gag.api.apply_gag(model, mode=mode)
    guided, plain = run(patched, txt), run(model, txt)
    assert torch.isfinite(guided).all() and rel(guided, plain) > 1e-6
    # Keys masked with −inf get no weight in either branch: what those text tokens hold cannot
    # reach the image.
    scrambled = txt.clone()
    scrambled[:, dropped] = torch.randn(scrambled[:, dropped].shape,
                                        generator=torch.Generator().manual_seed(5)) * 10
    assert rel(run(patched, scrambled), guided) < 1e-5
    # A finite bias (strength 0.3 → log 0.3) is an ordinary additive mask.
    txt, keys = flux_with_attention_mask(flux, dropped, math.log(0.3))
    biased = tm.sample_dit(patched, [[txt, keys]], [[txt, keys]], steps=2, cfg=1.0, size=SIZE)
    assert torch.isfinite(biased).all()


# ------------------------------------------------------------------------------------------
# very long prompts: several 77-token chunks
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pos_tokens,neg_tokens", [(231, 77), (77, 154), (231, 231)])
def test_multi_chunk_prompts_batched_or_not_give_the_same_result(gag, sdxl, monkeypatch,
                                                                 pos_tokens, neg_tokens):
    """ComfyUI batches cond and uncond of different lengths by repeating the shorter one
    (comfy/conds.py); whether it batches at all depends on free memory. Softmax attention is
    blind to the repeats, α-entmax is not: GAG must drop them so the sample is the same either
    way (nodes/adapters/prompt_repeats.py)."""
    model = sdxl[0]
    pos = tm.sdxl_conditioning(seed=1, tokens=pos_tokens)
    neg = tm.sdxl_conditioning(seed=2, tokens=neg_tokens)
    patched = gag.api.apply_gag(model, zeta=0.5, eta=1.0)
    together = sample(sdxl, patched, positive=pos, negative=neg)
    plain = sample(sdxl, model, positive=pos, negative=neg)
    # calc_cond_batch batches only while 1.5× the model's memory estimate fits in free memory
    monkeypatch.setattr(model.model, "memory_required", lambda *a, **k: float("inf"))
    separate = sample(sdxl, patched, positive=pos, negative=neg)
    monkeypatch.undo()
    assert torch.isfinite(together).all()
    assert rel(together, separate) < 1e-5, rel(together, separate)
    assert rel(together, plain) > 1e-4  # well above that agreement: GAG acted


def test_repeat_detection_cuts_only_exact_periods(gag):
    """key_periods: exact repeats are found per batch row; a prompt whose chunks merely start
    alike (every CLIP chunk begins with the same BOS state) is not a repeat."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 2, 77, 8, generator=g)
    repeated = base.repeat(1, 1, 3, 1)                      # 77 → 231 by repetition
    chunks = torch.randn(1, 2, 231, 8, generator=g)
    chunks[:, :, 77] = chunks[:, :, 154] = chunks[:, :, 0]  # same first token in every chunk
    k = torch.cat([repeated, chunks])
    v = torch.cat([repeated * 2, torch.randn(1, 2, 231, 8, generator=g)])
    assert gag.repeats.key_periods(k, v) == [77, 231]
    assert gag.repeats.key_periods(chunks, chunks) is None
    v_differs = v.clone()
    v_differs[0, :, 200] += 1.0                             # keys repeat, values don't
    assert gag.repeats.key_periods(k, v_differs) is None


def test_repeat_masking_on_gpu_and_under_compile_equals_cutting(gag):
    """On CUDA and under torch.compile the repeats are masked instead of cut (no host read):
    both must give the same guided attention, row by row, with rows of different periods."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(1, 2, 77, 16, generator=g)
    k = torch.cat([base.repeat(1, 1, 3, 1), torch.randn(1, 2, 231, 16, generator=g)])
    v = torch.cat([(base * 2).repeat(1, 1, 3, 1), torch.randn(1, 2, 231, 16, generator=g)])
    q = torch.randn(2, 2, 40, 16, generator=g) * 3
    gag_core = importlib.import_module(f"{gag.api.__name__.rsplit('.', 2)[0]}.gag_core")
    guided = lambda q, k, v, mask: gag_core.gag_attention(q, k, v, scale=10.0, eta=2.0, zeta=0.3,
                                                          alpha=1.5, mask=mask)
    cut = gag.repeats.without_repeated_keys(guided, q, k, v, None)  # CPU: cut
    keep = gag.repeats._first_period_keep_mask(k, v)
    assert keep[0].sum() == 77 and keep[1].sum() == 231
    masked = guided(q, k, v, keep)
    assert rel(cut, masked) < 1e-6, rel(cut, masked)
