"""Telling a DiT block's attention which block it is in where ComfyUI does not: ``dit`` block
replaces that mark a copy of the block's transformer_options.

0.33+ sets ``block_type``/``block_index`` itself for most DiTs (``comfy_compat.
model_sets_block_info``); this path serves the blocks where it does not: every DiT on ComfyUI
0.3.64, and on 0.33 the families whose blocks still get no block info (SD3's MMDiT, LTX-Video,
LTX-2). A ``DiTBlockPatch`` on each chosen block copies the block's ``transformer_options``,
puts a ``BlockMark`` into the copy and runs the block with it (through any ``dit`` replace
installed before it); GAG's attention override finds the mark with ``marked_block``. Its only
call sites are ``dit_hook.install``/``uninstall``; it can go once ComfyUI tells every supported
family's attention its block.
"""

from __future__ import annotations

from typing import Optional

from ...gag_core.layer_spec import LayerRef
from .comfy_compat import OVERRIDE_KEY
from .diagnose import describe_override, missing_options_message, unconsumed_mark_cause
from .model_call import CALL_KEY, TEXT_TOKENS_KEY, ModelCallRecord, warn_once
from .shared import SharedObject

__all__ = ["MARK_KEY", "BlockMark", "DiTBlockPatch", "marked_block", "has_block_replaces",
           "install_block_replaces", "remove_block_replaces"]

MARK_KEY = "gag_block_mark"

class BlockMark(SharedObject):
    """What a ``dit`` block replace tells the attention of its block. ``joint_tokens`` is the
    number of queries of the attention GAG guides: the joint sequence, or the image (video)
    tokens where the text is a separate cross-attention. ``consumed`` counts the
    attention calls that took it: at most one for a joint sequence (MMDiT-X blocks run a
    second, image-only attention with the same options); for a separate cross-attention
    (``reusable``) every call of the block whose queries are the image and whose keys are the
    text, as ComfyUI's block info gives on 0.33: a Wan I2V-type block given no CLIP-vision
    features runs its image branch over the text too, two calls of one shape, and GAG guides
    both on either ComfyUI rather than only the first. Read by the override as a block target
    (``layer``, ``text_tokens``, ``joint_tokens``, ``spent``, ``claim``)."""

    __slots__ = ("layer", "text_tokens", "joint_tokens", "consumed", "reusable")

    def __init__(self, layer: LayerRef, text_tokens: Optional[int], joint_tokens: int,
                 reusable: bool = False):
        self.layer = layer
        self.text_tokens = text_tokens
        self.joint_tokens = joint_tokens
        self.consumed = 0
        self.reusable = reusable

    @property
    def spent(self) -> bool:
        return self.consumed > 0 and not self.reusable

    def claim(self) -> None:
        self.consumed += 1


def marked_block(options: dict) -> Optional[BlockMark]:
    """The mark a block replace put into these transformer_options, if any."""
    mark = options.get(MARK_KEY)
    return mark if isinstance(mark, BlockMark) else None


class DiTBlockPatch(SharedObject):
    """A ``dit`` block replace: marks the block's transformer_options for GAG's override and
    runs the block. It also puts GAG's override (``override``) on top of whatever override the
    block's options hold, as the model-call wrapper does for models that run one: SD3's MMDiT
    runs no DIFFUSION_MODEL wrappers."""

    marks_gag_block = True   # tells GAG's model-call audit this replace is GAG's own

    def __init__(self, layer: LayerRef, separate_text: bool, previous=None, override=None, *,
                 text_arg: Optional[str] = "txt", cross: bool = False):
        self.layer = layer
        self.separate_text = separate_text  # args carry txt and img apart (double stream)
        self.previous = previous            # the dit replace this one wraps, if any
        self.override = override            # GAG's JointAttentionOverride, re-chained on top
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
        mark = BlockMark(self.layer, text_tokens, joint_tokens, reusable=self.cross)
        marked = dict(options, **{MARK_KEY: mark})
        present = options.get(OVERRIDE_KEY)
        top = self.override.rechained(present) if self.override is not None else present
        if top is not present:
            marked[OVERRIDE_KEY] = top
        out = self._run(dict(args, transformer_options=marked), extra)
        if not mark.consumed:
            if self.previous is None:
                now = marked.get(OVERRIDE_KEY)
                took = ("" if now is top else
                        f" The attention override in place when the block ran was "
                        f"{describe_override(now)}, not GAG's.")
                raise RuntimeError(
                    f"GAG: the attention of {self.layer} never saw the GAG mark: "
                    f"{unconsumed_mark_cause(extra)}{took} GAG cannot act on this model here.")
            why = f"another 'dit' block replace on {self.layer} ran the block without it"
            record = options.get(CALL_KEY)
            if isinstance(record, ModelCallRecord):
                record.explained.append((self.layer, why))   # the model-call audit reports it
            else:
                warn_once(f"unconsumed:{self.layer}",
                          f"GAG: {why}: its attention never saw GAG's mark; GAG did not act "
                          f"on that block for that call.")
        return out


def _dit_replaces(options: dict) -> dict:
    return options.get("patches_replace", {}).get("dit", {})


def has_block_replaces(options: dict) -> bool:
    """Whether GAG's block replaces are among these transformer_options' ``dit`` replaces."""
    return any(isinstance(patch, DiTBlockPatch) for patch in _dit_replaces(options).values())


def _own_dit_replaces(options: dict) -> dict:
    """Copy-on-write of the nested dicts edited here (``options`` is already GAG's own copy of
    the transformer_options), so a dict shared with another clone is never changed in place."""
    replaces = dict(options.get("patches_replace", {}))
    replaces["dit"] = dict(replaces.get("dit", {}))
    options["patches_replace"] = replaces
    return replaces["dit"]


def install_block_replaces(options: dict, family, layers: list[LayerRef], override) -> None:
    """A ``DiTBlockPatch`` on each of ``layers`` (wrapping a replace already there), putting
    ``override`` (GAG's) on top in the block's options."""
    dit = _own_dit_replaces(options)
    for ref in layers:
        group = family.group(ref.group)
        key = (group.dit_replace, ref.block)
        dit[key] = DiTBlockPatch(ref, group.separate_text, dit.get(key), override,
                                 text_arg=group.text_arg, cross=family.text == "cross")


def remove_block_replaces(options: dict) -> None:
    """Undo ``install_block_replaces``: restore each replace GAG's wrapped, drop the rest."""
    if not has_block_replaces(options):
        return
    dit = _own_dit_replaces(options)
    for key in [key for key, patch in dit.items() if isinstance(patch, DiTBlockPatch)]:
        patch = dit[key]
        while isinstance(patch, DiTBlockPatch):
            patch = patch.previous
        if patch is None:
            del dit[key]
        else:
            dit[key] = patch
