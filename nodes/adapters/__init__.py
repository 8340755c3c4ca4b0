"""The architecture families GAG supports. Adding one: write an Adapter subclass in its own
module and append it to ADAPTERS (order matters only if two could claim the same model)."""

from __future__ import annotations

from .base import Adapter, model_name
from .chroma import ChromaAdapter
from .flux import FluxAdapter
from .flux2 import Flux2Adapter
from .qwen_image import QwenImageAdapter
from .sd3 import SD3Adapter
from .unet import UNetAdapter

# Most specific first: FLUX.2 runs on FLUX.1's model class (told apart by a flag), and Chroma
# may subclass FLUX's in some ComfyUI versions.
ADAPTERS: list[type[Adapter]] = [UNetAdapter, ChromaAdapter, Flux2Adapter, FluxAdapter,
                                 SD3Adapter, QwenImageAdapter]


def find_adapter(model_patcher) -> type[Adapter]:
    """The adapter for this model, or a ValueError naming the model and what is supported."""
    for adapter in ADAPTERS:
        if adapter.detect(model_patcher):
            return adapter
    supported = ", ".join(a.display_name for a in ADAPTERS)
    raise ValueError(f"GAG does not support this model ({model_name(model_patcher)}); "
                     f"supported families: {supported}")


def all_presets() -> list[str]:
    """Every preset name any family offers, "paper" first, then "custom"."""
    names = ["paper"]
    for adapter in ADAPTERS:
        names += [n for n in adapter.presets if n not in names]
    return names + ["custom"]
