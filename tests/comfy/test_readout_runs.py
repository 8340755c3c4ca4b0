"""The strength readout on tiny real-architecture models, through ComfyUI's real samplers.

* Its figures (median and 95th percentile of the gain, share of capped tokens; per step, per
  layer group, overall) equal a float64 recomputation from the attention inputs each guided call
  received (tests/core/reference.py), on the same sampled query rows.
* A larger λ reads as a larger gain; the hint appears above the threshold.
* Samples are bit-identical with and without the readout (UNet; FLUX and Qwen-Image in
  text and joint modes).
* One INFO line per sampling run; nothing when no step was guided; a failing report never
  fails sampling.
* The line and the node text say which backend computed the guided calls (issue 20): the
  PyTorch path and its policy, or the fused kernel's self-check decision for the device.
* Under torch.compile the readout adds no graph break to the patch.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import tiny_families as tf
import tiny_models as tm
from test_unet_patch import sharpened_sdxl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from reference import ref_dense_sparse, ref_gain  # noqa: E402

STEPS = 3
SIZE = 16
LINE = "GAG: attention gain"


@pytest.fixture(scope="module")
def gag(pack):
    name = pack.__name__
    return SimpleNamespace(api=importlib.import_module(f"{name}.nodes.api"),
                           readout=importlib.import_module(f"{name}.nodes.gain_readout"),
                           core_readout=importlib.import_module(f"{name}.gag_core.readout"))


@pytest.fixture(scope="module")
def sdxl(pack):
    return sharpened_sdxl()


def run(model, patched, **kwargs):
    return tm.sample(patched, model.positive, model.negative, steps=STEPS, size=SIZE, **kwargs)


def runtime_of(gag, patched):
    from comfy.patcher_extension import WrappersMP
    (wrapper,) = patched.get_wrappers(WrappersMP.OUTER_SAMPLE, gag.readout.WRAPPER_KEY)
    return wrapper.runtime


def spy_on_calls(runtime):
    """Record (step, layer, q, k, v, λ) of every guided attention call; steps are closed by the
    readout's own end_step, which the sampler's step callback calls."""
    calls, step = [], [0]
    attention, end_step = runtime.attention, runtime.readout.end_step

    def spy_attention(q, k, v, scale, mask=None, **kwargs):
        assert mask is None and kwargs.get("layer") is not None
        calls.append((step[0], kwargs["layer"], q.clone(), k.clone(), v.clone(), scale))
        return attention(q, k, v, scale, mask, **kwargs)

    def spy_end_step(i):
        step[0] = i + 1
        return end_step(i)

    runtime.attention = spy_attention
    runtime.readout.end_step = spy_end_step
    return calls


def figures(values: list, flags: list) -> tuple[float, float, float]:
    gains = torch.cat(values)
    quantiles = torch.quantile(gains, torch.tensor([0.5, 0.95], dtype=torch.float64))
    return quantiles[0].item(), quantiles[1].item(), torch.cat(flags).double().mean().item()


def assert_figures_close(got, want, count):
    assert got.median == pytest.approx(want[0], rel=1e-5)
    assert got.p95 == pytest.approx(want[1], rel=1e-5)
    # float32 vs float64 can flip a token sitting exactly at η; allow one in a few thousand
    assert got.capped == pytest.approx(want[2], abs=max(2.0 / count, 1e-9))


def test_figures_match_a_float64_recomputation(gag, sdxl):
    # η low enough to bind on part of the tokens, so the cap share is tested as a fraction.
    scale, eta = 10.0, 0.2
    patched = gag.api.apply_gag(sdxl.patcher, scale=scale, eta=eta, layers="all")
    calls = spy_on_calls(runtime_of(gag, patched))
    run(sdxl, patched, cfg=5.0)
    result = gag.readout.last_readout(patched)
    assert result is not None and calls

    per_step, per_group = defaultdict(lambda: ([], [])), defaultdict(lambda: ([], []))
    everything = ([], [])
    stride_seen = set()
    for step, layer, q, k, v, lam in calls:
        assert lam == scale
        stride = gag.core_readout.query_stride(q.shape[2])
        stride_seen.add(stride)
        dense, sparse = ref_dense_sparse(q[:, :, ::stride], k, v, 1.5)
        gain, capped = ref_gain(dense, sparse, lam, eta, 0.0)
        for bucket in (per_step[step], per_group[layer.group], everything):
            bucket[0].append(gain.flatten())
            bucket[1].append(capped.flatten())
    assert stride_seen > {1}, "the tiny model should exercise both full and strided sampling"

    count = sum(t.numel() for t in everything[0])
    assert result.values == count
    assert_figures_close(result.overall, figures(*everything), count)
    assert 0 < result.overall.capped < 1
    assert [s for s, _ in result.steps] == list(range(STEPS)) == sorted(per_step)
    for step, got in result.steps:
        assert_figures_close(got, figures(*per_step[step]), count)
    assert list(result.groups) == ["input", "middle", "output"] == list(per_group)
    for group, got in result.groups.items():
        assert_figures_close(got, figures(*per_group[group]), count)
    assert result.layers == len({layer for _, layer, *_ in calls})
    assert result.total_steps == STEPS and result.scale == scale


def test_larger_scale_reads_as_larger_gain_and_a_large_gain_brings_the_hint(gag, sdxl):
    medians = []
    for scale in (1.0, 10.0, 60.0):
        patched = gag.api.apply_gag(sdxl.patcher, scale=scale, eta=float("inf"), layers="all")
        run(sdxl, patched, cfg=1.0)
        result = gag.readout.last_readout(patched)
        medians.append(result.overall.median)
        assert result.overall.capped == 0  # η = ∞ never binds
        if result.overall.median < gag.readout.HINT_GAIN:
            # figures, cap share, layers and steps, backend: four lines, no hint
            assert result.hint() is None and result.text().count("\n") == 3
        else:
            low, high = result.suggested_scales()
            assert low < high < scale
            assert result.hint() in result.text()
            assert f"try scale {low:g}–{high:g}" in result.hint()
    assert 1.0 < medians[0] < medians[1] < medians[2]
    assert medians[2] >= gag.readout.HINT_GAIN, "λ 60 should reach the hint on this model"


def test_readout_leaves_unet_samples_bit_identical(gag, sdxl):
    with_readout = gag.api.apply_gag(sdxl.patcher, layers="all")
    without = gag.api.apply_gag(sdxl.patcher, layers="all", readout=False)
    a, b = run(sdxl, with_readout, cfg=5.0), run(sdxl, without, cfg=5.0)
    assert gag.readout.last_readout(with_readout) is not None
    assert gag.readout.last_readout(without) is None
    assert torch.equal(a, b)


# Two DiT families of different block layouts (tests/comfy/tiny_families.py ids) → the layer
# groups a readout of every block reports.
DIT_GROUPS = {"flux-dev": {"double", "single"}, "qwen_image": {"joint"}}


@pytest.mark.parametrize("mode", ["text", "joint"])
@pytest.mark.parametrize("key", list(DIT_GROUPS))
def test_readout_leaves_dit_samples_bit_identical_and_reads_every_block(gag, key, mode):
    tiny = tf.Tiny(key)
    model, groups = tiny.patcher, DIT_GROUPS[key]
    positive, negative = tiny.conditioning(seed=1), tiny.conditioning(seed=2)
    with_readout = gag.api.apply_gag(model, layers="all", mode=mode)
    without = gag.api.apply_gag(model, layers="all", mode=mode, readout=False)
    a = tiny.sample(with_readout, positive=positive, negative=negative, steps=2, cfg=1.0, size=16)
    b = tiny.sample(without, positive=positive, negative=negative, steps=2, cfg=1.0, size=16)
    assert torch.equal(a, b)
    result = gag.readout.last_readout(with_readout)
    assert result is not None and len(result.steps) == 2
    assert set(result.groups) == groups
    assert result.layers == len(gag.api.available_layers(gag.api.find_family(model), model))
    assert result.overall.median > 1.0


def test_one_log_line_per_run_and_none_without_guided_steps(gag, sdxl, caplog):
    patched = gag.api.apply_gag(sdxl.patcher, scale=5.0, layers="paper")
    with caplog.at_level(logging.INFO, logger="comfyui_gag"):
        run(sdxl, patched, cfg=5.0)
        run(sdxl, patched, cfg=5.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(LINE)]
    assert len(lines) == 2 and lines[0] == lines[1]
    assert f"{STEPS} steps" in lines[0] and "layers" in lines[0]
    result = gag.readout.last_readout(patched)
    hint = result.hint()  # one record per run: the hint, when there is one, rides on the line
    assert lines[0] == result.line() + (f" — {hint}" if hint else "")



def test_the_line_and_the_node_say_which_backend_ran(gag, sdxl, caplog, monkeypatch):
    plain = gag.api.apply_gag(sdxl.patcher, scale=5.0, readout=False)
    for policy in ("cpu", "gpu"):
        monkeypatch.setenv("GAG_TORCH_POLICY", policy)
        patched = gag.api.apply_gag(sdxl.patcher, scale=5.0)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="comfyui_gag"):
            out = run(sdxl, patched, cfg=5.0)
        assert torch.equal(out, run(sdxl, plain, cfg=5.0))   # the readout changes nothing
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith(LINE)]
        said = f"backend: PyTorch path ({policy.upper()} policy)"
        result = gag.readout.last_readout(patched)
        assert result.backend == said[len("backend: "):]
        assert f"; {said}" in line and said in result.text().splitlines()
        assert result.as_dict()["backend"] == result.backend


def test_backend_text_reports_the_self_check_for_this_device(gag, pack, monkeypatch):
    selfcheck = importlib.import_module(f"{pack.__name__}.gag_core.kernels.selfcheck")
    kept = selfcheck.Decision(("cpu", torch.float16, 64, "short"), "fused",
                              "agrees (error 3.1e-04) and is 2.4× faster")
    refused = selfcheck.Decision(("cpu", torch.bfloat16, 128, "stream"), "torch",
                                 "the kernel disagrees (error 0.3)")
    elsewhere = selfcheck.Decision(("NVIDIA H100 (cuda:0)", torch.float16, 64, "short"),
                                   "fused", "agrees")
    monkeypatch.setattr(selfcheck, "decisions", lambda: [kept, refused, elsewhere])
    monkeypatch.setenv("GAG_TORCH_POLICY", "auto")
    text = gag.readout.backend_text(torch.device("cpu"))
    assert text == ("fused kernel (float16 D64 short rows: agrees (error 3.1e-04) and is 2.4× "
                    "faster); PyTorch path (CPU policy) (bfloat16 D128 stream rows: the kernel "
                    "disagrees (error 0.3))")
    monkeypatch.setattr(selfcheck, "decisions", lambda: [elsewhere])
    assert gag.readout.backend_text(torch.device("cpu")) == "PyTorch path (CPU policy)"
    # Calls the kernel could not take on a device say why there (and only there).
    monkeypatch.setattr(selfcheck, "declined", lambda: [
        ("NVIDIA H100 (cuda:0)", "head dims D=320, Dv=320 exceed the kernel's 256"),
        ("cpu", "triton cannot be imported (ImportError)")])
    assert gag.readout.backend_text(torch.device("cpu")) == (
        "PyTorch path (CPU policy) (fused kernel not used: triton cannot be imported "
        "(ImportError))")
    monkeypatch.setenv("GAG_TORCH_POLICY", "gpu")
    assert gag.readout.backend_text(torch.device("cuda:0")) == (
        "fused kernel (float16 D64 short rows: agrees); "
        "PyTorch path (GPU policy) (fused kernel not used: head dims D=320, Dv=320 exceed the "
        "kernel's 256)")


def test_a_partial_window_reports_only_the_guided_steps(gag, sdxl, caplog):
    patched = gag.api.apply_gag(sdxl.patcher, scale=5.0, start_percent=0.0, end_percent=0.1)
    calls = spy_on_calls(runtime_of(gag, patched))
    with caplog.at_level(logging.INFO, logger="comfyui_gag"):
        run(sdxl, patched, cfg=5.0)
    guided = sorted({step for step, *_ in calls})
    assert guided and len(guided) < STEPS
    result = gag.readout.last_readout(patched)
    assert [step for step, _ in result.steps] == guided and result.total_steps == STEPS
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith(LINE)]
    said = f"{len(guided)} step" + ("s" if len(guided) != 1 else "")
    assert f", {said};" in line or f", {said})" in line, line


def test_no_guided_call_no_report(gag):
    readout = gag.readout.GainReadout()
    readout.begin_run()
    readout.end_step(0)
    assert readout.end_run(scale=10.0, total_steps=1) is None and readout.last is None


def test_a_failing_report_never_fails_sampling(gag, sdxl, caplog, monkeypatch):
    patched = gag.api.apply_gag(sdxl.patcher, scale=5.0)
    plain = gag.api.apply_gag(sdxl.patcher, scale=5.0, readout=False)

    def broken(result, node_id):
        raise RuntimeError("no browser today")

    monkeypatch.setattr(gag.readout, "report", broken)
    with caplog.at_level(logging.WARNING, logger="comfyui_gag"):
        out = run(sdxl, patched, cfg=5.0)
    assert torch.equal(out, run(sdxl, plain, cfg=5.0))
    assert any("readout failed" in r.getMessage() for r in caplog.records)


def test_gag_applied_twice_keeps_one_readout(gag, sdxl, caplog):
    from comfy.patcher_extension import WrappersMP
    twice = gag.api.apply_gag(gag.api.apply_gag(sdxl.patcher, scale=3.0), scale=6.0)
    assert len(twice.get_wrappers(WrappersMP.OUTER_SAMPLE, gag.readout.WRAPPER_KEY)) == 1
    off = gag.api.apply_gag(twice, scale=6.0, readout=False)
    assert not off.get_wrappers(WrappersMP.OUTER_SAMPLE, gag.readout.WRAPPER_KEY)
    with caplog.at_level(logging.INFO, logger="comfyui_gag"):
        run(sdxl, twice, cfg=1.0)
    assert len([r for r in caplog.records if r.getMessage().startswith(LINE)]) == 1
    assert gag.readout.last_readout(twice).scale == 6.0


def test_readout_adds_no_graph_break_under_compile(gag, sdxl):
    dynamo = pytest.importorskip("torch._dynamo")
    from test_reliability_compile import attn2_inputs, break_sites
    patched = gag.api.apply_gag(sdxl.patcher)
    patch = patched.model_options["transformer_options"]["patches_replace"]["attn2"][
        ("output", 3, 0)]
    readout = runtime_of(gag, patched).readout
    q, k, v, extra = attn2_inputs(repeated=True)
    readout.begin_run()
    eager = patch(q, k, v, extra)
    readout.end_step(0)
    dynamo.reset()
    explanation = dynamo.explain(patch)(q, k, v, extra)
    assert explanation.graph_break_count == 0, break_sites(explanation)
    readout.end_step(1)
    dynamo.reset()
    compiled = torch.compile(patch, backend="aot_eager", fullgraph=True, dynamic=False)
    assert torch.allclose(compiled(q, k, v, extra), eager, rtol=1e-5, atol=1e-5)
    readout.end_step(2)
    result = readout.end_run(scale=10.0, total_steps=3)
    eager_step, traced_step, compiled_step = (f for _, f in result.steps)
    assert compiled_step.median == pytest.approx(eager_step.median, rel=1e-5)
    assert traced_step.median == pytest.approx(eager_step.median, rel=1e-5)


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_readout_in_the_dit_override_adds_no_graph_break(gag, pack, mode):
    """The joint-attention override as ComfyUI's attention calls it (post-RoPE q, k in
    (B, H, L, D), skip_reshape, the block in transformer_options: as 0.3.64's block replace
    marks it, or as ComfyUI 0.33+ tells it), with the readout collecting."""
    dynamo = pytest.importorskip("torch._dynamo")
    from comfy.ldm.modules.attention import attention_pytorch
    from test_reliability_compile import break_sites
    dit_replace = importlib.import_module(f"{pack.__name__}.nodes.adapters.dit_replace")
    model_call = importlib.import_module(f"{pack.__name__}.nodes.adapters.model_call")
    patched = gag.api.apply_gag(tm.tiny_qwen_image(), mode=mode)
    options = patched.model_options["transformer_options"]
    override = options["optimized_attention_override"]
    layer = sorted(override.layers)[0]
    g = torch.Generator().manual_seed(1)
    text, image, heads, dim = 20, 64, 4, 16
    q, k, v = (torch.randn(1, heads, text + image, dim, generator=g) * 2 for _ in range(3))

    def attend(q, k, v):
        if override.block_types:
            block = {"block_type": "double", "block_index": layer.block,
                     model_call.TEXT_TOKENS_KEY: text}
        else:
            block = {dit_replace.MARK_KEY: dit_replace.BlockMark(layer, text, text + image)}
        return override(attention_pytorch, q, k, v, heads, skip_reshape=True,
                        transformer_options=block)

    readout = runtime_of(gag, patched).readout
    readout.begin_run()
    eager = attend(q, k, v)
    readout.end_step(0)
    dynamo.reset()
    explanation = dynamo.explain(attend)(q, k, v)
    assert explanation.graph_break_count == 0, break_sites(explanation)
    readout.end_step(1)
    result = readout.end_run(scale=10.0, total_steps=2)
    (_, eager_step), (_, traced_step) = result.steps
    assert traced_step.median == pytest.approx(eager_step.median, rel=1e-5)
    assert result.groups.keys() == {"joint"} and result.layers == 1
    assert torch.isfinite(eager).all()
