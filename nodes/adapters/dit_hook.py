"""The hook for every DiT family (FLUX.1, FLUX.2, Chroma, SD3, Qwen-Image, Z-Image, HiDream, …):
one chained ``optimized_attention_override`` that tells which block an attention call belongs
to, whether GAG guides it, and guides it; plus ``install``/``uninstall``.

ComfyUI's ``wrap_attn`` calls the override for every attention of the model. It guides a call
only when the call belongs to a selected block; every other call goes unchanged to the override
installed before it, or to ComfyUI's own attention function. Which block a call belongs to:

- ComfyUI 0.33+ tells attention itself (``block_type``, ``block_index`` and, for single-stream
  blocks, ``img_slice`` = [first image token, sequence length] in the options it hands to
  attention): ``BlockInfo`` reads them; nothing is installed per block.
- ComfyUI 0.3.64 does not: ``dit_replace`` marks each chosen block's options (``marked_block``).
- Where ComfyUI does neither (HiDream) and every attention call of the model is one block's
  joint attention, GAG guides every call: all blocks together or none (``AllBlocks``).

``install_plan.plan_install`` decides which of these a model gets. The text length comes from
``img_slice``, the block mark, or the model-call wrapper (``model_call``). Where the text sits
(``Family.text``): at the start or the end of a joint sequence (text mode guides the other rows'
retrieval of that span), or in a separate cross-attention (Kandinsky 5), where GAG guides the
call whose keys are the text, as in a UNet, and leaves the block's self-attention alone.

Stacking with anything else that owns the override key: at install GAG wraps the override it
finds (``previous``); at every model call ``model_call`` re-chains GAG on top of whatever
override that call holds (``rechained``), so a node applied after GAG becomes GAG's dense path
rather than replacing it. A call is guided at most once along a chain: the first GAG override
that sees it marks the options it passes down (``CLAIMED_KEY``), and GAG overrides below pass
marked calls through.

Outside the schedule window every call is left alone, so the attention is exactly the
unpatched computation. Applying GAG again removes all of this first (``uninstall``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

from ...gag_core.layer_spec import LayerRef
from . import comfy_compat
from .attention_call import AttentionCall
from .dit_replace import (install_block_replaces, has_block_replaces, marked_block,
                          remove_block_replaces)
from .families import family_class, model_name
from .install_plan import plan_install
from .model_call import CALL_KEY, TEXT_TOKENS_KEY, WRAPPER_KEY, ModelCallRecord, ModelCallWrapper
from .prompt_repeats import without_repeated_keys
from .shared import SharedObject

__all__ = ["OVERRIDE_KEY", "CLAIMED_KEY", "BlockTarget", "BlockInfo", "AllBlocks", "JointAttentionOverride",
           "available_layers", "install", "uninstall"]

OVERRIDE_KEY = comfy_compat.OVERRIDE_KEY
# In the options GAG hands the override below it: a GAG override above already has this call.
CLAIMED_KEY = "gag_call_claimed"
# Re-chained copies kept per installed override (one per distinct override found below it).
_MAX_VIEWS = 8


@dataclass(frozen=True)
class BlockTarget:
    """The block an attention call belongs to, as the override reads it: the layer (None:
    every block, ``AllBlocks``), the text tokens and the joint sequence length where known.
    A ``dit_replace.BlockMark`` is the other kind of target (it can be spent)."""
    layer: Optional[LayerRef]
    text_tokens: Optional[int]
    joint_tokens: Optional[int]
    spent: bool = False

    def claim(self) -> None:
        """Nothing to note: block info holds for every attention call of the block."""


class BlockInfo:
    """Reads ComfyUI's own block info (0.33+) from an attention call's options."""

    def __init__(self, block_types: dict[str, str]):
        self.block_types = dict(block_types)  # ComfyUI block_type → group, where it is trusted

    def __call__(self, options: dict) -> Optional[BlockTarget]:
        group = self.block_types.get(options.get("block_type"))
        index = options.get("block_index")
        if group is None or not isinstance(index, int):
            return None
        img_slice = options.get("img_slice")
        if img_slice is not None:
            return BlockTarget(LayerRef(group, index), int(img_slice[0]), int(img_slice[1]))
        text_tokens = options.get(TEXT_TOKENS_KEY)
        return BlockTarget(LayerRef(group, index),
                           None if text_tokens is None else int(text_tokens), None)


class AllBlocks:
    """Every attention call is some block's joint attention (``InstallPlan.all_blocks``)."""

    def __call__(self, options: dict) -> BlockTarget:
        text_tokens = options.get(TEXT_TOKENS_KEY)
        return BlockTarget(None, None if text_tokens is None else int(text_tokens), None)


class JointAttentionOverride(SharedObject):
    """The ``optimized_attention_override`` that runs GAG on the selected blocks' attention.

    locators: functions of an attention call's options → its block target or None, asked in
    order (the first answer counts). It never defines ``container_function``: newer ComfyUI
    would call that without the wrapped function, bypassing both GAG and the previous override.
    """

    def __init__(self, layers, runtime, mode: str, locators: tuple[Callable, ...],
                 previous=None, *, text: str = "first"):
        self.layers = frozenset(layers)
        self.runtime = runtime
        self.mode = mode
        self.locators = tuple(locators)
        self.previous = previous              # the override installed before this one, if any
        self.text = text                      # "first", "last" (joint sequence) or "cross"
        # Memory estimates that read this attribute treat an unmarked override as the slow,
        # quadratic case. GAG's PyTorch path works in bounded query chunks, so GAG is as
        # memory-efficient as what it wraps.
        self.memory_efficient = _memory_efficient(previous)
        self.root = self                      # the installed override a re-chained copy is of
        self._views: dict[int, tuple] = {}

    def rechained(self, current) -> "JointAttentionOverride":
        """This override on top of ``current`` (the override a model call's options hold):
        ``current`` itself when it is this override or a re-chained copy of it, else a copy
        whose ``previous`` is ``current`` (kept, so each model call does not build one)."""
        root = self.root
        if getattr(current, "root", None) is root:
            return current
        views = root._views
        hit = views.get(id(current))
        if hit is not None and hit[0] is current:
            return hit[1]
        view = copy.copy(root)
        view.previous = current
        view.memory_efficient = _memory_efficient(current)
        if len(views) >= _MAX_VIEWS:
            views.clear()
        views[id(current)] = (current, view)
        return view

    @property
    def block_types(self) -> dict[str, str]:
        """ComfyUI block_type → group, for the types whose block info this override reads."""
        found: dict[str, str] = {}
        for locate in self.locators:
            found.update(getattr(locate, "block_types", {}))
        return found

    def _next(self, func, args, kwargs):
        if self.previous is None:
            return func(*args, **kwargs)
        options = kwargs.get("transformer_options")
        if isinstance(options, dict) and CLAIMED_KEY not in options:
            kwargs = dict(kwargs, transformer_options=dict(options, **{CLAIMED_KEY: True}))
        return self.previous(func, *args, **kwargs)

    def _locate(self, options: dict):
        for locate in self.locators:
            target = locate(options)
            if target is not None:
                return target
        return None

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options")
        if not isinstance(options, dict) or CLAIMED_KEY in options:
            return self._next(func, args, kwargs)
        target = self._locate(options)
        record = options.get(CALL_KEY)
        if isinstance(record, ModelCallRecord):
            record.attention_calls += 1
            if target is not None:
                record.calls_with_block += 1
        if target is None or target.spent or (target.layer is not None
                                              and target.layer not in self.layers):
            return self._next(func, args, kwargs)
        call = AttentionCall(args, kwargs)
        if not self._is_guided_attention(call, target):
            if isinstance(record, ModelCallRecord):   # for the audit, should none be guided
                record.declined.append((target.layer, call.query_tokens, call.key_tokens))
            return self._next(func, args, kwargs)  # another attention of the block
        target.claim()
        scale = self.runtime.step_scale(options)
        if scale is None:
            return self._next(func, args, kwargs)
        layer, text_tokens = target.layer, target.text_tokens
        if isinstance(record, ModelCallRecord):
            record.guided_layers.append(layer)
        if self.mode == "text" and text_tokens is None and self.text != "cross":
            raise RuntimeError(
                f"GAG text mode on {_where(layer)}: the number of text tokens in the joint "
                f"sequence is unknown (ComfyUI gave no 'img_slice' and the model call's text "
                f"context was not seen). Use mode 'joint' for this model.")
        return self.guide(layer, call, text_tokens, scale, func, args, kwargs)

    def _is_guided_attention(self, call: AttentionCall, target) -> bool:
        """Whether this call is the attention GAG guides in its block: the joint attention
        (queries: the whole sequence where its length is known; keys: the same tokens, then
        possibly extra ones, as FluxKVCache appends the cached reference tokens from the second
        step on), or, where the text is a separate cross-attention, the call whose keys are not
        the queries' tokens. A block may run other attentions with the same options (an
        image-only self-attention in SD3.5's MMDiT-X blocks and in Kandinsky 5's blocks)."""
        queries, keys = call.query_tokens, call.key_tokens
        text_tokens, joint_tokens = target.text_tokens, target.joint_tokens
        if self.text != "cross":
            return keys >= queries and (joint_tokens is None or queries == joint_tokens)
        if joint_tokens is not None and queries != joint_tokens:
            return False  # part of the queries (LTX's guide-masked self-attention) or audio
        if keys != queries:
            return text_tokens is None or keys == text_tokens
        if text_tokens == queries:
            raise RuntimeError(
                f"GAG on {_where(target.layer)}: the image has as many tokens as the text "
                f"({queries}), so GAG cannot tell the block's self-attention from its "
                f"cross-attention by their shapes. Change the image size or the prompt length "
                f"by a token.")
        return False

    def guide(self, layer: Optional[LayerRef], call: AttentionCall, text_tokens: Optional[int],
              scale: float, func, args, kwargs):
        """GAG on one guided attention call; returns what the attention function would."""
        q, k, v = call.heads_qkv()
        runtime = self.runtime
        if self.text == "cross" or self.mode == "joint":
            # The whole call is guided: image queries against the text keys alone (a separate
            # cross-attention, as in a UNet), or every query against every key (joint mode).
            # GAG's output, or only its correction when an override installed before GAG
            # supplies the attention.
            guide = runtime.attention if self.previous is None else runtime.correction
            run = lambda q, k, v, mask: guide(q, k, v, scale, mask, layer=layer)
            if self.text == "cross":  # batched prompts may be repeat-padded to one length
                out = without_repeated_keys(run, q, k, v, call.mask)
            else:
                out = run(q, k, v, call.mask)
            if self.previous is not None:
                plain = call.output_to_heads(self._next(func, args, kwargs))
                out = plain + out.to(plain.dtype)
            return call.from_heads(out)
        plain = call.output_to_heads(self._next(func, args, kwargs))
        text_start = 0 if self.text == "first" else q.shape[2] - text_tokens
        out = runtime.text_attention(q, k, v, text_tokens, scale, call.mask, plain, text_start,
                                     layer=layer)
        return call.from_heads(out.to(plain.dtype))


def _where(layer: Optional[LayerRef]) -> str:
    return "every block" if layer is None else str(layer)


def _memory_efficient(previous) -> bool:
    if previous is not None:
        # An override that says nothing is the untrusted (quadratic) case for ComfyUI's
        # estimate; GAG around it is no better.
        return bool(getattr(previous, "memory_efficient", False))
    return comfy_compat.default_attention_is_memory_efficient()


# ---------------------------------------------------------------------------------------------
# The hook interface (see nodes/adapters/__init__.py HOOKS)
# ---------------------------------------------------------------------------------------------

def available_layers(family, model_patcher) -> list[LayerRef]:
    """Every block of every group, in model order, less those the model never runs."""
    diffusion = model_patcher.model.diffusion_model
    refs = []
    for group in family.groups:
        skipped = set(getattr(diffusion, group.skip, ()) or ()) if group.skip else set()
        count = len(getattr(diffusion, group.blocks))
        refs += [LayerRef(group.name, i) for i in range(count) if i not in skipped]
    return refs


def _own_transformer_options(model_patcher) -> dict:
    """Copy-on-write of the transformer_options GAG edits, so a dict shared with another
    clone is never modified in place."""
    options = dict(model_patcher.model_options.get("transformer_options", {}))
    model_patcher.model_options["transformer_options"] = options
    return options


def _check_comfyui(model_patcher, family) -> None:
    if not comfy_compat.has_attention_override():
        raise ValueError("GAG on joint-attention DiTs needs ComfyUI's optimized_attention_override "
                         "(ComfyUI 0.3.64 or later); this ComfyUI has none. Update ComfyUI.")
    if (comfy_compat.diffusion_model_wrapper_type() is None
            or not comfy_compat.patcher_has_wrappers(model_patcher)):
        raise ValueError("GAG on joint-attention DiTs needs ComfyUI's model wrappers "
                         "(ComfyUI 0.3.64 or later); this ComfyUI has none. Update ComfyUI.")
    diffusion = model_patcher.model.diffusion_model
    # A model running the forward of the family's own class runs what the family's tests ran;
    # only a subclass's own forward (a sibling such as Wan 2.2 S2V) is judged by reading its
    # code, so a reading that misjudges a new ComfyUI's code style can never refuse a tested
    # family.
    runs_own_forward = (getattr(type(diffusion), "forward_orig", None)
                        is not getattr(family_class(family), "forward_orig", None))
    if runs_own_forward and not comfy_compat.blocks_get_transformer_options(diffusion):
        raise ValueError(f"GAG cannot guide {family.display_name} ({model_name(model_patcher)}) "
                         f"on this ComfyUI: its forward runs the blocks without "
                         f"transformer_options, so neither ComfyUI's block info nor GAG's block "
                         f"replaces reach their attention. Update ComfyUI (0.33 passes them for "
                         f"this model) or sample it without GAG.")
    for group in family.groups:
        # FLUX-style blocks can be built image-first, against what the family entry says.
        if family.text == "first" and any(getattr(block, "flipped_img_txt", False)
                                          for block in getattr(diffusion, group.blocks)):
            raise ValueError(f"{family.display_name} ({model_name(model_patcher)}) puts image "
                             f"tokens before text tokens in its joint attention, where GAG "
                             f"expects {family.display_name}'s text first")


def uninstall(model_patcher) -> int:
    """Remove GAG's block replaces, attention override and model wrapper; restore what they
    wrapped. Returns how many guided blocks were removed (the overrides' layers)."""
    wrapper_type = comfy_compat.diffusion_model_wrapper_type()
    if wrapper_type is not None and comfy_compat.patcher_has_wrappers(model_patcher):
        model_patcher.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
    current = model_patcher.model_options.get("transformer_options", {})
    if not has_block_replaces(current) and not isinstance(current.get(OVERRIDE_KEY),
                                                          JointAttentionOverride):
        return 0
    options = _own_transformer_options(model_patcher)
    remove_block_replaces(options)
    removed = 0
    override = options.get(OVERRIDE_KEY)
    while isinstance(override, JointAttentionOverride):
        removed += len(override.layers)
        override = override.previous
    if override is None:
        options.pop(OVERRIDE_KEY, None)
    else:
        options[OVERRIDE_KEY] = override
    return removed


def install(model_patcher, family, layers: list[LayerRef], runtime, mode: str) -> None:
    """Register GAG on ``layers`` of ``model_patcher`` (already a clone: mutate it freely)."""
    _check_comfyui(model_patcher, family)
    plan = plan_install(family, layers,
                        comfy_compat.model_sets_block_info(model_patcher.model.diffusion_model),
                        available_layers(family, model_patcher), model_name(model_patcher))
    options = _own_transformer_options(model_patcher)
    locators: tuple = (AllBlocks(),) if plan.all_blocks else ()
    if plan.via_dit_replace:
        locators += (marked_block,)
    locators += (BlockInfo(dict(plan.block_types)),)
    override = JointAttentionOverride(layers, runtime, mode, locators, options.get(OVERRIDE_KEY),
                                      text=family.text)
    options[OVERRIDE_KEY] = override
    install_block_replaces(options, family, list(plan.via_dit_replace), override)
    wrapper = ModelCallWrapper(runtime, override, family,
                               relies_on_block_info=plan.relies_on_block_info,
                               all_blocks=plan.all_blocks)
    model_patcher.add_wrapper_with_key(comfy_compat.diffusion_model_wrapper_type(), WRAPPER_KEY,
                                       wrapper)
