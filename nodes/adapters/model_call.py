"""The per-model-call ``DIFFUSION_MODEL`` wrapper of the DiT hook.

Once per call of the diffusion model it

1. notes how many text tokens the call's attention holds (the family's ``TextLength`` rule over
   the model's inputs; blocks that get no ``img_slice`` read it);
2. puts GAG's attention override on top of whatever override this call's options hold
   (``JointAttentionOverride.rechained``): a node applied after GAG that writes the same
   ``optimized_attention_override`` key (ComfyUI's ModelAttentionBackend, a Sage or NAG pack)
   or re-installs itself before each step (BlockSparseAttention) becomes GAG's dense path
   instead of silently replacing GAG. Only this call's copy of the options is changed;
3. opens a ``ModelCallRecord`` that the override fills in, and afterwards audits it: every
   selected block's attention must have been guided in a model call inside the schedule
   window. A shortfall stops sampling with an error naming what took the calls (an override
   installed while the model ran, above GAG's), or the shapes GAG could not guide, or what
   replaced the model's code; unless GAG can explain and accept it (another node's ``dit``
   replace ran the block without its attention, as SkipLayerGuidance does in its extra pass),
   which is logged once. Models that run no DIFFUSION_MODEL wrappers (SD3's MMDiT) get the
   re-chaining from GAG's block replaces and the per-block check there (``dit_replace``).
"""

from __future__ import annotations

import inspect
import logging
from typing import Optional

import torch

from .comfy_compat import OVERRIDE_KEY
from .diagnose import EASYCACHE_ADVICE, describe_override, model_call_cause
from .shared import SharedObject

__all__ = ["TEXT_TOKENS_KEY", "CALL_KEY", "WRAPPER_KEY", "ModelCallRecord", "ModelCallWrapper",
           "model_inputs", "warn_once"]

TEXT_TOKENS_KEY = "gag_text_tokens"   # transformer_options: text tokens of this model call
CALL_KEY = "gag_model_call"           # transformer_options: this model call's ModelCallRecord
WRAPPER_KEY = "gag_joint"             # the key GAG's DIFFUSION_MODEL wrapper is filed under

_log = logging.getLogger("comfyui_gag")
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Log ``message`` the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        _log.warning(message)


class ModelCallRecord(SharedObject):
    """Per model call: how many attention calls reached GAG, how many knew their block, the
    layers GAG guided, the selected layers whose calls reached GAG in a shape it does not guide
    ((layer, queries, keys)), and the layers whose shortfall a block replace explained
    ((layer, why)).

    Lists, appended to and counters, incremented: the operations torch.compile replays on an
    object from outside a compiled graph (a set filled inside one came back with one entry)."""

    __slots__ = ("attention_calls", "calls_with_block", "guided_layers", "declined",
                 "explained")

    def __init__(self):
        self.attention_calls = 0
        self.calls_with_block = 0
        self.guided_layers: list = []
        self.declined: list = []
        self.explained: list = []


def model_inputs(executor, args: tuple, kwargs: dict) -> dict:
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


def _layers_text(layers) -> str:
    layers = sorted(layers)
    shown = ", ".join(str(layer) for layer in layers[:8])
    return shown + (f" and {len(layers) - 8} more" if len(layers) > 8 else "")


class ModelCallWrapper(SharedObject):
    """``DIFFUSION_MODEL`` wrapper (module docstring).

    override: GAG's installed ``JointAttentionOverride`` (re-chained on top per call).
    family: the model's ``Family`` (its text-length rule, its groups' ``dit`` replace keys).
    relies_on_block_info: every guided block learns its block from ComfyUI's block info.
    all_blocks: every attention call is guided (no per-block audit is possible).
    """

    def __init__(self, runtime, override, family, *, relies_on_block_info: bool,
                 all_blocks: bool = False):
        self.runtime = runtime
        self.override = override
        self.family = family
        self.relies_on_block_info = relies_on_block_info
        self.all_blocks = all_blocks

    def _text_tokens(self, executor, inputs: dict) -> Optional[int]:
        if self.family.text_length is not None:
            return self.family.text_length.tokens(getattr(executor, "class_obj", None), inputs)
        context = inputs.get("context")
        if torch.is_tensor(context) and context.dim() == 3:
            return int(context.shape[1])
        return None

    def __call__(self, executor, *args, **kwargs):
        inputs = model_inputs(executor, args, kwargs)
        options = inputs.get("transformer_options")
        if not isinstance(options, dict):
            return executor(*args, **kwargs)
        text_tokens = self._text_tokens(executor, inputs)
        if text_tokens is not None:
            options[TEXT_TOKENS_KEY] = text_tokens
        record = options[CALL_KEY] = ModelCallRecord()
        present = options.get(OVERRIDE_KEY)
        top = self.override.rechained(present)
        if top is not present:
            options[OVERRIDE_KEY] = top
        out = executor(*args, **kwargs)
        if self.runtime.step_scale(options) is None:
            return out
        diffusion_model = getattr(executor, "class_obj", None)
        taken = options.get(OVERRIDE_KEY) is not top   # replaced while the model ran
        if self.all_blocks:
            if not record.attention_calls:
                if taken:
                    raise RuntimeError(self._taken_message(
                        f"no attention call of {self.family.display_name} reached GAG in this "
                        f"model call", options))
                self._refuse_silent_no_op(diffusion_model, attention_ran=False)
        elif record.calls_with_block or (taken and not record.attention_calls):
            self._audit(record, options, diffusion_model)
        else:
            self._refuse_silent_no_op(diffusion_model, attention_ran=record.attention_calls > 0)
        return out

    @staticmethod
    def _taken_message(what: str, options: dict) -> str:
        return (f"GAG: {what}. Those calls were taken by "
                f"{describe_override(options.get(OVERRIDE_KEY))}, which became the attention "
                f"override while the model ran, above GAG's, and did not hand them to GAG. Apply "
                f"GAG Model Patch after the node that installs it, or remove one of the two.")

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
                f"GAG: {self.family.display_name} ran without its attention reaching GAG's "
                f"attention override (this ComfyUI does not hand that attention its "
                f"transformer_options, or another node replaced the model's forward), so GAG "
                f"could not act.")
        if self.relies_on_block_info and attention_ran:
            # The model's forward sets block info by design; its absence is evidence enough.
            raise RuntimeError(
                "GAG: the model ran its attention without telling it which block it is in "
                "(ComfyUI's block_type/block_index were absent), so GAG could not act. Another "
                "node probably replaced the model's forward or its blocks. " + EASYCACHE_ADVICE)

    def _foreign_block_replace(self, options: dict, layer) -> Optional[str]:
        """Why another node's ``dit`` replace explains that ``layer``'s attention was not
        guided (it ran the block without it, e.g. SkipLayerGuidance's skip pass), or None."""
        try:
            key = (self.family.group(layer.group).dit_replace, layer.block)
        except KeyError:
            return None
        patch = options.get("patches_replace", {}).get("dit", {}).get(key)
        if patch is None or key[0] is None:
            return None
        while getattr(patch, "marks_gag_block", False):   # GAG's own marks: what they wrap
            patch = patch.previous
        if patch is None:
            return None
        return f"the 'dit' block replace {describe_override(patch)} ran it"

    def _audit(self, record: ModelCallRecord, options: dict, diffusion_model) -> None:
        """Every selected layer guided in this model call, or an error naming what took the
        calls; a shortfall a block replace explains is logged once."""
        missing = set(self.override.layers) - set(record.guided_layers)
        if not missing:
            return
        explained = {}
        for layer in missing:
            why = (dict(record.explained).get(layer)
                   or self._foreign_block_replace(options, layer))
            if why:
                explained[layer] = why
        unexplained = missing - set(explained)
        expected = len(self.override.layers)
        summary = (f"GAG guided the attention of {expected - len(missing)} of the {expected} "
                   f"selected blocks in this model call")
        if unexplained:
            now = options.get(OVERRIDE_KEY)
            if getattr(now, "root", None) is not self.override.root:
                raise RuntimeError(self._taken_message(
                    f"it guided the attention of {expected - len(missing)} of the {expected} "
                    f"selected blocks in this model call, not {_layers_text(unexplained)}",
                    options))
            declined = {layer: (q, k) for layer, q, k in record.declined
                        if layer in unexplained}
            if declined:
                shapes = ", ".join(f"{layer}: {q} queries, {k} keys"
                                   for layer, (q, k) in sorted(declined.items())[:4])
                raise RuntimeError(
                    f"{summary}: the attention calls of {_layers_text(declined)} reached GAG in "
                    f"a layout it does not guide ({shapes}; GAG guides a block's joint "
                    f"attention: its own tokens as queries and as the first keys). Another node "
                    f"changed those calls' tokens; GAG cannot guide them. Remove that node or "
                    f"GAG, and please report the combination.")
            cause = model_call_cause(diffusion_model) if diffusion_model is not None else None
            raise RuntimeError(
                f"{summary}: the attention of {_layers_text(unexplained)} never reached GAG's "
                f"attention override ("
                + (f"another node replaced the model's code: {cause}. {EASYCACHE_ADVICE}"
                   if cause else
                   f"the attention override in place is {describe_override(now)}; something "
                   f"ran those blocks without handing their attention its transformer_options, "
                   f"or computed their attention itself") + ")")
        reasons = sorted(set(explained.values()))
        warn_once(f"shortfall:{_layers_text(missing)}:{reasons}",
                  f"{summary}: {_layers_text(missing)} not guided because "
                  f"{'; '.join(reasons)}. GAG accepts this (that node chose to run those "
                  f"blocks differently in this call).")
