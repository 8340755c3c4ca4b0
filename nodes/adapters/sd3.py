"""SD3 / SD3.5 (large, large turbo, medium): MMDiT joint blocks, context tokens first.

Hook: ComfyUI keys the joint blocks as "double_block" replaces; ``MMDiT.forward_core_with_concat``
passes ``transformer_options`` into ``_block_mixing``, which hands it to the joint
``optimized_attention`` call (q, k, v as (B, L, H·D), no RoPE; q/k RMS norm for 3.5 applied
before). SD3.5-medium's MMDiT-X blocks run a second, image-only self-attention with the same
options; the override ignores it (its length is not the joint length), so GAG guides only the
joint attention. The last block's context stream is ``pre_only``: its text outputs are unused.
"""

from __future__ import annotations

from .dit_common import JOINT_BLOCK_GROUPS, JOINT_BLOCK_PRESETS, DiTAdapter, find_class


class SD3Adapter(DiTAdapter):
    family = "sd3"
    display_name = "SD3 / SD3.5 MMDiT"
    presets = JOINT_BLOCK_PRESETS
    groups = JOINT_BLOCK_GROUPS

    @classmethod
    def model_classes(cls):
        found = find_class("comfy.ldm.modules.diffusionmodules.mmdit", "MMDiT")
        return (found,) if found else ()

    @classmethod
    def block_indices(cls, diffusion_model):
        return {"joint": list(range(len(diffusion_model.joint_blocks)))}
