"""What the running ComfyUI offers, answered in one place for the whole pack.

Every other module asks here instead of probing ComfyUI itself (``hasattr``, ``try: import``),
so the list of ComfyUI features GAG depends on, and what it does without each, is this file.
ComfyUI is imported only inside the functions: importing this module never imports ComfyUI.
"""

from __future__ import annotations

import sys
from typing import Optional

# The transformer_options key ComfyUI's ``wrap_attn`` reads the attention override from. Core
# nodes (ModelAttentionBackend, BlockSparseAttention) and other packs write the same key.
OVERRIDE_KEY = "optimized_attention_override"

__all__ = ["OVERRIDE_KEY", "has_attention_override", "wrapper_type", "diffusion_model_wrapper_type",
           "outer_sample_wrapper_type", "patcher_has_wrappers", "model_sets_block_info",
           "blocks_get_transformer_options",
           "default_attention_is_memory_efficient", "prompt_server"]


def has_attention_override() -> bool:
    """Whether ComfyUI's attention functions call ``transformer_options[
    "optimized_attention_override"]`` (``wrap_attn``, ComfyUI 0.3.64+)."""
    try:
        import comfy.ldm.modules.attention as attention
    except ImportError:
        return False
    return hasattr(attention, "wrap_attn")


def wrapper_type(name: str) -> Optional[str]:
    """The key of ModelPatcher wrapper type ``name`` (e.g. "DIFFUSION_MODEL"), or None when
    this ComfyUI has no such wrappers."""
    try:
        from comfy.patcher_extension import WrappersMP
    except ImportError:
        return None
    return getattr(WrappersMP, name, None)


def diffusion_model_wrapper_type() -> Optional[str]:
    """Wraps each call of the diffusion model (one denoiser call, one cond/uncond batch)."""
    return wrapper_type("DIFFUSION_MODEL")


def outer_sample_wrapper_type() -> Optional[str]:
    """Wraps one whole ``CFGGuider.sample`` call (one sampling run)."""
    return wrapper_type("OUTER_SAMPLE")


def patcher_has_wrappers(model_patcher) -> bool:
    """Whether this ModelPatcher takes keyed wrappers (``add_wrapper_with_key`` and
    ``remove_wrappers_with_key``)."""
    return (hasattr(model_patcher, "add_wrapper_with_key")
            and hasattr(model_patcher, "remove_wrappers_with_key"))


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
    install, that needs no model call.
    """
    constants: set = set()
    for klass in type(diffusion_model).__mro__:
        for name in ("forward_orig", "_forward", "forward"):
            code = getattr(klass.__dict__.get(name), "__code__", None)
            if code is not None:
                constants |= _code_constants(code)
    return {"block_type", "block_index"} <= constants


def _names_in_code(code) -> set:
    """The strings among a code object's constants and its nested code's, including those in
    constant tuples (the keyword names of a call, the keys of a dict literal)."""
    found = set()
    for const in code.co_consts:
        if isinstance(const, str):
            found.add(const)
        elif isinstance(const, tuple):
            found |= {item for item in const if isinstance(item, str)}
        elif hasattr(const, "co_consts"):
            found |= _names_in_code(const)
    return found


def blocks_get_transformer_options(diffusion_model) -> bool:
    """Whether the model's ``forward_orig`` (the one its class runs) hands its blocks and their
    ``dit`` replaces ``transformer_options`` at all: the string appears in its code as a keyword
    or a dict key. False for Wan 2.2 S2V on ComfyUI 0.3.64, whose blocks get none (0.33 passes
    them). True where there is no forward_orig to read (other layouts are not judged here).
    A reading of code, so the DiT hook asks it only of a subclass's own forward, never of the
    forward a family's tests ran (a new code style could fool it)."""
    code = getattr(getattr(type(diffusion_model), "forward_orig", None), "__code__", None)
    return code is None or "transformer_options" in _names_in_code(code)


def default_attention_is_memory_efficient() -> bool:
    """Whether ComfyUI's own attention function (what runs without an override) is a
    memory-efficient one, i.e. not the quadratic ``attention_basic``."""
    try:
        import comfy.ldm.modules.attention as attention
    except ImportError:
        return True
    basic = getattr(attention, "attention_basic", None)
    return basic is None or attention.optimized_attention is not basic


def prompt_server():
    """ComfyUI's running PromptServer, or None (scripts and tests sample without one). Looked
    up without importing ComfyUI's server module, which would start nothing but load aiohttp."""
    module = sys.modules.get("server")
    server_class = getattr(module, "PromptServer", None) if module is not None else None
    return getattr(server_class, "instance", None)
