"""The model families GAG supports and the hooks that install GAG on them.

``families``: the table (data). ``HOOKS``: a family's ``hook`` name → the module that installs
GAG on its models (``unet_hook``: UNet cross-attention replaces; ``dit_hook``: one chained
attention override for joint-attention DiTs). Each hook module offers ``available_layers``,
``install`` and ``uninstall``.
"""

from __future__ import annotations

from types import ModuleType

from ...gag_core.layer_spec import LayerRef
from . import dit_hook, unet_hook
from .families import (FAMILIES, Family, all_presets, family_by_id, find_family,
                       front_end_table, model_name)

__all__ = ["FAMILIES", "Family", "HOOKS", "all_presets", "available_layers", "family_by_id",
           "find_family", "front_end_table", "hook_of", "model_name"]

# hook name (Family.hook) → module with available_layers / install / uninstall
HOOKS: dict[str, ModuleType] = {"unet": unet_hook, "joint": dit_hook}


def hook_of(family: Family) -> ModuleType:
    """The hook module that installs GAG on ``family``'s models."""
    return HOOKS[family.hook]


def available_layers(family: Family, model_patcher) -> list[LayerRef]:
    """Every attention layer of this model that GAG can patch, in model order."""
    return hook_of(family).available_layers(family, model_patcher)
