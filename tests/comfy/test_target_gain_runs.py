"""Target-gain mode through ComfyUI's real samplers on tiny real-architecture models.

* The readout's median gain lands near the target on SDXL (UNet hook) and FLUX (DiT hook, text
  and joint modes), and the readout reports target and achieved.
* λ is per batch row: a batch sampled together equals its rows sampled alone (cond/uncond
  joined equals split rests on the same property).
* Where the target is out of reach (λ bound), the readout says so and by how much.
* The node's input: schema, and clear errors for values outside 0 or [1, 10].
"""

from __future__ import annotations

import importlib
import logging
from types import SimpleNamespace

import pytest
import torch

import tiny_families as tf
import tiny_models as tm
from test_unet_patch import sharpened_sdxl

STEPS = 3
SIZE = 16


@pytest.fixture(scope="module")
def gag(pack):
    name = pack.__name__
    return SimpleNamespace(api=importlib.import_module(f"{name}.nodes.api"),
                           readout=importlib.import_module(f"{name}.nodes.gain_readout"),
                           settings=importlib.import_module(f"{name}.nodes.settings"),
                           target=importlib.import_module(f"{name}.gag_core.target_gain"))


@pytest.fixture(scope="module")
def sdxl(pack):
    return sharpened_sdxl()


def sample_sdxl(sdxl, patched, **kwargs):
    return tm.sample(patched, sdxl.positive, sdxl.negative, steps=STEPS, size=SIZE, **kwargs)


@pytest.mark.parametrize("target", [1.3, 1.8])
def test_sdxl_readout_median_lands_on_the_target(gag, sdxl, target, caplog):
    patched = gag.api.apply_gag(sdxl.patcher, target_gain=target, layers="all")
    with caplog.at_level(logging.INFO, logger="comfyui_gag"):
        out = sample_sdxl(sdxl, patched, cfg=2.0)
    assert torch.isfinite(out).all()
    result = gag.readout.last_readout(patched)
    assert result is not None and result.target is not None
    assert result.target.target == target
    assert result.target.bound == 0 and result.target.unreachable == 0
    # Each call's median is exactly the target; the readout pools a strided row sample of
    # every call, whose median sits near it.
    assert abs(result.overall.median - target) < 0.05 * target
    lines = [r.getMessage() for r in caplog.records if "GAG: attention gain" in r.getMessage()]
    assert len(lines) == 1 and f"target ×{target:.2f}, achieved ×" in lines[0]
    assert "not reachable" not in lines[0]
    assert result.as_dict()["target"]["target"] == target


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_flux_readout_median_lands_on_the_target(gag, mode):
    tiny = tf.Tiny("flux-dev")
    positive, negative = tiny.conditioning(seed=1), tiny.conditioning(seed=2)
    patched = gag.api.apply_gag(tiny.patcher, target_gain=1.5, layers="all", mode=mode)
    out = tiny.sample(patched, positive=positive, negative=negative, steps=2, cfg=1.0, size=16)
    assert torch.isfinite(out).all()
    result = gag.readout.last_readout(patched)
    assert result is not None and result.target is not None
    assert set(result.groups) == {"double", "single"}
    assert result.target.bound == 0 and result.target.unreachable == 0, result.line()
    assert abs(result.overall.median - 1.5) < 0.05 * 1.5, result.line()


def test_target_mode_changes_the_samples_and_fixed_mode_is_untouched(gag, sdxl):
    plain = sample_sdxl(sdxl, sdxl.patcher)
    fixed = sample_sdxl(sdxl, gag.api.apply_gag(sdxl.patcher, scale=3.0))
    fixed_again = sample_sdxl(sdxl, gag.api.apply_gag(sdxl.patcher, scale=3.0, target_gain=0))
    targeted = sample_sdxl(sdxl, gag.api.apply_gag(sdxl.patcher, target_gain=2.0))
    assert torch.equal(fixed, fixed_again)
    assert not torch.allclose(targeted, plain) and not torch.allclose(targeted, fixed)


def test_batch_rows_get_their_own_lambda(gag, sdxl):
    """A batch of two (with CFG: cond and uncond of both in one call) equals each image sampled
    alone: λ is set per batch row."""
    patched = gag.api.apply_gag(sdxl.patcher, target_gain=1.8)
    noise = torch.randn((2, 4, SIZE, SIZE), generator=torch.Generator().manual_seed(5))
    positive = tm.sdxl_conditioning(batch=1, seed=1)
    negative = tm.sdxl_conditioning(batch=1, seed=2)
    together = tm.sample(patched, positive, negative, steps=STEPS, size=SIZE, cfg=2.0,
                         noise=noise)
    alone = torch.cat([tm.sample(patched, positive, negative, steps=STEPS, size=SIZE, cfg=2.0,
                                 noise=noise[i:i + 1]) for i in range(2)])
    assert torch.allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_an_unreachable_target_is_reported_with_how_far_it_fell_short(gag, pack, caplog):
    """The unsharpened tiny SDXL's near-flat attention gives GAG almost nothing to push on
    (λ 10 reads ×1.03): a ×5 target needs λ far above the bound of 100."""
    model = tm.tiny_sdxl()
    patched = gag.api.apply_gag(model, target_gain=5.0)
    with caplog.at_level(logging.INFO, logger="comfyui_gag"):
        tm.sample(patched, tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2),
                  steps=2, size=SIZE)
    result = gag.readout.last_readout(patched)
    assert result.target.bound > 0.5
    assert result.target.scale_median == pytest.approx(gag.target.MAX_TARGET_SCALE)
    assert result.overall.median < 5.0
    line = next(r.getMessage() for r in caplog.records
                if "GAG: attention gain" in r.getMessage())
    assert "target ×5.0, achieved ×" in line and "λ held at its bound 100" in line
    assert "out of reach" in result.hint()


def test_ramp_scales_the_per_call_lambda(gag, sdxl):
    """A schedule ramp multiplies each call's λ as it multiplies scale: with 'linear down' the
    first step runs at the full target and the last at none of it."""
    patched = gag.api.apply_gag(sdxl.patcher, target_gain=2.0, ramp="linear down")
    sample_sdxl(sdxl, patched)
    steps = gag.readout.last_readout(patched).steps
    assert steps[0][1].median == pytest.approx(2.0, rel=0.05)
    assert steps[-1][1].median < steps[0][1].median


# --- the node -------------------------------------------------------------------------------

def test_node_schema_has_target_gain_after_zeta(pack):
    from comfy_api.latest import io  # noqa: F401  (the node API the pack targets)
    node = importlib.import_module(f"{pack.__name__}.nodes.model_patch").GAGModelPatch
    schema = node.define_schema()
    names = [i.id for i in schema.inputs]
    assert names.index("target_gain") == names.index("zeta") + 1
    spec = schema.inputs[names.index("target_gain")]
    assert spec.optional and spec.default == 0.0 and spec.min == 0.0 and spec.max == 10.0


@pytest.mark.parametrize("bad", [0.5, -1.0, 11.0, float("nan")])
def test_node_rejects_targets_outside_zero_or_one_to_ten(pack, sdxl, bad):
    node = importlib.import_module(f"{pack.__name__}.nodes.model_patch").GAGModelPatch
    with pytest.raises(ValueError) as info:
        node.execute(model=sdxl.patcher, scale=10.0, eta=15.0, zeta=0.0, target_gain=bad)
    message = str(info.value)
    assert "target_gain" in message and "[1, 10]" in message and repr(bad) in message


def test_node_accepts_the_documented_values(pack, sdxl):
    node = importlib.import_module(f"{pack.__name__}.nodes.model_patch").GAGModelPatch
    for value in (0.0, 1.0, 1.8, 10.0):
        out = node.execute(model=sdxl.patcher, scale=10.0, eta=15.0, zeta=0.0, target_gain=value)
        assert out.result[0] is not sdxl.patcher


# --- the hint follows the evidence for the model's kind ----------------------------------------

def test_dit_readout_uses_the_dit_evidence_and_hints_from_its_band(gag):
    tiny = tf.Tiny("flux-dev")
    positive, negative = tiny.conditioning(seed=1), tiny.conditioning(seed=2)
    patched = gag.api.apply_gag(tiny.patcher, target_gain=2.5, layers="all", mode="text")
    tiny.sample(patched, positive=positive, negative=negative, steps=2, cfg=1.0, size=16)
    result = gag.readout.last_readout(patched)
    band = gag.readout.GAIN_BANDS["dit text"]
    assert result.band == band and result.overall.median >= band.hint_from
    low, high = band.good
    assert f"try target_gain {low:g}–{high:g}" in result.hint()
    assert "digits DiT" in result.hint()
    data = result.as_dict()
    assert data["hint_gain"] == band.hint_from and data["good_gain"] == list(band.good)


def test_dit_joint_mode_has_its_own_band(gag):
    tiny = tf.Tiny("flux-dev")
    patched = gag.api.apply_gag(tiny.patcher, target_gain=1.6, layers="all", mode="joint")
    tiny.sample(patched, positive=tiny.conditioning(seed=1), negative=tiny.conditioning(seed=2),
                steps=2, cfg=1.0, size=16)
    result = gag.readout.last_readout(patched)
    band = gag.readout.GAIN_BANDS["dit joint"]
    assert result.band == band and result.overall.median >= band.hint_from
    assert "try target_gain 1.05–1.1" in result.hint() and "text mode" in result.hint()


def test_unet_readout_keeps_the_unet_band(gag, sdxl):
    patched = gag.api.apply_gag(sdxl.patcher, target_gain=1.5)
    sample_sdxl(sdxl, patched)
    result = gag.readout.last_readout(patched)
    assert result.band == gag.readout.GAIN_BANDS["unet"] and result.hint() is None


def test_target_mode_says_it_runs_on_the_pytorch_path(gag, sdxl, caplog):
    with caplog.at_level(logging.INFO, logger="comfyui_gag"):
        gag.api.apply_gag(sdxl.patcher, target_gain=1.8)
        gag.api.apply_gag(sdxl.patcher, scale=3.0)
    lines = [r.getMessage() for r in caplog.records if "target-gain mode" in r.getMessage()]
    assert len(lines) == 1 and "PyTorch path" in lines[0] and "×1.8" in lines[0]
