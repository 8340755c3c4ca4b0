"""Qwen-Image (and Qwen-Image-Edit): 60 dual-stream blocks with one joint attention each,
text tokens first.

Hook: ComfyUI keys the blocks as "double_block" replaces; ``QwenImageTransformer2DModel`` in
0.3.64 passes ``transformer_options`` to the block's ``Attention``, which applies RoPE and calls
``optimized_attention_masked(q, k, v, heads, mask, transformer_options=...)`` with q, k, v as
(B, L, H·D). Reference-image tokens (edit models) sit after the image tokens and count as image
tokens.
"""

from __future__ import annotations

from .dit_common import JOINT_BLOCK_GROUPS, JOINT_BLOCK_PRESETS, DiTAdapter, find_class


class QwenImageAdapter(DiTAdapter):
    family = "qwen_image"
    display_name = "Qwen-Image"
    presets = JOINT_BLOCK_PRESETS
    groups = JOINT_BLOCK_GROUPS

    @classmethod
    def model_classes(cls):
        found = find_class("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel")
        return (found,) if found else ()

    @classmethod
    def block_indices(cls, diffusion_model):
        return {"joint": list(range(len(diffusion_model.transformer_blocks)))}
