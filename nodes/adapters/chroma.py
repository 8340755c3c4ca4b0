"""Chroma and Chroma Radiance: FLUX.1-schnell-derived double/single blocks without the pooled
text vector, modulated by a distilled approximator; trained for real CFG.

Hook as for FLUX (dit_common): ``comfy.ldm.chroma.model.Chroma`` in 0.3.64 passes
``transformer_options`` through "double_block" / "single_block" replaces to
``comfy.ldm.flux.math.attention`` (post-RoPE q, k in (B, H, L, D), text first). Blocks listed in
the model's ``skip_mmdit`` / ``skip_dit`` never run and are not offered.
"""

from __future__ import annotations

from .dit_common import DiTAdapter, find_class, require_text_first
from .flux import FLUX_GROUPS, FLUX_PRESETS


class ChromaAdapter(DiTAdapter):
    family = "chroma"
    display_name = "Chroma"
    presets = FLUX_PRESETS
    groups = FLUX_GROUPS

    @classmethod
    def model_classes(cls):
        found = find_class("comfy.ldm.chroma.model", "Chroma")
        return (found,) if found else ()

    @classmethod
    def block_indices(cls, diffusion_model):
        skip_double = set(getattr(diffusion_model, "skip_mmdit", ()))
        skip_single = set(getattr(diffusion_model, "skip_dit", ()))
        return {"double": [i for i in range(len(diffusion_model.double_blocks)) if i not in skip_double],
                "single": [i for i in range(len(diffusion_model.single_blocks)) if i not in skip_single]}

    @classmethod
    def check_layout(cls, model_patcher) -> None:
        require_text_first(model_patcher, cls.diffusion_model(model_patcher).double_blocks,
                           cls.display_name)
