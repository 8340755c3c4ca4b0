"""GAG on SD1.5 / SDXL-family UNets, run through ComfyUI's real samplers on tiny random models.

What is checked, each against ComfyUI's own behaviour rather than the adapter's idea of it:
* GAG changes the sample (finite) and runs only in the selected cross-attention layers, once per
  layer per denoiser call, for every preset and for custom selections with transformer indices;
  the layers the adapter offers are exactly those in which ComfyUI runs cross-attention.
* The patch computes the GAG rule per head exactly (float64 reference, independent code).
* Schedules: an empty window is bit-identical to the unpatched model; a partial window acts on
  exactly the steps inside it; ramps scale λ as documented.
* The input MODEL is untouched; batching (images, cond/uncond) does not change per-image results.
* Other patches keep working: attn2_patch, attn2_output_patch, an earlier attn2 replace (per
  block and per transformer), and GAG applied twice (later settings win, one application).
* Models GAG cannot patch and selections that match nothing fail with errors naming the model.
"""

from __future__ import annotations

import copy
import importlib
import math
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch

import tiny_models as tm

STEPS = 4
CFG = 5.0
SIZE = 16  # latent side: 16×16 keeps every tiny model's attention levels and runs 4× faster


# --------------------------------------------------------------------------------------------
# set-up shared by the module: one import, one build per tiny model, cached unpatched samples
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gag(pack):
    name = pack.__name__
    return SimpleNamespace(
        core=importlib.import_module(f"{name}.gag_core"),
        api=importlib.import_module(f"{name}.nodes.api"),
        guidance=importlib.import_module(f"{name}.nodes.guidance"),
        unet=importlib.import_module(f"{name}.nodes.adapters.unet_hook"),
        settings=importlib.import_module(f"{name}.nodes.settings"),
        node=importlib.import_module(f"{name}.nodes.model_patch").GAGModelPatch,
        layers_node=importlib.import_module(f"{name}.nodes.layers").GAGLayers,
        sparsity_node=importlib.import_module(f"{name}.nodes.sparsity").GAGSparsity,
        schedule_node=importlib.import_module(f"{name}.nodes.schedule_node").GAGSchedule,
    )


@dataclass
class TinyModel:
    name: str
    patcher: object
    positive: list
    negative: list
    cache: dict = field(default_factory=dict)  # samples and observations computed once


def sharpen_cross_attention(patcher, factor=4.0):
    """Scale attn2's query and key projections so the text-attention maps are peaked, as in
    trained models. With the builders' small random weights every score row is nearly flat,
    softmax and entmax then nearly agree, and GAG's effect would be too small to tell apart
    from float rounding."""
    with torch.no_grad():
        for name, module in patcher.model.diffusion_model.named_modules():
            if name.endswith("attn2"):
                module.to_q.weight.mul_(factor)
                module.to_k.weight.mul_(factor)
    return patcher


def sharpened_sdxl() -> TinyModel:
    """The tiny SDXL the UNet tests guide: cross-attention sharpened, conditioning seeds 1
    (positive) and 2 (negative)."""
    return TinyModel("sdxl", sharpen_cross_attention(tm.tiny_sdxl()),
                     tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2))


@pytest.fixture(scope="module")
def models(pack):
    return {
        "sdxl": sharpened_sdxl(),
        "sdxl_deep": TinyModel("sdxl_deep", sharpen_cross_attention(tm.tiny_sdxl_deep()),
                               tm.sdxl_conditioning(seed=3), tm.sdxl_conditioning(seed=4)),
        "sd15": TinyModel("sd15", sharpen_cross_attention(tm.tiny_sd15()),
                          tm.sd15_conditioning(seed=5), tm.sd15_conditioning(seed=6)),
    }


def run(model: TinyModel, patcher=None, **kwargs):
    kwargs.setdefault("steps", STEPS)
    kwargs.setdefault("cfg", CFG)
    kwargs.setdefault("size", SIZE)
    positive = kwargs.pop("positive", model.positive)
    negative = kwargs.pop("negative", model.negative)
    return tm.sample(patcher if patcher is not None else model.patcher, positive, negative,
                     **kwargs)


def baseline(model: TinyModel):
    """The unpatched model's sample with the default arguments."""
    if "baseline" not in model.cache:
        model.cache["baseline"] = run(model)
    return model.cache["baseline"]


def guided_default(gag, model: TinyModel):
    """The sample with GAG at default settings on the unpatched model."""
    if "guided" not in model.cache:
        model.cache["guided"] = run(model, gag.api.apply_gag(model.patcher))
    return model.cache["guided"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def layer_of(extra_options) -> tuple:
    block = extra_options["block"]
    return (block[0], block[1], extra_options.get("block_index", 0))


def sigma_of(extra_options) -> float:
    return float(torch.as_tensor(extra_options["sigmas"]).max())


# --------------------------------------------------------------------------------------------
# instruments
# --------------------------------------------------------------------------------------------

@dataclass
class GagCall:
    layer: tuple
    sigma: float
    scale: float
    settings: object
    device: torch.device
    kind: str  # "attention" (GAG alone) or "correction" (added to an earlier replace)


@pytest.fixture
def gag_calls(gag, monkeypatch):
    """Every time a GAG patch runs the GAG math: which layer, at which σ, with which λ.

    The layer comes from ComfyUI's own extra_options at the patch entry; the math is counted at
    the runtime's two entry points, so a layer that only passes through (outside the schedule
    window) is not counted, and GAG stacked on GAG would be counted twice.
    """
    calls: list[GagCall] = []
    current: dict = {}
    patch_cls = gag.unet.UNetCrossAttentionPatch
    original_call = patch_cls.__call__

    def call(self, q, k, v, extra_options):
        saved = dict(current)
        current.update(layer=layer_of(extra_options), sigma=sigma_of(extra_options))
        try:
            return original_call(self, q, k, v, extra_options)
        finally:
            current.clear()
            current.update(saved)

    monkeypatch.setattr(patch_cls, "__call__", call)
    runtime_cls = gag.guidance.GuidanceRuntime
    for kind in ("attention", "correction"):
        original = getattr(runtime_cls, kind)

        def wrapped(self, q, k, v, scale, *args, _original=original, _kind=kind, **kwargs):
            calls.append(GagCall(current.get("layer"), current.get("sigma"), scale,
                                 self.settings, q.device, _kind))
            return _original(self, q, k, v, scale, *args, **kwargs)

        monkeypatch.setattr(runtime_cls, kind, wrapped)
    return calls


class Instrument:
    """Test instruments keep one record across ModelPatcher.clone, which deep-copies
    model_options (and so every patch object in it)."""

    def __deepcopy__(self, memo):
        return self


class Attn2Probe(Instrument):
    """An attn2_output_patch that records (layer, σ) for every cross-attention
    ComfyUI runs, and passes the output through unchanged."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, n, extra_options):
        self.calls.append((layer_of(extra_options), sigma_of(extra_options)))
        return n

    def layers(self) -> Counter:
        return Counter(layer for layer, _ in self.calls)


def cross_attention_layers(model: TinyModel) -> set:
    """Layers where ComfyUI itself runs cross-attention, observed in one sampling run."""
    if "cross_attention_layers" not in model.cache:
        probed = model.patcher.clone()
        probe = Attn2Probe()
        probed.set_model_attn2_output_patch(probe)
        run(model, probed, steps=1)
        model.cache["cross_attention_layers"] = set(probe.layers())
    return model.cache["cross_attention_layers"]


# --------------------------------------------------------------------------------------------
# independent float64 reference of the GAG rule (own code; entmax from the `entmax` package)
# --------------------------------------------------------------------------------------------

def reference_gag(q, k, v, heads, *, scale, eta, zeta, alpha):
    """(B, L, H·D) float64 in → GAG output (B, Lq, H·D) and plain softmax output."""
    import entmax

    def split(t):
        b, l, inner = t.shape
        return t.reshape(b, l, heads, inner // heads).permute(0, 2, 1, 3)

    qh, kh, vh = split(q), split(k), split(v)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])
    dense = torch.softmax(scores, -1) @ vh
    if alpha == 1.5:
        sparse_map = entmax.entmax15(scores, dim=-1)
    elif alpha == 2.0:
        sparse_map = entmax.sparsemax(scores, dim=-1)
    else:
        sparse_map = entmax.entmax_bisect(scores, alpha=alpha, dim=-1, n_iter=200)
    sparse = sparse_map @ vh
    delta = sparse - dense
    parallel = (delta * sparse).sum(-1, keepdim=True) / (sparse * sparse).sum(-1, keepdim=True) * sparse
    g = parallel + zeta * (delta - parallel)
    cap = torch.clamp(eta / g.norm(dim=-1, keepdim=True), max=1.0)
    out = sparse + scale * cap * g

    def merge(t):
        return t.permute(0, 2, 1, 3).reshape(t.shape[0], t.shape[2], -1)

    return merge(out), merge(dense)


def random_qkv(seed=0, batch=2, lq=24, lk=11, heads=4, dim_head=8):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, lq, heads * dim_head, generator=g, dtype=torch.float64) * 2
    k = torch.randn(batch, lk, heads * dim_head, generator=g, dtype=torch.float64) * 2
    v = torch.randn(batch, lk, heads * dim_head, generator=g, dtype=torch.float64)
    extra = {"n_heads": heads, "dim_head": dim_head, "attn_precision": None,
             "block": ("output", 0), "block_index": 0, "sigmas": torch.tensor([1.0]),
             "cond_or_uncond": [0, 1][:batch]}
    return q, k, v, extra


def installed_patch(patcher, key):
    return patcher.model_options["transformer_options"]["patches_replace"]["attn2"][key]


# --------------------------------------------------------------------------------------------
# GAG acts, and acts where it is told to
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sdxl", "sd15"])
def test_gag_changes_the_sample_and_stays_finite(gag, models, name):
    model = models[name]
    plain = baseline(model)
    guided = guided_default(gag, model)
    assert torch.isfinite(guided).all()
    # fp noise between two identical runs is 0 here (see the schedule test); GAG must move the
    # sample far beyond float32 rounding.
    assert rel_err(guided, plain) > 1e-4, rel_err(guided, plain)


@pytest.mark.parametrize("name", ["sdxl", "sdxl_deep", "sd15"])
def test_adapter_offers_exactly_the_layers_comfyui_runs_cross_attention_in(gag, models, name):
    model = models[name]
    offered = {(r.group, r.block, r.sub) for r in gag.unet.available_layers(None, model.patcher)}
    assert offered == cross_attention_layers(model)


def _select(layers, groups=None, picks=None):
    """Expected selection computed from ComfyUI's observed layers: by group, or explicit picks
    given as {(group, block): transformer indices or None for all}."""
    chosen = set()
    for layer in layers:
        group, block, index = layer
        if groups is not None and group in groups:
            chosen.add(layer)
        if picks is not None and (group, block) in picks:
            indices = picks[(group, block)]
            if indices is None or index in indices:
                chosen.add(layer)
    return chosen


SELECTIONS = [
    ("sdxl", "paper", dict(groups={"input", "output"})),
    ("sdxl", "all", dict(groups={"input", "middle", "output"})),
    ("sdxl", "input", dict(groups={"input"})),
    ("sdxl", "output", dict(groups={"output"})),
    ("sdxl", "middle", dict(groups={"middle"})),
    ("sd15", "paper", dict(groups={"input", "output"})),
    ("sdxl_deep", "paper", dict(groups={"input", "output"})),
    ("sdxl_deep", "input 5:1, output 3-4:0, middle 0:1",
     dict(picks={("input", 5): {1}, ("output", 3): {0}, ("output", 4): {0}, ("middle", 0): {1}})),
    ("sdxl_deep", "output 3", dict(picks={("output", 3): None})),
    ("sd15", "down 1; up 2-3, mid", dict(picks={("input", 1): None, ("output", 2): None,
                                               ("output", 3): None, ("middle", 0): None})),
]


@pytest.mark.parametrize("name,layers,expected", SELECTIONS,
                         ids=[f"{n}-{l}" for n, l, _ in SELECTIONS])
def test_gag_runs_once_per_step_in_exactly_the_selected_layers(gag, models, gag_calls, name,
                                                               layers, expected):
    model = models[name]
    expected_layers = _select(cross_attention_layers(model), **expected)
    assert expected_layers, "test selection must pick at least one layer"
    run(model, gag.api.apply_gag(model.patcher, layers=layers))
    counts = Counter(call.layer for call in gag_calls)
    # cond and uncond share one model call here, so one GAG call per layer per step
    assert counts == {layer: STEPS for layer in expected_layers}
    assert {call.kind for call in gag_calls} == {"attention"}


def test_node_inputs_reach_the_guidance(gag, models, gag_calls):
    """The companion nodes' outputs and the node's own inputs are what the GAG math receives."""
    model = models["sdxl_deep"]
    layers = gag.layers_node.execute(preset="custom", custom="output 3:1", mode="auto").result[0]
    sparsity = gag.sparsity_node.execute(alpha=2.0).result[0]
    schedule = gag.schedule_node.execute(start_percent=0.0, end_percent=1.0,
                                         ramp="constant").result[0]
    patched = gag.node.execute(model=model.patcher, scale=7.5, eta=3.0, zeta=0.25, layers=layers,
                               sparsity=sparsity, schedule=schedule).result[0]
    run(model, patched, steps=2)
    assert {c.layer for c in gag_calls} == {("output", 3, 1)}
    assert {(c.scale, c.settings.eta, c.settings.zeta, c.settings.alpha) for c in gag_calls} == {
        (7.5, 3.0, 0.25, 2.0)}


@pytest.mark.parametrize("scale,eta,zeta,alpha", [(10.0, 15.0, 0.0, 1.5),   # paper defaults
                                                  (4.0, 0.05, 0.6, 1.5),    # the cap binds
                                                  (2.0, 1e9, 1.0, 2.0),     # PLADIS-like
                                                  (3.0, 0.5, 0.3, 1.3)])    # bisection α
def test_patch_computes_the_gag_rule_per_head(gag, models, scale, eta, zeta, alpha):
    patched = gag.api.apply_gag(models["sdxl"].patcher, scale=scale, eta=eta, zeta=zeta,
                                alpha=alpha, layers="output 0")
    patch = installed_patch(patched, ("output", 0, 0))
    q, k, v, extra = random_qkv()
    expected, _ = reference_gag(q, k, v, extra["n_heads"], scale=scale, eta=eta, zeta=zeta,
                                alpha=alpha)
    out = patch(q, k, v, extra)
    assert out.shape == q.shape[:2] + (v.shape[-1],)
    tol = 1e-9 if alpha in (1.5, 2.0) else 1e-6  # bisection converges to ~1e-7 in the map
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------

def step_sigmas(model: TinyModel, steps=STEPS) -> list[float]:
    import comfy.samplers
    sigmas = comfy.samplers.calculate_sigmas(model.patcher.get_model_object("model_sampling"),
                                             "normal", steps)
    return [float(s) for s in sigmas[:-1]]


def percent_of(model: TinyModel, sigma: float) -> float:
    """Sampling progress of σ for a discrete-time model: 1 − t/999 with t the continuous
    timestep whose log-σ, interpolated linearly as ModelSamplingDiscrete.sigma does, is log σ —
    the exact inverse of percent_to_sigma, written independently of the runtime's bisection."""
    import numpy
    log_sigmas = model.patcher.get_model_object("model_sampling").log_sigmas.double().numpy()
    timestep = numpy.interp(math.log(sigma), log_sigmas, numpy.arange(len(log_sigmas)))
    return 1.0 - float(timestep) / (len(log_sigmas) - 1)


def test_window_between_steps_is_bit_identical_to_unpatched(gag, models, gag_calls):
    model = models["sdxl"]
    percents = [percent_of(model, s) for s in step_sigmas(model)]  # 0, 1/3, 2/3, 1
    start = percents[1] + 0.05
    end = percents[2] - 0.05
    patched = gag.api.apply_gag(model.patcher, layers="all", start_percent=start, end_percent=end)
    out = run(model, patched)
    assert gag_calls == []
    assert torch.equal(out, baseline(model))


@pytest.mark.parametrize("window,inside", [((0.3, 0.7), (1, 2)), ((0.0, 0.1), (0,)),
                                           ((0.5, 1.0), (2, 3))])
def test_partial_window_runs_gag_only_on_steps_inside(gag, models, gag_calls, window, inside):
    model = models["sdxl"]
    sigmas = step_sigmas(model)
    patched = gag.api.apply_gag(model.patcher, layers="paper", start_percent=window[0],
                                end_percent=window[1])
    out = run(model, patched)
    per_step = Counter(round(c.sigma, 4) for c in gag_calls)
    layers = len(_select(cross_attention_layers(model), groups={"input", "output"}))
    assert per_step == {round(sigmas[i], 4): layers for i in inside}
    assert {c.scale for c in gag_calls} == {10.0}
    assert not torch.equal(out, baseline(model))


RAMP_FORMULAS = {
    "constant": lambda p: 1.0,
    "linear up": lambda p: p,
    "linear down": lambda p: 1.0 - p,
    "cosine up": lambda p: 0.5 - 0.5 * math.cos(math.pi * p),
    "cosine down": lambda p: 0.5 + 0.5 * math.cos(math.pi * p),
}


@pytest.mark.parametrize("ramp,window", [("linear up", (0.0, 1.0)), ("linear down", (0.0, 1.0)),
                                         ("cosine up", (0.0, 1.0)), ("cosine down", (0.2, 0.9)),
                                         ("linear down", (0.25, 0.75))])
def test_ramp_scales_lambda_by_position_in_window(gag, models, gag_calls, ramp, window):
    model = models["sdxl"]
    scale = 8.0
    patched = gag.api.apply_gag(model.patcher, scale=scale, layers="output 2", ramp=ramp,
                                start_percent=window[0], end_percent=window[1])
    run(model, patched, steps=6)
    seen = {round(c.sigma, 5): c.scale for c in gag_calls}
    expected = {}
    for sigma in step_sigmas(model, 6):
        percent = percent_of(model, sigma)
        if window[0] - 1e-6 <= percent <= window[1] + 1e-6:
            position = (percent - window[0]) / (window[1] - window[0])
            expected[round(sigma, 5)] = scale * RAMP_FORMULAS[ramp](min(max(position, 0), 1))
    assert seen.keys() == expected.keys()
    for sigma, value in expected.items():
        assert seen[sigma] == pytest.approx(value, abs=1e-4), (sigma, seen[sigma], value)


# --------------------------------------------------------------------------------------------
# the input model is left alone; batching does not change results
# --------------------------------------------------------------------------------------------

def _snapshot(obj):
    if isinstance(obj, dict):
        return {key: _snapshot(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(value) for value in obj)
    if torch.is_tensor(obj):
        return obj.detach().clone()
    return obj


def _assert_same(before, after, path="model_options"):
    assert type(before) is type(after), f"{path}: {type(before).__name__} → {type(after).__name__}"
    if isinstance(before, dict):
        assert before.keys() == after.keys(), f"{path}: keys {set(before)} → {set(after)}"
        for key in before:
            _assert_same(before[key], after[key], f"{path}[{key!r}]")
    elif isinstance(before, (list, tuple)):
        assert len(before) == len(after), f"{path}: length changed"
        for i, (a, b) in enumerate(zip(before, after)):
            _assert_same(a, b, f"{path}[{i}]")
    elif torch.is_tensor(before):
        assert torch.equal(before, after), f"{path}: tensor changed"
    else:
        assert before is after or before == after, f"{path}: {before!r} → {after!r}"


def plain_softmax_replace(q, k, v, extra_options):
    from comfy.ldm.modules.attention import optimized_attention
    return optimized_attention(q, k, v, extra_options["n_heads"])


def test_input_model_is_not_changed(gag, models):
    model = models["sdxl_deep"]
    original = model.patcher.clone()
    # give the input some patches of its own, so there is something GAG could wrongly touch
    earlier = CountingReplace(plain_softmax_replace)
    original.set_model_attn2_replace(earlier, "output", 3)
    original.set_model_attn2_replace(earlier, "input", 5, 1)
    original.set_model_attn2_output_patch(Attn2Probe())
    options_before = _snapshot(original.model_options)
    weights_before = {k: v.clone() for k, v in original.model.state_dict().items()}
    sample_before = run(model, original)

    layers = gag.layers_node.execute(preset="all", custom="", mode="auto").result[0]
    first = gag.node.execute(model=original, scale=10.0, eta=15.0, zeta=0.0, layers=layers).result[0]
    second = gag.node.execute(model=first, scale=4.0, eta=15.0, zeta=0.5).result[0]
    guided = run(model, second)

    _assert_same(options_before, original.model_options)
    attn2 = original.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert attn2[("output", 3)] is earlier and attn2[("input", 5, 1)] is earlier
    sample_after = run(model, original)
    assert torch.equal(sample_before, sample_after)
    assert not torch.equal(guided, sample_after)
    for key, value in original.model.state_dict().items():
        assert torch.equal(value, weights_before[key]), key


def test_batch_of_images_matches_single_runs(gag, models):
    model = models["sdxl"]
    patcher = gag.api.apply_gag(model.patcher, zeta=0.3, eta=2.0)
    noise = torch.randn(3, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(11))
    batched = run(model, patcher, noise=noise, steps=3)
    for i in range(3):
        single = run(model, patcher, noise=noise[i:i + 1], steps=3)
        assert rel_err(batched[i:i + 1], single) < 1e-5, (i, rel_err(batched[i:i + 1], single))


class CallCounter(Instrument):
    """model_function_wrapper that counts model calls and the chunks (cond/uncond) in each."""

    def __init__(self):
        self.chunks: list[int] = []

    def __call__(self, apply_model, args):
        self.chunks.append(len(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])


@pytest.mark.parametrize("cond_tokens,uncond_tokens", [(77, 77), (154, 77), (77, 231)],
                         ids=["same-length", "long-prompt", "long-negative"])
def test_cond_and_uncond_in_one_call_or_separate_give_the_same_result(
        gag, models, monkeypatch, cond_tokens, uncond_tokens):
    """Prompts of different lengths are batched by repeating the shorter context (ComfyUI's
    CONDCrossAttn.concat), which leaves softmax unchanged but not α-entmax; the result must not
    depend on whether free memory let ComfyUI batch them."""
    model = models["sdxl"]
    positive = tm.sdxl_conditioning(seed=7, tokens=cond_tokens)
    negative = tm.sdxl_conditioning(seed=8, tokens=uncond_tokens)
    counted = model.patcher.clone()
    counter = CallCounter()
    counted.set_model_unet_function_wrapper(counter)
    patched = gag.api.apply_gag(counted, zeta=0.5, eta=1.0)

    together = run(model, patched, positive=positive, negative=negative)
    assert counter.chunks == [2] * STEPS
    counter.chunks.clear()
    # calc_cond_batch batches conds only while 1.5× the model's own memory estimate fits in
    # free memory: an unbounded estimate makes each cond its own model call. (Patched on the
    # model object, which owns the estimate; the free-memory query moved between releases.)
    monkeypatch.setattr(model.patcher.model, "memory_required", lambda *a, **k: float("inf"))
    separate = run(model, patched, positive=positive, negative=negative)
    assert counter.chunks == [1] * (2 * STEPS)
    assert rel_err(separate, together) < 1e-5, rel_err(separate, together)
    plain = run(model, counted, positive=positive, negative=negative)
    assert rel_err(separate, plain) > 1e-4


# --------------------------------------------------------------------------------------------
# living with other patches
# --------------------------------------------------------------------------------------------

class CountingReplace(Instrument):
    """An attn2 replace that counts its calls per layer and delegates to ``fn``."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: Counter = Counter()

    def __call__(self, q, k, v, extra_options):
        self.calls[layer_of(extra_options)] += 1
        return self.fn(q, k, v, extra_options)


class ContextScale(Instrument):
    """IPAdapter-style attn2_patch: rescales the text context (keys and values) it is given."""

    def __init__(self, factor):
        self.factor = factor
        self.calls: Counter = Counter()

    def __call__(self, n, context, value, extra_options):
        self.calls[layer_of(extra_options)] += 1
        return n, context * self.factor, value * self.factor


def _scaled(conditioning, factor):
    return [[c[0] * factor, dict(c[1])] for c in conditioning]


def test_attn2_patch_on_context_feeds_gag(gag, models):
    """Doubling the context inside attn2_patch must equal doubling the text conditioning (the
    context reaches a UNet only through cross-attention): GAG sees the patched keys/values."""
    model = models["sdxl"]
    patched = model.patcher.clone()
    doubler = ContextScale(2.0)
    patched.set_model_attn2_patch(doubler)
    via_patch = run(model, gag.api.apply_gag(patched))
    via_conditioning = run(model, gag.api.apply_gag(model.patcher),
                           positive=_scaled(model.positive, 2.0),
                           negative=_scaled(model.negative, 2.0))
    torch.testing.assert_close(via_patch, via_conditioning, rtol=1e-6, atol=1e-5)
    assert doubler.calls == {layer: STEPS for layer in cross_attention_layers(model)}
    assert rel_err(via_patch, guided_default(gag, model)) > 1e-4


def test_attn2_patch_on_query_feeds_gag(gag, models):
    """An attn2_patch that zeroes the query input makes every score row constant, where the
    sparse and dense maps coincide and GAG reduces to plain attention: so GAG-patched equals
    unpatched — possible only if GAG consumed the patched query."""
    model = models["sdxl"]
    patched = model.patcher.clone()
    patched.set_model_attn2_patch(lambda n, context, value, extra: (torch.zeros_like(n), context,
                                                                    value))
    plain = run(model, patched)
    guided = run(model, gag.api.apply_gag(patched, layers="all"))
    assert rel_err(guided, plain) < 1e-5, rel_err(guided, plain)
    # without the zeroed query, GAG on all layers moves the sample by far more than that
    assert rel_err(run(model, gag.api.apply_gag(model.patcher, layers="all")),
                   baseline(model)) > 1e-3


def test_attn2_output_patch_runs_after_gag(gag, models):
    model = models["sdxl"]
    # an output patch that discards the attention output: GAG can then change nothing
    zeroing = model.patcher.clone()
    zeroing.set_model_attn2_output_patch(lambda n, extra: torch.zeros_like(n))
    assert torch.equal(run(model, gag.api.apply_gag(zeroing, layers="all")), run(model, zeroing))
    # a pass-through probe still sees every cross-attention, GAG's included
    probed = model.patcher.clone()
    probe = Attn2Probe()
    probed.set_model_attn2_output_patch(probe)
    out = run(model, gag.api.apply_gag(probed))
    assert probe.layers() == {layer: STEPS for layer in cross_attention_layers(model)}
    assert torch.equal(out, guided_default(gag, model))


@pytest.mark.parametrize("key", [("output", 3), ("output", 3, 1), ("input", 5)],
                         ids=["per-block", "per-transformer", "per-block-input"])
def test_earlier_softmax_replace_still_runs_and_gag_result_is_unchanged(gag, models, key):
    model = models["sdxl_deep"]
    with_replace = model.patcher.clone()
    earlier = CountingReplace(plain_softmax_replace)
    with_replace.set_model_attn2_replace(earlier, *key)
    # sanity: the replace alone reproduces the unpatched model
    assert rel_err(run(model, with_replace), baseline(model)) < 1e-5
    earlier.calls.clear()

    stacked = run(model, gag.api.apply_gag(with_replace))
    alone = guided_default(gag, model)
    assert rel_err(stacked, alone) < 1e-5, rel_err(stacked, alone)
    covered = {layer for layer in cross_attention_layers(model)
               if layer[:len(key)] == key}
    assert earlier.calls == {layer: STEPS for layer in covered}


def _term(v):
    """The extra term an additive replace (IPAdapter-like) contributes: depends on the input."""
    return 0.5 * torch.tanh(v.mean(dim=1, keepdim=True))


def additive_replace(q, k, v, extra_options):
    return plain_softmax_replace(q, k, v, extra_options) + _term(v)


def test_earlier_additive_replace_keeps_its_term_layer_level(gag, models):
    """At one layer: output = earlier replace's output + (GAG − softmax), float64 exact."""
    patcher = models["sdxl"].patcher.clone()
    patcher.set_model_attn2_replace(additive_replace, "output", 0, 0)
    patched = gag.api.apply_gag(patcher, scale=6.0, eta=0.5, zeta=0.2, layers="output 0")
    q, k, v, extra = random_qkv(seed=3)
    guided, _ = reference_gag(q, k, v, extra["n_heads"], scale=6.0, eta=0.5, zeta=0.2, alpha=1.5)
    out = installed_patch(patched, ("output", 0, 0))(q, k, v, extra)
    torch.testing.assert_close(out, guided + _term(v), rtol=1e-9, atol=1e-9)


def test_earlier_additive_replace_keeps_its_term_end_to_end(gag, models):
    """Sampling: GAG over an additive replace on block output 3 (both transformers), GAG only on
    output 3:0 and output 4 — equals a hand-built model whose replaces compute that directly."""
    model = models["sdxl_deep"]
    with_replace = model.patcher.clone()
    earlier = CountingReplace(additive_replace)
    with_replace.set_model_attn2_replace(earlier, "output", 3)
    stacked = run(model, gag.api.apply_gag(with_replace, layers="output 3:0, output 4"))
    assert earlier.calls == {("output", 3, 0): STEPS, ("output", 3, 1): STEPS}

    def gag_plus_term(q, k, v, extra_options):
        return gag_reference_replace(q, k, v, extra_options) + _term(v)

    def gag_reference_replace(q, k, v, extra_options):
        heads = extra_options["n_heads"]
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
        out = gag.core.gag_attention(split(q), split(k), split(v), scale=10.0, eta=15.0, zeta=0.0)
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)

    by_hand = model.patcher.clone()
    by_hand.set_model_attn2_replace(gag_plus_term, "output", 3, 0)
    by_hand.set_model_attn2_replace(additive_replace, "output", 3, 1)
    by_hand.set_model_attn2_replace(gag_reference_replace, "output", 4, 0)
    by_hand.set_model_attn2_replace(gag_reference_replace, "output", 4, 1)
    expected = run(model, by_hand)
    assert rel_err(stacked, expected) < 1e-5, rel_err(stacked, expected)
    without_term = run(model, gag.api.apply_gag(model.patcher, layers="output 3:0, output 4"))
    assert rel_err(stacked, without_term) > 1e-4


def test_gag_applied_twice_later_settings_win_once(gag, models, gag_calls):
    model = models["sdxl_deep"]
    base = model.patcher.clone()
    earlier = CountingReplace(additive_replace)
    base.set_model_attn2_replace(earlier, "input", 5)
    first = gag.api.apply_gag(base, scale=3.0, eta=5.0, zeta=0.5, alpha=2.0,
                              layers="middle, input 5:0")
    twice = gag.api.apply_gag(first, layers="paper")
    once = gag.api.apply_gag(base, layers="paper")

    out_twice = run(model, twice)
    calls_twice = list(gag_calls)
    gag_calls.clear()
    out_once = run(model, once)
    assert torch.equal(out_twice, out_once)
    paper = _select(cross_attention_layers(model), groups={"input", "output"})
    assert Counter(c.layer for c in calls_twice) == {layer: STEPS for layer in paper}
    assert {(c.scale, c.settings.eta, c.settings.zeta, c.settings.alpha)
            for c in calls_twice} == {(10.0, 15.0, 0.0, 1.5)}
    # the earlier non-GAG replace survived both GAG nodes and still runs on its two layers
    assert earlier.calls == {("input", 5, 0): 2 * STEPS, ("input", 5, 1): 2 * STEPS}
    # and undoing GAG leaves it in place: the first patch's model still has GAG on middle
    gag_calls.clear()
    run(model, first, steps=1)
    assert {c.layer for c in gag_calls} == {("middle", 0, 0), ("middle", 0, 1), ("input", 5, 0)}


def test_undoing_gag_restores_the_earlier_replace_dict_exactly(gag, models):
    """GAG over a block-level replace, then GAG again elsewhere: the first GAG's per-transformer
    key must go, so a block-level replace installed afterwards still takes effect (ComfyUI looks
    up the per-transformer key first; a leftover one would shadow it)."""
    model = models["sdxl_deep"]
    base = model.patcher.clone()
    earlier = CountingReplace(plain_softmax_replace)
    base.set_model_attn2_replace(earlier, "input", 5)
    first = gag.api.apply_gag(base, layers="input 5:0")
    second = gag.api.apply_gag(first, layers="output")
    assert (second.model_options["transformer_options"]["patches_replace"]["attn2"].keys()
            == gag.api.apply_gag(base, layers="output").model_options["transformer_options"][
                "patches_replace"]["attn2"].keys())
    later = CountingReplace(plain_softmax_replace)
    second.set_model_attn2_replace(later, "input", 5)
    run(model, second, steps=1)
    assert later.calls == {("input", 5, 0): 1, ("input", 5, 1): 1}
    assert earlier.calls == {}


class MovableReplace:
    """An earlier replace holding a tensor, with a .to() like IPAdapter's patch objects."""

    def __init__(self):
        self.devices: list = []

    def to(self, device):
        self.devices.append(torch.device(device))
        return self

    def __call__(self, q, k, v, extra_options):
        return plain_softmax_replace(q, k, v, extra_options)


def test_wrapped_replace_is_still_moved_between_devices(gag, models):
    """ComfyUI moves replace patches with .to(device) before sampling; once GAG wraps an
    earlier replace, that replace must still be moved."""
    model = models["sdxl"]
    with_replace = model.patcher.clone()
    earlier = MovableReplace()
    with_replace.set_model_attn2_replace(earlier, "output", 1, 0)
    patched = gag.api.apply_gag(with_replace)
    earlier_copy = installed_patch(patched, ("output", 1, 0)).previous  # clone deep-copied it
    patched.model_patches_to(torch.device("cpu"))
    assert earlier_copy.devices == [torch.device("cpu")]


# --------------------------------------------------------------------------------------------
# what GAG cannot patch
# --------------------------------------------------------------------------------------------

def test_model_without_an_adapter_is_rejected_naming_it(gag):
    import comfy.model_patcher
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(torch.nn.Linear(4, 4), load_device=cpu,
                                               offload_device=cpu)
    with pytest.raises(ValueError, match=r"does not support this model \(Linear\)") as info:
        gag.node.execute(model=patcher, scale=10.0, eta=15.0, zeta=0.0)
    assert "SD1.5 / SDXL UNet" in str(info.value)


def test_unet_without_cross_attention_is_rejected_naming_it(gag):
    import comfy.supported_models as sm
    import comfy.model_patcher
    cfg = dict(sm.SDXL.unet_config)
    cfg.update(model_channels=32, transformer_depth=[0, 0], transformer_depth_output=[0, 0, 0, 0],
               transformer_depth_middle=-1, context_dim=64, num_res_blocks=[1, 1],
               channel_mult=[1, 2], in_channels=4, out_channels=4, use_spatial_transformer=True,
               image_size=32, num_classes="sequential", adm_in_channels=2816,
               use_linear_in_transformer=True, legacy=False)
    config = sm.SDXL(cfg)
    config.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(config.get_model({}, device="cpu"),
                                               load_device=cpu, offload_device=cpu)
    with pytest.raises(ValueError, match=r"SDXL.*no attention layers"):
        gag.node.execute(model=patcher, scale=10.0, eta=15.0, zeta=0.0)


@pytest.mark.parametrize("text,pattern", [
    ("input 9", r"'input 9' matches no attention layer of SDXL.*Valid layers: .*input 5"),
    ("output 3:2", r"'output 3:2' matches no attention layer.*transformer indices 0-1"),
    ("double 0-3", r"no block group 'double'"),
])
def test_selection_matching_nothing_is_an_error_listing_valid_layers(gag, models, text, pattern):
    layers = gag.layers_node.execute(preset="custom", custom=text, mode="auto").result[0]
    with pytest.raises(ValueError, match=pattern):
        gag.node.execute(model=models["sdxl_deep"].patcher, scale=10.0, eta=15.0, zeta=0.0,
                         layers=layers)


def test_api_rejects_the_bare_word_custom(gag, models):
    with pytest.raises(ValueError, match=r"layers='custom'.*selection text itself"):
        gag.api.apply_gag(models["sdxl"].patcher, layers="custom")


def test_preset_or_mode_of_another_family_is_an_error(gag, models):
    patcher = models["sdxl"].patcher
    layer_choice = gag.settings.LayerChoice
    with pytest.raises(ValueError, match=r"preset 'double'.*SD1.5 / SDXL UNet.*paper"):
        gag.node.execute(model=patcher, scale=10.0, eta=15.0, zeta=0.0,
                         layers=layer_choice(preset="double"))
    with pytest.raises(ValueError, match=r"mode 'joint' does not apply to SD1.5 / SDXL UNet"):
        gag.node.execute(model=patcher, scale=10.0, eta=15.0, zeta=0.0,
                         layers=layer_choice(mode="joint"))


# --------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_patch_runs_on_the_models_device(gag, models, gag_calls, device):
    """The UNet forward with GAG installed runs on the device of the model's weights, and GAG's
    output there matches the CPU float64 reference."""
    model = models["sdxl"]
    patched = gag.api.apply_gag(model.patcher, layers="all")
    unet = copy.deepcopy(model.patcher.model.diffusion_model).to(device)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, SIZE, SIZE, generator=g).to(device)
    context = model.positive[0][0].repeat(2, 1, 1).to(device)
    y = torch.randn(2, 2816, generator=g).to(device)
    options = dict(patched.model_options["transformer_options"])
    options["sigmas"] = torch.tensor([3.0, 3.0], device=device)
    with torch.no_grad():
        out = unet(x, torch.tensor([500.0, 500.0], device=device), context=context, y=y,
                   transformer_options=options)
    assert out.device.type == device and torch.isfinite(out).all()
    assert len(gag_calls) == len(cross_attention_layers(model))
    assert {c.device.type for c in gag_calls} == {device}

    q, k, v, extra = random_qkv(seed=9)
    patch = installed_patch(patched, ("middle", 0, 0))
    expected, _ = reference_gag(q, k, v, extra["n_heads"], scale=10.0, eta=15.0, zeta=0.0,
                                alpha=1.5)
    extra["sigmas"] = extra["sigmas"].to(device)
    got = patch(q.float().to(device), k.float().to(device), v.float().to(device), extra)
    assert got.device.type == device
    torch.testing.assert_close(got.double().cpu(), expected, rtol=1e-4, atol=1e-4)
