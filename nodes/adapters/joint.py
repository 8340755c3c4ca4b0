"""The hook for every DiT family (FLUX.1, FLUX.2, Chroma, SD3, Qwen-Image, Z-Image, HiDream, …).

GAG needs, for each attention call, to know which block it belongs to and where the text tokens
of the joint sequence are. It gets both through public ComfyUI patch points only:

1. One ``optimized_attention_override`` in ``model_options["transformer_options"]``. ComfyUI's
   ``wrap_attn`` calls it for every attention of the model. It guides a call only when the
   call belongs to a selected block; every other call goes unchanged to the override installed
   before it, or to ComfyUI's own attention function.
2. Which block a call belongs to:
   - ComfyUI 0.33+ tells attention itself: it sets ``block_type``, ``block_index`` (and, for
     single-stream blocks, ``img_slice`` = [first image token, sequence length]) in the
     ``transformer_options`` it hands to attention. Where the model's forward does this (a
     feature check on its code, ``model_sets_block_info``), the override decides from that
     alone and nothing else is installed per block.
   - Older ComfyUI (0.3.64) does not: a ``dit`` block replace on each chosen block copies the
     block's ``transformer_options``, puts a ``BlockMark`` into the copy and runs the block with
     it (through any ``dit`` replace installed before it).
   - Where ComfyUI does neither (HiDream) and every attention call of the model is one
     block's joint attention, GAG guides every call: all blocks together or none.
3. The text length: ``img_slice`` where ComfyUI gives it, the block's own ``txt`` argument on
   the ``dit`` path, and otherwise the family's ``TextLength`` rule over the diffusion model's
   inputs (the text context, plus inputs whose tokens join the text, padded as the model pads
   it), noted once per model call by a ``DIFFUSION_MODEL`` wrapper (double-stream blocks get
   no ``img_slice`` in the options attention sees). The same wrapper checks, after each model
   call, that GAG could act, so that GAG is never silently off (for example when another node
   replaced the model's forward).
4. Where the text sits (the family's ``text``): at the start or at the end of a joint sequence
   (text mode guides the other rows' retrieval of that span), or in a separate
   cross-attention (Kandinsky 5), where GAG guides the call whose keys are the text, as in a
   UNet, and leaves the block's self-attention alone.

Outside the schedule window every call is left alone, so the attention is exactly the
unpatched computation. Applying GAG again removes all of this first (``uninstall``).
"""

from __future__ import annotations

import inspect
import logging
from typing import Optional

import torch

from ...gag_core.layer_spec import LayerRef
from .diagnose import (EASYCACHE_ADVICE, missing_options_message, model_call_cause,
                       unconsumed_mark_cause)
from .prompt_repeats import without_repeated_keys
from .shared import SharedObject

__all__ = ["MARK_KEY", "TEXT_TOKENS_KEY", "CALL_KEY", "OVERRIDE_KEY", "BlockMark",
           "AttentionCall", "JointAttentionOverride", "DiTBlockPatch", "ModelCallWrapper",
           "available_layers", "install", "uninstall", "model_sets_block_info"]

MARK_KEY = "gag_block_mark"
TEXT_TOKENS_KEY = "gag_text_tokens"
CALL_KEY = "gag_model_call"
OVERRIDE_KEY = "optimized_attention_override"
WRAPPER_KEY = "gag_joint"

_log = logging.getLogger("comfyui_gag")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(message)


# ---------------------------------------------------------------------------------------------
# Reading an attention call
# ---------------------------------------------------------------------------------------------

class AttentionCall:
    """The arguments of a ComfyUI attention function, whichever way they were passed:
    ``(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
    skip_output_reshape=False, **kwargs)``; kwargs may carry a softmax ``scale`` and
    ``enable_gqa`` (fewer key/value heads than query heads)."""

    _NAMES = ("q", "k", "v", "heads", "mask", "attn_precision", "skip_reshape",
              "skip_output_reshape")

    def __init__(self, args: tuple, kwargs: dict):
        bound = dict(zip(self._NAMES, args))
        for name in self._NAMES[len(args):]:
            if name in kwargs:
                bound[name] = kwargs[name]
        self.q, self.k, self.v = bound["q"], bound["k"], bound["v"]
        self.heads = int(bound["heads"])
        self.mask = bound.get("mask")
        self.skip_reshape = bool(bound.get("skip_reshape", False))
        self.skip_output_reshape = bool(bound.get("skip_output_reshape", False))
        self.softmax_scale = kwargs.get("scale")
        self.enable_gqa = bool(kwargs.get("enable_gqa", False))

    def tokens(self, t: torch.Tensor) -> int:
        return t.shape[2] if self.skip_reshape else t.shape[1]

    @property
    def query_tokens(self) -> int:
        return self.tokens(self.q)

    @property
    def key_tokens(self) -> int:
        return self.tokens(self.k)

    def _to_heads(self, t: torch.Tensor, in_heads: bool) -> torch.Tensor:
        """(B, L, H·D) → (B, H, L, D); tensors already in head layout pass through."""
        if in_heads:
            return t
        return t.reshape(t.shape[0], t.shape[1], -1, self._head_dim()).transpose(1, 2)

    def _head_dim(self) -> int:
        return self.q.shape[-1] // self.heads

    def heads_qkv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, H, L, D), ready for gag_core: keys/values repeated to the query heads
        under grouped-query attention, and a custom softmax scale folded into q (gag_core
        scales scores by 1/√D)."""
        q, k, v = (self._to_heads(t, self.skip_reshape) for t in (self.q, self.k, self.v))
        if k.shape[1] != q.shape[1]:
            if not self.enable_gqa or q.shape[1] % k.shape[1]:
                raise ValueError(f"GAG: attention with {q.shape[1]} query heads and "
                                 f"{k.shape[1]} key heads")
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if self.softmax_scale is not None:
            q = q * (float(self.softmax_scale) * q.shape[-1] ** 0.5)
        return q, k, v

    def output_to_heads(self, out: torch.Tensor) -> torch.Tensor:
        """An attention function's output → (B, H, L, D)."""
        if self.skip_output_reshape:
            return out
        return out.reshape(out.shape[0], out.shape[1], self.heads, -1).transpose(1, 2)

    def from_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, L, D) → the layout the attention function returns."""
        if self.skip_output_reshape:
            return out
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


# ---------------------------------------------------------------------------------------------
# Which block a call belongs to
# ---------------------------------------------------------------------------------------------

class BlockMark(SharedObject):
    """What a ``dit`` block replace tells the attention of its block (ComfyUI without block
    info). ``joint_tokens`` is the number of queries of the attention GAG guides: the joint
    sequence, or the image (video) tokens where the text is a separate cross-attention.
    ``consumed`` counts the attention calls that took it (at most one: MMDiT-X blocks run a
    second, image-only attention with the same options)."""

    __slots__ = ("layer", "text_tokens", "joint_tokens", "consumed")

    def __init__(self, layer: LayerRef, text_tokens: Optional[int], joint_tokens: int):
        self.layer = layer
        self.text_tokens = text_tokens
        self.joint_tokens = joint_tokens
        self.consumed = 0


class ModelCallRecord(SharedObject):
    """Per model call: how many attention calls reached GAG, and how many knew their block."""

    __slots__ = ("attention_calls", "calls_with_block")

    def __init__(self):
        self.attention_calls = 0
        self.calls_with_block = 0


def _code_constants(code) -> set:
    found = set()
    for const in code.co_consts:
        if isinstance(const, str):
            found.add(const)
        elif hasattr(const, "co_consts"):
            found |= _code_constants(const)
    return found


def model_sets_block_info(diffusion_model) -> bool:
    """Whether this model's forward writes ``block_type`` and ``block_index`` into the
    transformer_options its blocks hand to attention (ComfyUI 0.33+ for most DiTs).

    Read from the code objects of the class's forward methods: a feature check, made once at
    install, that needs no model call. Where it says no, the ``dit`` replace path is used,
    which works everywhere the family has ``dit`` replaces.
    """
    constants: set = set()
    for klass in type(diffusion_model).__mro__:
        for name in ("forward_orig", "_forward", "forward"):
            code = getattr(klass.__dict__.get(name), "__code__", None)
            if code is not None:
                constants |= _code_constants(code)
    return {"block_type", "block_index"} <= constants


class JointAttentionOverride(SharedObject):
    """The ``optimized_attention_override`` that runs GAG on the selected blocks' joint
    attention. It never defines ``container_function``: newer ComfyUI would call that without
    the wrapped function, bypassing both GAG and the previous override."""

    def __init__(self, layers, runtime, mode: str, block_types: dict[str, str], previous=None,
                 *, text: str = "first", all_blocks: bool = False):
        self.layers = frozenset(layers)
        self.runtime = runtime
        self.mode = mode
        self.block_types = dict(block_types)  # ComfyUI block_type → group, where it is trusted
        self.previous = previous              # the override installed before this one, if any
        self.text = text                      # "first", "last" (joint sequence) or "cross"
        # Guide every attention call of the model (a family whose every attention is a block's
        # joint attention and whose calls cannot tell their block; see Family.all_blocks_only).
        self.all_blocks = all_blocks
        # Memory estimates that read this attribute treat an unmarked override as the slow,
        # quadratic case. GAG's PyTorch path works in bounded query chunks, so GAG is as
        # memory-efficient as what it wraps.
        self.memory_efficient = _memory_efficient(previous)

    def _next(self, func, args, kwargs):
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def _target(self, options: dict
                ) -> Optional[tuple[Optional[LayerRef], Optional[int], Optional[int]]]:
        """(layer, text tokens, joint length) of the block this call belongs to, or None. The
        layer is None where every call is guided (``all_blocks``): no call knows its block."""
        if self.all_blocks:
            text_tokens = options.get(TEXT_TOKENS_KEY)
            return None, (None if text_tokens is None else int(text_tokens)), None
        mark = options.get(MARK_KEY)
        if isinstance(mark, BlockMark):
            if mark.consumed or mark.layer not in self.layers:
                return None
            return mark.layer, mark.text_tokens, mark.joint_tokens
        group = self.block_types.get(options.get("block_type"))
        index = options.get("block_index")
        if group is None or not isinstance(index, int):
            return None
        layer = LayerRef(group, index)
        if layer not in self.layers:
            return None
        img_slice = options.get("img_slice")
        if img_slice is not None:
            return layer, int(img_slice[0]), int(img_slice[1])
        text_tokens = options.get(TEXT_TOKENS_KEY)
        return layer, (None if text_tokens is None else int(text_tokens)), None

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options")
        if not isinstance(options, dict):
            return self._next(func, args, kwargs)
        record = options.get(CALL_KEY)
        if isinstance(record, ModelCallRecord):
            record.attention_calls += 1
            if MARK_KEY in options or options.get("block_type") in self.block_types:
                record.calls_with_block += 1
        target = self._target(options)
        if target is None:
            return self._next(func, args, kwargs)
        layer, text_tokens, joint_tokens = target
        call = AttentionCall(args, kwargs)
        if not self._is_guided_attention(call, text_tokens, joint_tokens, layer):
            return self._next(func, args, kwargs)  # another attention of the block
        mark = options.get(MARK_KEY)
        if isinstance(mark, BlockMark):
            mark.consumed += 1
        scale = self.runtime.step_scale(options)
        if scale is None:
            return self._next(func, args, kwargs)
        if self.mode == "text" and text_tokens is None and self.text != "cross":
            raise RuntimeError(
                f"GAG text mode on {_where(layer)}: the number of text tokens in the joint "
                f"sequence is unknown (ComfyUI gave no 'img_slice' and the model call's text "
                f"context was not seen). Use mode 'joint' for this model.")
        return self.guide(layer, call, text_tokens, scale, func, args, kwargs)

    def _is_guided_attention(self, call: AttentionCall, text_tokens: Optional[int],
                             joint_tokens: Optional[int], layer: Optional[LayerRef]) -> bool:
        """Whether this call is the attention GAG guides in its block: the joint attention
        (as many keys as queries, the whole sequence where its length is known), or, where the
        text is a separate cross-attention, the call whose keys are not the queries' tokens.
        A block may run other attentions with the same options (an image-only self-attention
        in SD3.5's MMDiT-X blocks and in Kandinsky 5's blocks)."""
        queries, keys = call.query_tokens, call.key_tokens
        if self.text != "cross":
            return keys == queries and (joint_tokens is None or queries == joint_tokens)
        if joint_tokens is not None and queries != joint_tokens:
            return False  # part of the queries (LTX's guide-masked self-attention) or audio
        if keys != queries:
            return text_tokens is None or keys == text_tokens
        if text_tokens == queries:
            raise RuntimeError(
                f"GAG on {_where(layer)}: the image has as many tokens as the text ({queries}), "
                f"so GAG cannot tell the block's self-attention from its cross-attention by "
                f"their shapes. Change the image size or the prompt length by a token.")
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
    try:
        import comfy.ldm.modules.attention as attention
    except ImportError:
        return True
    basic = getattr(attention, "attention_basic", None)
    return basic is None or attention.optimized_attention is not basic


class DiTBlockPatch(SharedObject):
    """A ``dit`` block replace (ComfyUI without block info): marks the block's
    transformer_options for GAG's override and runs the block."""

    def __init__(self, layer: LayerRef, separate_text: bool, previous=None, *,
                 text_arg: Optional[str] = "txt", cross: bool = False):
        self.layer = layer
        self.separate_text = separate_text  # args carry txt and img apart (double stream)
        self.previous = previous            # the dit replace this one wraps, if any
        self.text_arg = text_arg            # the argument that is the text (BlockGroup.text_arg)
        self.cross = cross                  # the text is a separate cross-attention

    def _run(self, args, extra):
        if self.previous is not None:
            return self.previous(args, extra)
        return extra["original_block"](args)

    def _layout(self, args, options) -> tuple[Optional[int], int]:
        """(text tokens, queries of the guided attention) of this block: the joint sequence
        length, or the image tokens where the text is a separate cross-attention."""
        if self.separate_text:
            img = args["img"]
            if isinstance(img, (tuple, list)):
                img = img[0]  # streams (LTX-2: video, audio): the first is guided
            if self.text_arg is None:
                recorded = options.get(TEXT_TOKENS_KEY)
                text_tokens = None if recorded is None else int(recorded)
            else:
                txt = args.get(self.text_arg)
                text_tokens = 0 if txt is None else int(txt.shape[1])
            if self.cross:
                return text_tokens, int(img.shape[1])
            return text_tokens, (text_tokens or 0) + int(img.shape[1])
        joint = int(args["img"].shape[1])
        img_slice = options.get("img_slice")
        if img_slice is not None:
            return int(img_slice[0]), joint
        recorded = options.get(TEXT_TOKENS_KEY)
        return (None if recorded is None else int(recorded)), joint

    def __call__(self, args, extra):
        options = args.get("transformer_options")
        if not isinstance(options, dict):
            raise RuntimeError(missing_options_message(self.layer, extra))
        if isinstance(args.get("img"), (tuple, list)) and options.get("run_vx", True) is False:
            # LTX-2 asked to run its audio stream only: GAG leaves audio attention alone.
            raise RuntimeError(
                f"GAG guides the video's text cross-attention of {self.layer}, but this model "
                f"call runs the audio stream only (transformer_options 'run_vx' is False); GAG "
                f"does not guide audio attention. Remove GAG from audio-only runs.")
        text_tokens, joint_tokens = self._layout(args, options)
        mark = BlockMark(self.layer, text_tokens, joint_tokens)
        out = self._run(dict(args, transformer_options=dict(options, **{MARK_KEY: mark})), extra)
        if not mark.consumed:
            if self.previous is None:
                raise RuntimeError(
                    f"GAG: the attention of {self.layer} never saw the GAG mark: "
                    f"{unconsumed_mark_cause(extra)} GAG cannot act on this model here.")
            _warn_once(f"unconsumed:{self.layer}",
                       f"GAG: another patch on {self.layer} ran the block without its attention "
                       f"seeing GAG's mark; GAG did not act on that block for that call.")
        return out


def _model_inputs(executor, args: tuple, kwargs: dict) -> dict:
    """The diffusion model's inputs by parameter name ("context", "transformer_options", …).

    DiT forwards differ in their parameter order (HiDream's third is the pooled vector, not the
    text), so the arguments are bound to the signature of the function the wrapper chain ends
    in (``executor.original``, the model's ``_forward``). Where that cannot be read, the first
    three are taken as x, timestep, context and transformer_options as the keyword or the last
    positional dict.
    """
    try:
        signature = inspect.signature(executor.original)
        bound = signature.bind_partial(*args, **kwargs).arguments
    except (AttributeError, TypeError, ValueError):
        named = dict(zip(("x", "timestep", "context"), args))
        named.update(kwargs)
        if "transformer_options" not in named and args and isinstance(args[-1], dict):
            named["transformer_options"] = args[-1]
        return named
    named = {}
    for name, value in bound.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return named


class ModelCallWrapper(SharedObject):
    """``DIFFUSION_MODEL`` wrapper: notes the text length of this model call (the family's
    ``TextLength`` rule over the model's inputs) for the blocks that get no ``img_slice``, and
    afterwards checks that GAG's override could act, so that GAG is never silently off: that
    its attention calls could tell their block, or, where every call is guided
    (``all_blocks``), that attention reached it at all."""

    def __init__(self, runtime, relies_on_block_info: bool, text_length=None,
                 all_blocks: bool = False, family_name: str = "this model"):
        self.runtime = runtime
        self.relies_on_block_info = relies_on_block_info
        self.text_length = text_length
        self.all_blocks = all_blocks
        self.family_name = family_name

    def _text_tokens(self, executor, inputs: dict) -> Optional[int]:
        if self.text_length is not None:
            return self.text_length.tokens(getattr(executor, "class_obj", None), inputs)
        context = inputs.get("context")
        if torch.is_tensor(context) and context.dim() == 3:
            return int(context.shape[1])
        return None

    def __call__(self, executor, *args, **kwargs):
        inputs = _model_inputs(executor, args, kwargs)
        options = inputs.get("transformer_options")
        record = None
        if isinstance(options, dict):
            text_tokens = self._text_tokens(executor, inputs)
            if text_tokens is not None:
                options[TEXT_TOKENS_KEY] = text_tokens
            record = options[CALL_KEY] = ModelCallRecord()
        out = executor(*args, **kwargs)
        if record is None:
            return out
        identified = record.attention_calls if self.all_blocks else record.calls_with_block
        if not identified and self.runtime.step_scale(options) is not None:
            self._refuse_silent_no_op(getattr(executor, "class_obj", None),
                                      attention_ran=record.attention_calls > 0)
        return out

    def _refuse_silent_no_op(self, diffusion_model, attention_ran: bool) -> None:
        """No attention call of this model call was inside a block GAG could identify (none at
        all when a step cache skipped the call, or when another node's blocks run attention
        without options). Raises when there is evidence of the cause; called while the model
        call's replacements, if any, are still in place."""
        cause = model_call_cause(diffusion_model) if diffusion_model is not None else None
        if cause is not None:
            raise RuntimeError(
                f"GAG: the model ran without GAG reaching the attention of any chosen block: "
                f"another node replaced the model's code ({cause}) and runs the blocks without "
                f"their transformer_options. {EASYCACHE_ADVICE}")
        if self.all_blocks:
            raise RuntimeError(
                f"GAG: {self.family_name} ran without its attention reaching GAG's attention "
                f"override (this ComfyUI does not hand that attention its transformer_options, "
                f"or another node replaced the model's forward), so GAG could not act.")
        if self.relies_on_block_info and attention_ran:
            # The model's forward sets block info by design; its absence is evidence enough.
            raise RuntimeError(
                "GAG: the model ran its attention without telling it which block it is in "
                "(ComfyUI's block_type/block_index were absent), so GAG could not act. Another "
                "node probably replaced the model's forward or its blocks. " + EASYCACHE_ADVICE)


# ---------------------------------------------------------------------------------------------
# The hook interface (see families.HOOKS)
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


def _diffusion_model_wrapper_type() -> Optional[str]:
    try:
        from comfy.patcher_extension import WrappersMP
    except ImportError:
        return None
    return getattr(WrappersMP, "DIFFUSION_MODEL", None)


def _copy_transformer_options(model_patcher) -> dict:
    """Copy-on-write of the nested dicts GAG edits, so a dict shared with another clone is
    never modified in place."""
    options = dict(model_patcher.model_options.get("transformer_options", {}))
    replaces = dict(options.get("patches_replace", {}))
    replaces["dit"] = dict(replaces.get("dit", {}))
    options["patches_replace"] = replaces
    model_patcher.model_options["transformer_options"] = options
    return options


def _check_comfyui(model_patcher, family) -> None:
    import comfy.ldm.modules.attention as attention
    if not hasattr(attention, "wrap_attn"):
        raise ValueError("GAG on joint-attention DiTs needs ComfyUI's optimized_attention_override "
                         "(ComfyUI 0.3.64 or later); this ComfyUI has none. Update ComfyUI.")
    if _diffusion_model_wrapper_type() is None or not hasattr(model_patcher,
                                                              "add_wrapper_with_key"):
        raise ValueError("GAG on joint-attention DiTs needs ComfyUI's model wrappers "
                         "(ComfyUI 0.3.64 or later); this ComfyUI has none. Update ComfyUI.")
    diffusion = model_patcher.model.diffusion_model
    for group in family.groups:
        # FLUX-style blocks can be built image-first, against what the family entry says.
        if family.text == "first" and any(getattr(block, "flipped_img_txt", False)
                                          for block in getattr(diffusion, group.blocks)):
            from .families import model_name
            raise ValueError(f"{family.display_name} ({model_name(model_patcher)}) puts image "
                             f"tokens before text tokens in its joint attention, where GAG "
                             f"expects {family.display_name}'s text first")


def uninstall(model_patcher) -> int:
    """Remove GAG's block replaces, attention override and model wrapper; restore what they
    wrapped. Returns how many guided blocks were removed (block-info path: the override's)."""
    wrapper_type = _diffusion_model_wrapper_type()
    if wrapper_type is not None and hasattr(model_patcher, "remove_wrappers_with_key"):
        model_patcher.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
    current = model_patcher.model_options.get("transformer_options", {})
    dit = current.get("patches_replace", {}).get("dit", {})
    ours = [key for key, patch in dit.items() if isinstance(patch, DiTBlockPatch)]
    override = current.get(OVERRIDE_KEY)
    if not ours and not isinstance(override, JointAttentionOverride):
        return 0
    options = _copy_transformer_options(model_patcher)
    dit = options["patches_replace"]["dit"]
    for key in ours:
        patch = dit[key]
        while isinstance(patch, DiTBlockPatch):
            patch = patch.previous
        if patch is None:
            del dit[key]
        else:
            dit[key] = patch
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
    block_info = model_sets_block_info(model_patcher.model.diffusion_model)
    trusted = {g.block_type: g.name for g in family.groups if block_info and g.block_type}
    via_dit = [ref for ref in layers if family.group(ref.group).block_type not in trusted]
    unreachable = [ref for ref in via_dit if family.group(ref.group).dit_replace is None]
    all_blocks = False
    if unreachable and family.all_blocks_only:
        if set(layers) != set(available_layers(family, model_patcher)):
            from .families import model_name
            raise ValueError(
                f"GAG guides {family.display_name} ({model_name(model_patcher)}) on all its "
                f"blocks together or not at all (layer preset 'paper' or 'all'): ComfyUI tells "
                f"its attention neither which block it is in nor offers 'dit' block replaces, "
                f"so one block's attention cannot be told from another's")
        all_blocks, via_dit = True, []
    elif unreachable:
        raise ValueError(f"GAG cannot reach the '{unreachable[0].group}' blocks of "
                         f"{family.display_name} on this ComfyUI: it neither tells their "
                         f"attention which block it is in nor offers a 'dit' block replace")
    options = _copy_transformer_options(model_patcher)
    override = JointAttentionOverride(layers, runtime, mode, trusted, options.get(OVERRIDE_KEY),
                                      text=family.text, all_blocks=all_blocks)
    options[OVERRIDE_KEY] = override
    dit = options["patches_replace"]["dit"]
    for ref in via_dit:
        group = family.group(ref.group)
        key = (group.dit_replace, ref.block)
        dit[key] = DiTBlockPatch(ref, group.separate_text, dit.get(key),
                                 text_arg=getattr(group, "text_arg", "txt"),
                                 cross=family.text == "cross")
    wrapper = ModelCallWrapper(runtime, relies_on_block_info=not via_dit and not all_blocks,
                               text_length=family.text_length, all_blocks=all_blocks,
                               family_name=family.display_name)
    model_patcher.add_wrapper_with_key(_diffusion_model_wrapper_type(), WRAPPER_KEY, wrapper)
