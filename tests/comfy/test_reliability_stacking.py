"""GAG stacked with the patches users combine it with, through ComfyUI's real samplers.

For each of ComfyUI's own guidance nodes — PerturbedAttentionGuidance, SelfAttentionGuidance,
APG, CFGNorm on a tiny SDXL; SkipLayerGuidanceDiT on a tiny FLUX — in both orders:
* nothing raises and the sample is finite;
* both take effect: the stack differs from the other node alone and from GAG alone;
* the order does not matter: GAG works inside attention, the others around the denoiser, so
  both orders give the same sample bit for bit.

Also: GAG applied twice (the later replaces the first: equal to one application with the later
settings, also around another node), and a LoRA on the guided layers' to_q/to_k applied before
or after GAG (both orders equal, both take effect, GAG sees the LoRA-modified q).
"""

from __future__ import annotations

import importlib

import pytest
import torch

import tiny_models as tm

STEPS = 1  # one denoiser call per sample (cond and uncond batched): enough to stack, and cheap
SIZE = 16


@pytest.fixture(scope="module")
def gag(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.api")


@pytest.fixture(scope="module")
def sdxl(pack):
    return tm.tiny_sdxl(), tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2)


@pytest.fixture(scope="module")
def flux(pack):
    return tm.tiny_flux(), tm.flux_conditioning(seed=1), tm.flux_conditioning(seed=2)


def sample_sdxl(sdxl, patcher):
    _, pos, neg = sdxl
    return tm.sample(patcher, pos, neg, steps=STEPS, cfg=5.0, size=SIZE)


def sample_flux(flux, patcher, cfg=1.0):
    _, pos, neg = flux
    return tm.sample_dit(patcher, pos, neg, steps=STEPS, cfg=cfg, size=SIZE)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


_CACHE: dict = {}


def cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def node_output(result):
    return result.result[0] if hasattr(result, "result") else result[0]


def unet_node(name):
    """(node id, apply(model) → model) for ComfyUI's nodes, with settings strong enough that
    their effect on the tiny model is well above float32 noise."""
    if name == "PerturbedAttentionGuidance":
        from comfy_extras.nodes_pag import PerturbedAttentionGuidance
        return lambda m: node_output(PerturbedAttentionGuidance.execute(m, 20.0))
    if name == "SelfAttentionGuidance":
        from comfy_extras.nodes_sag import SelfAttentionGuidance
        return lambda m: node_output(SelfAttentionGuidance.execute(m, 0.5, 2.0))
    if name == "APG":
        from comfy_extras.nodes_apg import APG
        return lambda m: node_output(APG.execute(m, 0.5, 5.0, 0.5))
    if name == "CFGNorm":
        from comfy_extras.nodes_cfg import CFGNorm
        return lambda m: node_output(CFGNorm.execute(m, 0.9))
    raise KeyError(name)


def check_stack(alone_other, alone_gag, gag_then_other, other_then_gag, what):
    for name, out in (("GAG→node", gag_then_other), ("node→GAG", other_then_gag)):
        assert torch.isfinite(out).all(), f"{what}: {name} not finite"
    assert torch.equal(gag_then_other, other_then_gag), \
        f"{what}: order matters ({rel(gag_then_other, other_then_gag):.3g})"
    assert rel(gag_then_other, alone_other) > 1e-5, f"{what}: GAG had no effect on top of it"
    assert rel(gag_then_other, alone_gag) > 1e-5, f"{what}: it had no effect on top of GAG"


@pytest.mark.parametrize("name", ["PerturbedAttentionGuidance", "SelfAttentionGuidance", "APG",
                                  "CFGNorm"])
def test_unet_guidance_nodes_stack_with_gag_in_either_order(gag, sdxl, name):
    model = sdxl[0]
    other = unet_node(name)
    alone_gag = cached("sdxl gag", lambda: sample_sdxl(sdxl, gag.apply_gag(model)))
    alone_other = sample_sdxl(sdxl, other(model))
    gag_then_other = sample_sdxl(sdxl, other(gag.apply_gag(model)))
    other_then_gag = sample_sdxl(sdxl, gag.apply_gag(other(model)))
    check_stack(alone_other, alone_gag, gag_then_other, other_then_gag, name)


def slg(model, double="1", single="1"):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT
    return node_output(SkipLayerGuidanceDiT.execute(model, 3.0, 0.0, 1.0, double_layers=double,
                                                    single_layers=single, rescaling_scale=0.0))


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_skip_layer_guidance_dit_stacks_with_gag_in_either_order(gag, flux, mode):
    model = flux[0]
    alone_gag = sample_flux(flux, gag.apply_gag(model, mode=mode))
    alone_other = cached("flux slg", lambda: sample_flux(flux, slg(model)))
    gag_then_other = sample_flux(flux, slg(gag.apply_gag(model, mode=mode)))
    other_then_gag = sample_flux(flux, gag.apply_gag(slg(model), mode=mode))
    check_stack(alone_other, alone_gag, gag_then_other, other_then_gag, f"SLG ({mode})")


def test_skip_layer_guidance_skipping_every_double_block_with_gag_text_mode(gag, flux):
    """SLG's extra pass replaces the skipped blocks outright. When it skips every double block,
    nothing in that pass records where the text tokens end for the single blocks; GAG must then
    still run (or fail before sampling with a clear message), not crash inside the sampler."""
    model = flux[0]
    stacked = slg(gag.apply_gag(model), double="0, 1", single="")
    out = sample_flux(flux, stacked)
    assert torch.isfinite(out).all()


def test_gag_twice_is_one_application_with_the_later_settings(gag, sdxl, flux):
    # With another node in between: the first GAG goes, the node and the second GAG stay.
    model = sdxl[0]
    pag = unet_node("PerturbedAttentionGuidance")
    twice = sample_sdxl(sdxl, gag.apply_gag(pag(gag.apply_gag(model, scale=30.0, layers="middle")),
                                            scale=4.0, eta=2.0, zeta=0.5))
    once = sample_sdxl(sdxl, pag(gag.apply_gag(model, scale=4.0, eta=2.0, zeta=0.5)))
    assert torch.equal(once, twice)
    dit = flux[0]
    once = sample_flux(flux, gag.apply_gag(dit, scale=4.0))
    twice = sample_flux(flux, gag.apply_gag(gag.apply_gag(dit, scale=30.0, mode="joint",
                                                          layers="single"), scale=4.0))
    assert torch.equal(once, twice)


# ------------------------------------------------------------------------------------------
# LoRA
# ------------------------------------------------------------------------------------------

LORA_LAYER = "output_blocks_3_1_transformer_blocks_0_attn2"   # a layer the paper preset guides


def tiny_lora(model, rank=4, seed=7):
    """A kohya-style LoRA state dict for one guided cross-attention's to_q and to_k."""
    unet = model.model.diffusion_model
    attn2 = unet.output_blocks[3][1].transformer_blocks[0].attn2
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for proj in ("to_q", "to_k"):
        weight = getattr(attn2, proj).weight
        prefix = f"lora_unet_{LORA_LAYER}_{proj}"
        lora[f"{prefix}.lora_up.weight"] = torch.randn(weight.shape[0], rank, generator=g) * 0.5
        lora[f"{prefix}.lora_down.weight"] = torch.randn(rank, weight.shape[1], generator=g) * 0.5
        lora[f"{prefix}.alpha"] = torch.tensor(float(rank))
    return lora


def with_lora(model, lora, strength=1.0):
    import comfy.sd
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0.0)
    return patched


class QueryProbe:
    """Stands in for gag_attention in nodes/guidance.py; keeps q of every call by its shape."""

    def __init__(self, inner):
        self.inner = inner
        self.queries = []

    def __call__(self, q, k, v, **kwargs):
        self.queries.append(q.detach().clone())
        return self.inner(q, k, v, **kwargs)


def test_lora_before_or_after_gag(gag, sdxl, monkeypatch):
    model = sdxl[0]
    plain_before = sample_sdxl(sdxl, model)
    lora = tiny_lora(model)
    lora_model = with_lora(model, lora)
    assert len(lora_model.patches) == 2, "the LoRA did not map onto the model's weights"
    alone_lora = sample_sdxl(sdxl, lora_model)
    guidance = importlib.import_module(gag.__name__.rsplit(".", 1)[0] + ".guidance")
    probes = {}
    for order in ("lora→GAG", "GAG→lora"):
        probe = QueryProbe(guidance.gag_attention)
        monkeypatch.setattr(guidance, "gag_attention", probe)
        stacked = (gag.apply_gag(with_lora(model, lora)) if order == "lora→GAG"
                   else with_lora(gag.apply_gag(model), lora))
        probes[order] = (sample_sdxl(sdxl, stacked), probe.queries)
        monkeypatch.undo()
    probe = QueryProbe(guidance.gag_attention)
    monkeypatch.setattr(guidance, "gag_attention", probe)
    alone_gag = sample_sdxl(sdxl, gag.apply_gag(model))
    monkeypatch.undo()
    (first, first_q), (second, second_q) = probes.values()
    check_stack(alone_lora, alone_gag, first, second, "LoRA")
    # GAG saw the LoRA's q in exactly the LoRA'd layer's calls: same number of calls, and the
    # queries differ from the LoRA-free run where they should (the first call with a LoRA'd
    # layer upstream changes everything after it, so only "some differ, none before" is exact).
    assert len(first_q) == len(second_q) == len(probe.queries)
    changed = [not torch.equal(a, b) for a, b in zip(first_q, probe.queries)]
    assert any(changed)
    assert all(torch.equal(a, b) for a, b in zip(first_q, second_q))
    # The model the LoRA was loaded from samples as before once the LoRA'd clones are done.
    assert torch.equal(sample_sdxl(sdxl, model), plain_before)
