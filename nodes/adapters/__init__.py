"""The model families GAG supports (``families``: the table) and the two hooks that install
GAG on them (``unet``: UNet cross-attention; ``joint``: joint-attention DiTs)."""

from .families import (FAMILIES, Family, all_presets, available_layers, family_by_id,
                       find_family, front_end_table, model_name)

__all__ = ["FAMILIES", "Family", "all_presets", "available_layers", "family_by_id",
           "find_family", "front_end_table", "model_name"]
