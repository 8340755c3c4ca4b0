"""SD1.5 / SDXL-family UNets (SDXL, Hyper-SDXL, DMD2, SD1.5, SD2): cross-attention (attn2).

Hook: ``ModelPatcher.set_model_attn2_replace`` keyed (block, number, transformer_index), one key
per selected transformer, so only the chosen layers pay for GAG. The replace receives projected
q, k, v of shape (B, L, heads·dim_head) and returns the attention output before ``to_out``.

Composition with other patches on the same model:
* attn2_patch / attn2_output_patch (IPAdapter style) run before/after the replace: unaffected.
* An earlier attn2 replace on a selected layer (keyed per transformer or per block) is wrapped:
  GAG calls it and adds its own correction (GAG output − softmax output) to what it returns, so
  an additive patch such as IPAdapter keeps its contribution and gains GAG's.
* An earlier GAG patch is removed first: applying GAG twice means the later node's settings win,
  and the replace dict is put back exactly as it was before the first GAG (a replace GAG found
  under the block key is not copied to the transformer key), so replaces added later still apply.
* Replaces moved with ``.to(device)`` by ComfyUI: GAG forwards the move to the one it wraps.
"""

from __future__ import annotations

from typing import Optional

from ...gag_core.layer_spec import LayerRef
from .prompt_repeats import without_repeated_keys
from .shared import SharedObject


def _replace_dict(model_patcher) -> dict:
    options = model_patcher.model_options.setdefault("transformer_options", {})
    return options.setdefault("patches_replace", {}).setdefault("attn2", {})


def _layer_of(extra_options) -> Optional[LayerRef]:
    """The layer ComfyUI is running, from the options it hands an attn2 replace ("block" is
    (group, number), "block_index" the transformer within it); None if they are absent."""
    block = extra_options.get("block")
    if not isinstance(block, tuple) or len(block) != 2:
        return None
    return LayerRef(block[0], block[1], extra_options.get("block_index", 0))


class UNetCrossAttentionPatch(SharedObject):
    """An attn2 replace that runs GAG on one transformer block's cross-attention."""

    def __init__(self, runtime, previous=None, previous_is_per_block=False):
        self.runtime = runtime
        self.previous = previous  # the replace this one wraps, if any
        # True when `previous` was found under the block's (name, number) key rather than this
        # transformer's own key: undoing GAG must then drop the per-transformer key, or the old
        # replace would keep shadowing any block-level replace a later node installs.
        self.previous_is_per_block = previous_is_per_block

    def to(self, device):
        # ModelPatcher.model_patches_to moves every replace it finds; the one this patch wraps is
        # no longer in the dict, so move it here or an IPAdapter-style replace holding tensors
        # stays on the old device.
        mover = getattr(self.previous, "to", None)
        if mover is not None:
            moved = mover(device)
            if moved is not self.previous:
                return UNetCrossAttentionPatch(self.runtime, moved, self.previous_is_per_block)
        return self

    def _plain(self, q, k, v, extra_options):
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        from comfy.ldm.modules.attention import optimized_attention
        return optimized_attention(q, k, v, extra_options["n_heads"],
                                   attn_precision=extra_options.get("attn_precision"),
                                   transformer_options=extra_options)

    def __call__(self, q, k, v, extra_options):
        scale = self.runtime.step_scale(extra_options)
        if scale is None:
            return self._plain(q, k, v, extra_options)
        heads = extra_options["n_heads"]
        batch, lq, inner = q.shape
        # reshape, not view: a replace that wraps this one may pass non-contiguous slices
        to_heads = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
        qh, kh, vh = to_heads(q), to_heads(k), to_heads(v)
        layer = _layer_of(extra_options)
        # GAG's output, or only its correction when a replace installed before GAG supplies
        # the attention; either on the keys without ComfyUI's prompt repeats.
        guide = self.runtime.attention if self.previous is None else self.runtime.correction
        out = without_repeated_keys(lambda q, k, v, mask: guide(q, k, v, scale, mask, layer=layer),
                                    qh, kh, vh, None)
        out = out.transpose(1, 2).reshape(batch, lq, -1)
        if self.previous is None:
            return out
        return self.previous(q, k, v, extra_options) + out


def available_layers(family, model_patcher) -> list[LayerRef]:
    """Every transformer with a cross-attention, as (group, block number, transformer index)."""
    from comfy.ldm.modules.attention import SpatialTransformer
    unet = model_patcher.model.diffusion_model
    groups = [("input", list(unet.input_blocks)),
              ("middle", [unet.middle_block] if unet.middle_block is not None else []),
              ("output", list(unet.output_blocks))]
    refs = []
    for group, blocks in groups:
        for number, block in enumerate(blocks):
            for module in block.modules():
                # Only SpatialTransformer sets block_index per transformer (0, 1, …).
                if type(module) is not SpatialTransformer:
                    continue
                for index, transformer in enumerate(module.transformer_blocks):
                    if getattr(transformer, "attn2", None) is not None:
                        refs.append(LayerRef(group, number, index))
    return refs


def uninstall(model_patcher) -> int:
    """Remove GAG replaces an earlier GAG node left on this clone, restoring what they wrapped;
    returns how many were removed."""
    replaces = _replace_dict(model_patcher)
    removed = 0
    for key in list(replaces):
        patch = replaces[key]
        if isinstance(patch, UNetCrossAttentionPatch):
            removed += 1
            if patch.previous is None or patch.previous_is_per_block:
                del replaces[key]
            else:
                replaces[key] = patch.previous
    return removed


def install(model_patcher, family, layers: list[LayerRef], runtime, mode: str) -> None:
    """One attn2 replace per selected transformer (``model_patcher`` is already a clone)."""
    replaces = _replace_dict(model_patcher)
    for ref in layers:
        key = (ref.group, ref.block, ref.sub)
        per_block = key not in replaces
        previous: Optional[object] = (replaces.get((ref.group, ref.block)) if per_block
                                      else replaces[key])
        patch = UNetCrossAttentionPatch(runtime, previous, per_block and previous is not None)
        model_patcher.set_model_attn2_replace(patch, ref.group, ref.block, ref.sub)
