"""What every joint-attention DiT adapter (FLUX.1/FLUX.2, Chroma, SD3, Qwen-Image) shares.

The hook uses two public ComfyUI patch points and no model code:

1. A ``dit`` block replace (``ModelPatcher.set_model_patch_replace(fn, "dit", "double_block" |
   "single_block", i)``) on each chosen block. It copies ``args["transformer_options"]``, puts a
   ``BlockMark`` in the copy (which layer, the runtime, the mode, λ for this step, where the text
   tokens are) and runs the block with the marked options: through the dit replace that was
   installed before it, if any (that one still receives ``original_block``), else through
   ``extra["original_block"]``. The models hand ``transformer_options`` down to their attention
   call, so the mark reaches exactly the attention of that block.
2. One ``optimized_attention_override`` in ``model_options["transformer_options"]``. ComfyUI's
   ``wrap_attn`` calls it for every attention in the model, UNet or DiT alike. It acts only on
   calls that carry a mark it owns, once per marked block (MMDiT-X blocks run a second,
   image-only attention with the same options; it is left alone); every other call goes to
   the override that was installed before it, or to ComfyUI's attention function.

Outside the schedule window the block replace does not mark, so the attention is exactly the
unpatched computation. Applying GAG again removes these patches first (``uninstall_dit``) and
puts back what they wrapped.

Text mode needs the number of text tokens at the start of the joint sequence. Double-stream
blocks get it from ``args["txt"]``. Single-stream blocks (FLUX, Chroma) hold text and image
tokens concatenated; newer ComfyUI passes ``transformer_options["img_slice"]`` for them, and on
0.3.6x the double-block replaces record the text length in the call's ``transformer_options``
(the single blocks of the same forward pass receive that same dict).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Optional

import torch

from ...gag_core.layer_spec import LayerRef
from .base import Adapter, model_name

__all__ = ["MARK_KEY", "TEXT_TOKENS_KEY", "BlockMark", "DiTBlockPatch", "JointAttentionOverride",
           "DiTAdapter", "AttentionCall", "uninstall_dit"]

MARK_KEY = "gag_block_mark"
TEXT_TOKENS_KEY = "gag_text_tokens"
OVERRIDE_KEY = "optimized_attention_override"

_log = logging.getLogger("comfyui_gag")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(message)


class BlockMark:
    """What a marked block tells its attention call. One per block call; ``consumed`` counts
    the attention calls that ran GAG for it (at most one)."""

    __slots__ = ("owner", "layer", "mode", "runtime", "scale", "text_tokens", "joint_tokens",
                 "consumed")

    def __init__(self, owner, layer: LayerRef, mode: str, runtime, scale: float,
                 text_tokens: Optional[int], joint_tokens: int):
        self.owner = owner
        self.layer = layer
        self.mode = mode
        self.runtime = runtime
        self.scale = scale
        self.text_tokens = text_tokens
        self.joint_tokens = joint_tokens
        self.consumed = 0

    # The mark travels inside transformer_options, which some code deep-copies.
    def __deepcopy__(self, memo):
        return self


class AttentionCall:
    """The arguments of a ComfyUI attention function, whichever way they were passed:
    ``(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
    skip_output_reshape=False, **kwargs)``."""

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

    @property
    def query_tokens(self) -> int:
        return self.q.shape[2] if self.skip_reshape else self.q.shape[1]

    def to_heads(self, t: torch.Tensor, input_layout: bool = True) -> torch.Tensor:
        """(B, L, H·D) → (B, H, L, D); tensors already in head layout pass through."""
        in_heads = self.skip_reshape if input_layout else self.skip_output_reshape
        if in_heads:
            return t
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

    def from_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, L, D) → the layout the attention function returns."""
        if self.skip_output_reshape:
            return out
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


class JointAttentionOverride:
    """The ``optimized_attention_override`` that runs GAG on marked joint attentions."""

    def __init__(self, previous=None):
        self.previous = previous  # the override installed before this one, if any

    def __deepcopy__(self, memo):
        return self

    def to(self, device):
        return self

    def _next(self, func, args, kwargs):
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options")
        mark = options.get(MARK_KEY) if isinstance(options, dict) else None
        if not isinstance(mark, BlockMark) or mark.owner is not self or mark.consumed:
            return self._next(func, args, kwargs)
        call = AttentionCall(args, kwargs)
        if call.query_tokens != mark.joint_tokens:
            return self._next(func, args, kwargs)  # not this block's joint attention
        mark.consumed += 1
        q, k, v = call.to_heads(call.q), call.to_heads(call.k), call.to_heads(call.v)
        runtime = mark.runtime
        if mark.mode == "joint":
            # DiT prompts are never repeat-padded (their c_crossattn is a CONDRegular, batched
            # only at equal length), so the runtime's repeat check is skipped.
            if self.previous is None:
                out = runtime.attention(q, k, v, mark.scale, call.mask, keys_may_repeat=False,
                                        layer=mark.layer)
            else:
                plain = call.to_heads(self._next(func, args, kwargs), input_layout=False)
                correction = runtime.correction(q, k, v, mark.scale, call.mask,
                                                keys_may_repeat=False, layer=mark.layer)
                out = plain + correction.to(plain.dtype)
            return call.from_heads(out)
        plain = call.to_heads(self._next(func, args, kwargs), input_layout=False)
        out = runtime.text_attention(q, k, v, mark.text_tokens, mark.scale, call.mask, plain,
                                     layer=mark.layer)
        return call.from_heads(out.to(plain.dtype))


class DiTBlockPatch:
    """A ``dit`` block replace: marks the block's transformer_options for GAG and runs the block.

    ``guided=False`` makes a recorder: it only writes the text length for the single-stream
    blocks that follow (installed on double blocks GAG does not guide, in text mode).
    """

    def __init__(self, layer: LayerRef, stream: str, override: JointAttentionOverride, runtime,
                 mode: str, previous=None, guided: bool = True):
        self.layer = layer
        self.stream = stream          # "double" (separate txt/img args) or "single" (joint)
        self.override = override
        self.runtime = runtime
        self.mode = mode
        self.previous = previous      # the dit replace this one wraps, if any
        self.guided = guided

    def __deepcopy__(self, memo):
        return self

    def to(self, device):
        return self

    def _run(self, args, extra):
        if self.previous is not None:
            return self.previous(args, extra)
        return extra["original_block"](args)

    def _layout(self, args, options) -> tuple[Optional[int], int]:
        """(text tokens, joint sequence length) of this block's attention."""
        if self.stream == "double":
            txt = args.get("txt")
            text_tokens = 0 if txt is None else int(txt.shape[1])
            return text_tokens, text_tokens + int(args["img"].shape[1])
        joint = int(args["img"].shape[1])
        img_slice = options.get("img_slice")
        if img_slice is not None:  # newer ComfyUI: [first image token, end of image tokens]
            return int(img_slice[0]), joint
        recorded = options.get(TEXT_TOKENS_KEY)
        return (None if recorded is None else int(recorded)), joint

    def __call__(self, args, extra):
        if "transformer_options" not in args or not isinstance(args["transformer_options"], dict):
            raise RuntimeError(
                f"GAG: this ComfyUI version does not pass transformer_options through the "
                f"'dit' block replace of {self.layer}, so GAG cannot reach the block's attention. "
                f"Update ComfyUI (0.3.60 or later) or remove the GAG node.")
        options = args["transformer_options"]
        text_tokens, joint_tokens = self._layout(args, options)
        if self.stream == "double":
            # Same dict object for every block of this forward pass: the single-stream blocks
            # after it read the text length from here.
            options[TEXT_TOKENS_KEY] = text_tokens
        if not self.guided:
            return self._run(args, extra)
        scale = self.runtime.step_scale(options)
        if scale is None:
            return self._run(args, extra)
        if self.mode == "text" and text_tokens is None:
            raise RuntimeError(
                f"GAG text mode on {self.layer}: the number of text tokens in the joint sequence "
                f"is unknown (no double-stream block recorded it and ComfyUI passed no "
                f"'img_slice'). Use mode 'joint' for this selection.")
        mark = BlockMark(self.override, self.layer, self.mode, self.runtime, scale,
                         text_tokens, joint_tokens)
        marked = dict(options)
        marked[MARK_KEY] = mark
        out = self._run(dict(args, transformer_options=marked), extra)
        if not mark.consumed:
            if self.previous is None:
                raise RuntimeError(
                    f"GAG: the attention of {self.layer} never saw the GAG mark: this ComfyUI "
                    f"version does not hand transformer_options to the attention call of this "
                    f"block, or an attention backend bypasses optimized_attention_override. "
                    f"GAG cannot act on this model here.")
            _warn_once(f"unconsumed:{self.layer}",
                       f"GAG: another patch on {self.layer} ran the block without its attention "
                       f"seeing GAG's mark; GAG did not act on that block for that call.")
        return out


TEXT_LENGTH_WRAPPER_KEY = "gag_text_tokens"


def _diffusion_model_wrapper_type() -> Optional[str]:
    try:
        from comfy.patcher_extension import WrappersMP
    except ImportError:
        return None
    return getattr(WrappersMP, "DIFFUSION_MODEL", None)


def record_text_tokens(executor, x, timestep, context, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: note the text length (context tokens) in this call's
    transformer_options, which the model hands to every block. FLUX and Chroma take
    transformer_options as their last positional argument or as a keyword."""
    options = kwargs.get("transformer_options")
    if options is None and args and isinstance(args[-1], dict):
        options = args[-1]
    if isinstance(options, dict) and torch.is_tensor(context) and context.dim() == 3:
        options[TEXT_TOKENS_KEY] = int(context.shape[1])
    return executor(x, timestep, context, *args, **kwargs)


def _copy_transformer_options(model_patcher) -> dict:
    """Copy-on-write of the nested dicts GAG edits, so a dict shared with another clone is
    never modified in place."""
    options = dict(model_patcher.model_options.get("transformer_options", {}))
    replaces = dict(options.get("patches_replace", {}))
    replaces["dit"] = dict(replaces.get("dit", {}))
    options["patches_replace"] = replaces
    model_patcher.model_options["transformer_options"] = options
    return options


def uninstall_dit(model_patcher) -> int:
    """Remove GAG's dit block replaces, attention override and text-length wrapper; restore
    what they wrapped."""
    wrapper_type = _diffusion_model_wrapper_type()
    if wrapper_type is not None and hasattr(model_patcher, "remove_wrappers_with_key"):
        model_patcher.remove_wrappers_with_key(wrapper_type, TEXT_LENGTH_WRAPPER_KEY)
    current = model_patcher.model_options.get("transformer_options", {})
    dit = current.get("patches_replace", {}).get("dit", {})
    ours = [key for key, patch in dit.items() if isinstance(patch, DiTBlockPatch)]
    has_override = isinstance(current.get(OVERRIDE_KEY), JointAttentionOverride)
    if not ours and not has_override:
        return 0
    options = _copy_transformer_options(model_patcher)
    dit = options["patches_replace"]["dit"]
    removed = 0
    for key in ours:
        patch = dit[key]
        while isinstance(patch, DiTBlockPatch):
            if patch.guided:
                removed += 1
            patch = patch.previous
        if patch is None:
            del dit[key]
        else:
            dit[key] = patch
    override = options.get(OVERRIDE_KEY)
    while isinstance(override, JointAttentionOverride):
        override = override.previous
    if override is None:
        options.pop(OVERRIDE_KEY, None)
    else:
        options[OVERRIDE_KEY] = override
    return removed


def check_attention_override_support() -> None:
    """ComfyUI must route attention through ``optimized_attention_override`` (0.3.6x+)."""
    import comfy.ldm.modules.attention as attention
    if not hasattr(attention, "wrap_attn"):
        raise ValueError("GAG on joint-attention DiTs needs ComfyUI's optimized_attention_override "
                         "(ComfyUI 0.3.60 or later); this ComfyUI has none. Update ComfyUI.")


class DiTAdapter(Adapter):
    """Base for joint-attention DiT families. Subclasses name their model classes and blocks."""

    modes = ("text", "joint")
    # layer group → (ComfyUI dit block name, "double" | "single" stream)
    groups: ClassVar[dict[str, tuple[str, str]]] = {}

    @classmethod
    def model_classes(cls) -> tuple[type, ...]:
        """The diffusion-model classes of this family (imported lazily; () if this ComfyUI
        has none of them)."""
        raise NotImplementedError

    @classmethod
    def block_indices(cls, diffusion_model) -> dict[str, list[int]]:
        """group → indices of the blocks that run, in model order."""
        raise NotImplementedError

    @classmethod
    def diffusion_model(cls, model_patcher):
        return getattr(getattr(model_patcher, "model", None), "diffusion_model", None)

    @classmethod
    def detect(cls, model_patcher) -> bool:
        classes = cls.model_classes()
        return bool(classes) and isinstance(cls.diffusion_model(model_patcher), classes)

    @classmethod
    def available_layers(cls, model_patcher) -> list[LayerRef]:
        blocks = cls.block_indices(cls.diffusion_model(model_patcher))
        return [LayerRef(group, i) for group, indices in blocks.items() for i in indices]

    @classmethod
    def check_layout(cls, model_patcher) -> None:
        """Raise ValueError if this model's joint sequence is not text-first (GAG's assumption)."""

    @classmethod
    def uninstall(cls, model_patcher) -> int:
        return uninstall_dit(model_patcher)

    @classmethod
    def install(cls, model_patcher, layers: list[LayerRef], runtime, mode: str) -> None:
        check_attention_override_support()
        cls.check_layout(model_patcher)
        unknown = sorted({ref.group for ref in layers} - set(cls.groups))
        if unknown:
            raise ValueError(f"{cls.display_name} has no layer group {', '.join(unknown)}; its "
                             f"groups are {', '.join(cls.groups)}")
        options = _copy_transformer_options(model_patcher)
        dit = options["patches_replace"]["dit"]
        override = JointAttentionOverride(previous=options.get(OVERRIDE_KEY))
        options[OVERRIDE_KEY] = override
        chosen = set(layers)
        for ref in layers:
            block_name, stream = cls.groups[ref.group]
            key = (block_name, ref.block)
            dit[key] = DiTBlockPatch(ref, stream, override, runtime, mode, dit.get(key))
        needs_text_length = mode == "text" and any(
            cls.groups[ref.group][1] == "single" for ref in layers)
        if needs_text_length:
            # Record the text length once per model call, before any block runs: a patch that
            # replaces every double block outright (SkipLayerGuidanceDiT's extra pass) would
            # otherwise leave the single blocks without it. The unguided double-block
            # recorders below cover ComfyUI versions without model wrappers.
            add_wrapper = getattr(model_patcher, "add_wrapper_with_key", None)
            wrapper_type = _diffusion_model_wrapper_type()
            if add_wrapper is not None and wrapper_type is not None:
                add_wrapper(wrapper_type, TEXT_LENGTH_WRAPPER_KEY, record_text_tokens)
            for ref in cls.available_layers(model_patcher):
                block_name, stream = cls.groups[ref.group]
                if stream == "double" and ref not in chosen:
                    key = (block_name, ref.block)
                    dit[key] = DiTBlockPatch(ref, stream, override, runtime, mode, dit.get(key),
                                             guided=False)


# Families whose every block is one dual-stream joint block (SD3, Qwen-Image): "paper" is every
# block, as each holds the image-query → text-key retrieval.
JOINT_BLOCK_PRESETS = {"paper": "joint", "all": "all", "joint": "joint"}
JOINT_BLOCK_GROUPS = {"joint": ("double_block", "double")}


def require_text_first(model_patcher, blocks, what: str) -> None:
    """FLUX-style double blocks can be built image-first (``flipped_img_txt``); GAG's text mode
    assumes text first, so refuse such a model clearly instead of guiding the wrong tokens."""
    if any(getattr(block, "flipped_img_txt", False) for block in blocks):
        raise ValueError(f"{what} ({model_name(model_patcher)}) puts image tokens before text "
                         f"tokens in its joint attention; GAG supports text-first models only")


def find_class(module_name: str, class_name: str) -> Optional[type]:
    """A class from ComfyUI, or None when this ComfyUI does not have it."""
    import importlib
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    found: Any = getattr(module, class_name, None)
    return found if isinstance(found, type) else None
