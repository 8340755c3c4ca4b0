"""The per-model-call ``DIFFUSION_MODEL`` wrapper of the DiT hook.

Once per call of the diffusion model it notes how many text tokens the call's attention holds
(the family's ``TextLength`` rule over the model's inputs; blocks that get no ``img_slice``
read it), opens a ``ModelCallRecord`` that GAG's attention override fills in, and afterwards
checks that GAG could act, so that GAG is never silently off (for example when another node
replaced the model's forward).
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch

from .diagnose import EASYCACHE_ADVICE, model_call_cause
from .shared import SharedObject

__all__ = ["TEXT_TOKENS_KEY", "CALL_KEY", "WRAPPER_KEY", "ModelCallRecord", "ModelCallWrapper",
           "model_inputs"]

TEXT_TOKENS_KEY = "gag_text_tokens"   # transformer_options: text tokens of this model call
CALL_KEY = "gag_model_call"           # transformer_options: this model call's ModelCallRecord
WRAPPER_KEY = "gag_joint"             # the key GAG's DIFFUSION_MODEL wrapper is filed under


class ModelCallRecord(SharedObject):
    """Per model call: how many attention calls reached GAG, and how many knew their block."""

    __slots__ = ("attention_calls", "calls_with_block")

    def __init__(self):
        self.attention_calls = 0
        self.calls_with_block = 0


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


class ModelCallWrapper(SharedObject):
    """``DIFFUSION_MODEL`` wrapper: notes the text length of this model call for the blocks
    that get no ``img_slice``, and afterwards checks that GAG's override could act: that its
    attention calls could tell their block, or, where every call is guided (``all_blocks``),
    that attention reached it at all."""

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
        inputs = model_inputs(executor, args, kwargs)
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
