"""FLUX.2 (dev, klein): same double/single block layout as FLUX.1, with modulation shared
across blocks. ComfyUI 0.3.64 has no FLUX.2; newer releases build it from
``comfy.ldm.flux.model.Flux`` with ``params.global_modulation`` set (``image_model: "flux2"``),
pass ``transformer_options`` through the same "double_block" / "single_block" replaces and give
single blocks ``transformer_options["img_slice"] = [text tokens, sequence length]``.

UNTESTED: written against the newer ComfyUI source read through the search tools; no ComfyUI
with FLUX.2 was available to run it. Detection is by feature (the ``global_modulation`` flag),
so it activates only where the running ComfyUI has FLUX.2.
"""

from __future__ import annotations

from .flux import FLUX_GROUPS, FLUX_PRESETS, FluxAdapter, is_flux2


class Flux2Adapter(FluxAdapter):
    family = "flux2"
    display_name = "FLUX.2"
    presets = FLUX_PRESETS
    groups = FLUX_GROUPS

    @classmethod
    def detect(cls, model_patcher) -> bool:
        classes = cls.model_classes()
        diffusion = cls.diffusion_model(model_patcher)
        return bool(classes) and isinstance(diffusion, classes) and is_flux2(diffusion)
