"""FLUX.1 (dev, schnell, Kontext, Krea and other fine-tunes): 19 double-stream and 38
single-stream blocks at full size, all with one joint attention over [text, image] tokens.

Hook: ``dit`` block replaces "double_block" / "single_block" plus the shared attention override
(see dit_common). In 0.3.64 ``comfy.ldm.flux.model.Flux`` passes ``transformer_options`` to both
block kinds and on to ``comfy.ldm.flux.math.attention``, which applies RoPE and calls
``optimized_attention(q, k, v, heads, skip_reshape=True, ...)``: the override sees post-RoPE
q, k in (B, H, L, D), text tokens first.
"""

from __future__ import annotations

from .dit_common import DiTAdapter, find_class, require_text_first

FLUX_GROUPS = {"double": ("double_block", "double"), "single": ("single_block", "single")}

# Shared by the FLUX-layout families (FLUX.1, FLUX.2, Chroma).
FLUX_PRESETS = {
    # Every joint attention: each one holds image-query → text-key retrieval, the DiT analogue
    # of "all cross-attention layers" in PLADIS. See the README for the measurements.
    "paper": "double, single",
    "all": "all",
    "double": "double",
    "single": "single",
}


def flux_class():
    return find_class("comfy.ldm.flux.model", "Flux")


def is_flux2(diffusion_model) -> bool:
    """FLUX.2 runs on the same class in newer ComfyUI, with globally shared modulation."""
    params = getattr(diffusion_model, "params", None)
    return bool(getattr(params, "global_modulation", False))


class FluxAdapter(DiTAdapter):
    family = "flux"
    display_name = "FLUX.1"
    presets = FLUX_PRESETS
    groups = FLUX_GROUPS

    @classmethod
    def model_classes(cls):
        found = flux_class()
        return (found,) if found else ()

    @classmethod
    def detect(cls, model_patcher) -> bool:
        return super().detect(model_patcher) and not is_flux2(cls.diffusion_model(model_patcher))

    @classmethod
    def block_indices(cls, diffusion_model):
        return {"double": list(range(len(diffusion_model.double_blocks))),
                "single": list(range(len(diffusion_model.single_blocks)))}

    @classmethod
    def check_layout(cls, model_patcher) -> None:
        require_text_first(model_patcher, cls.diffusion_model(model_patcher).double_blocks,
                           cls.display_name)
