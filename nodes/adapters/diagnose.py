"""Why GAG could not reach a block's attention: naming the node that replaced the model's code.

Step caches such as TeaCache and First Block Cache (Comfy-WaveSpeed) swap in their own copy of
a model's forward (``forward_orig`` on FLUX) or of its block lists for the length of each model
call. Their copies call the blocks, and the ``dit`` block replaces, without
``transformer_options``, so no attention patch can reach the attention inside. These helpers
find such a replacement from what ComfyUI hands GAG — a block replace's ``extra`` dict, the
diffusion model, the ModelPatcher — and say which node it was and what works instead. They
read only public attributes and never change anything.

Code counts as ComfyUI's own when its module is ``comfy.*`` or ``comfy_extras.*``; anything
else (a custom node pack) is named by its folder.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["code_origin", "is_comfy_code", "known_step_cache", "replaced_model_code",
           "step_cache_wrapper", "block_call_cause", "model_call_cause",
           "missing_options_message", "unconsumed_mark_cause", "EASYCACHE_ADVICE",
           "describe_override", "wrapped_model_refusal"]

# (words that appear in a pack's folder or file name, lower case) → what users call the node.
KNOWN_STEP_CACHES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("teacache",), "TeaCache"),
    (("wavespeed", "fbcache", "first_block_cache"), "First Block Cache from Comfy-WaveSpeed"),
)

EASYCACHE_ADVICE = ("Remove that node, or cache steps with ComfyUI's own EasyCache node "
                    "instead (it skips whole model calls through ComfyUI's "
                    "wrappers and works with GAG, in either order).")

# Attributes through which ComfyUI's diffusion models run; an instance attribute of the same
# name shadows the class's method.
_FORWARD_NAMES = ("forward_orig", "forward", "_forward")


def _function_of(fn: Any) -> Optional[Callable]:
    """The plain function behind a callable (bound method, functools.wraps chain, partial,
    callable object), or None."""
    fn = getattr(fn, "func", fn)           # functools.partial
    fn = getattr(fn, "__func__", fn)       # bound method
    try:
        fn = inspect.unwrap(fn)
    except ValueError:
        pass
    if inspect.isfunction(fn):
        return fn
    call = getattr(type(fn), "__call__", None)
    return call if inspect.isfunction(call) else None


def is_comfy_code(fn: Any) -> bool:
    """Whether a callable is defined in ComfyUI itself (``comfy.*`` / ``comfy_extras.*``)."""
    function = _function_of(fn)
    module = getattr(function, "__module__", "") or ""
    return module.split(".", 1)[0] in ("comfy", "comfy_extras")


def _pack_folder(filename: str) -> str:
    """``…/custom_nodes/<pack>/x.py`` → ``<pack>/x.py``; elsewhere the file's folder and name."""
    path = Path(filename)
    parts = path.parts
    if "custom_nodes" in parts:
        rest = parts[parts.index("custom_nodes") + 1:]
        if rest:
            return "/".join(rest[:1] + rest[-1:]) if len(rest) > 1 else rest[0]
    return f"{path.parent.name}/{path.name}"


def code_origin(fn: Any) -> Optional[str]:
    """Where a callable's code comes from, for messages: ``'teacache_flux_forward in
    ComfyUI-TeaCache/nodes.py'``; None for ComfyUI's own code or when it cannot be told."""
    if is_comfy_code(fn):
        return None
    function = _function_of(fn)
    if function is None:
        return None
    name = function.__qualname__.replace(".<locals>", "")
    return f"{name} in {_pack_folder(function.__code__.co_filename)}"


def known_step_cache(origin: Optional[str]) -> Optional[str]:
    """The step-cache pack an origin (from ``code_origin``) belongs to, if it is a known one."""
    if not origin:
        return None
    where = origin.lower()
    for words, name in KNOWN_STEP_CACHES:
        if any(word in where for word in words):
            return name
    return None


def _describe(origin: str) -> str:
    pack = known_step_cache(origin)
    return f"{origin} ({pack}, a step cache)" if pack else origin


def replaced_model_code(diffusion_model) -> list[str]:
    """What another node replaced on this diffusion model right now, e.g.
    ``["forward_orig replaced by teacache_flux_forward in ComfyUI-TeaCache/nodes.py (TeaCache, a step
    cache)"]``: instance attributes that shadow the class's forward methods, and block lists
    (``…blocks`` children) that are not ComfyUI's or torch's containers. Step caches make
    these replacements only while a model call runs, so call this during one (from a block
    replace or a DIFFUSION_MODEL wrapper)."""
    found = []
    if diffusion_model is None:
        return found
    own = getattr(diffusion_model, "__dict__", {})
    for name in _FORWARD_NAMES:
        if name in own and callable(own[name]) and hasattr(type(diffusion_model), name):
            origin = code_origin(own[name]) or "another function"
            found.append(f"{name} replaced by {_describe(origin)}")
    for name, child in getattr(diffusion_model, "_modules", {}).items():
        if not name.endswith("blocks") or child is None:
            continue
        module = type(child).__module__.split(".", 1)[0]
        if module not in ("torch", "comfy"):
            try:
                where = _pack_folder(inspect.getfile(type(child)))
            except TypeError:  # a class without a source file
                where = type(child).__module__
            origin = f"{type(child).__qualname__} in {where}"
            found.append(f"{name} replaced by {_describe(origin)}")
    return found


def step_cache_wrapper(model_patcher) -> Optional[str]:
    """The known step cache whose model-function wrapper is set on this ModelPatcher (TeaCache
    and First Block Cache both install one), described for a message; else None. Lets a
    caller warn before sampling, when the cache node was applied before GAG."""
    options = getattr(model_patcher, "model_options", None) or {}
    wrapper = options.get("model_function_wrapper")
    origin = code_origin(wrapper) if wrapper is not None else None
    return _describe(origin) if known_step_cache(origin) else None


def block_call_cause(extra: Any, diffusion_model=None) -> Optional[str]:
    """Why a block call may lack its options: the function that called the block replace when
    it is not ComfyUI's (told by ``extra["original_block"]``, the closure that function defined
    around the block), and what another node replaced on the diffusion model. None when
    ComfyUI's own forward made the call, i.e. the ComfyUI version is the cause."""
    causes = []
    original = extra.get("original_block") if isinstance(extra, dict) else None
    function = _function_of(original) if original is not None else None
    if function is not None and not is_comfy_code(function):
        names = function.__qualname__.replace(".<locals>", "").split(".")
        caller = ".".join(names[:-1]) or names[-1]
        where = _pack_folder(function.__code__.co_filename)
        causes.append(f"the block was called by {_describe(f'{caller} in {where}')}")
    for replaced in replaced_model_code(diffusion_model):
        by = replaced.split(" replaced by ", 1)[-1]
        if not any(by in cause for cause in causes):
            causes.append(replaced)
    return "; ".join(causes) or None


def model_call_cause(model) -> Optional[str]:
    """For a check after a model call in which guided layers did not run: what another node
    replaced, from a ModelPatcher or a diffusion model (call it while the model call runs, e.g.
    in a DIFFUSION_MODEL wrapper, to see replacements that last only that long). None when
    nothing foreign is found."""
    diffusion_model = getattr(getattr(model, "model", None), "diffusion_model", None)
    if diffusion_model is None and not hasattr(model, "model_options"):
        diffusion_model = model
    causes = replaced_model_code(diffusion_model)
    wrapper = step_cache_wrapper(model)
    if wrapper is not None and not any(wrapper in cause for cause in causes):
        causes.append(f"a model wrapper from {wrapper}")
    return "; ".join(causes) or None


def missing_options_message(layer: Any, extra: Any, diffusion_model=None) -> str:
    """The error for a ``dit`` block replace called without ``transformer_options``: names the
    node that replaced the model's forward when that is the cause, else the ComfyUI version."""
    cause = block_call_cause(extra, diffusion_model)
    if cause is None:
        return (f"GAG: this ComfyUI version does not pass transformer_options through the "
                f"'dit' block replace of {layer}, so GAG cannot reach the block's attention. "
                f"Update ComfyUI (0.3.64 or later) or remove the GAG node.")
    return (f"GAG cannot reach the attention of {layer}: another node replaced the diffusion "
            f"model's forward — {cause} — and its copy calls the blocks without "
            f"transformer_options, which GAG (like every attention patch) needs to reach the "
            f"attention inside. Your ComfyUI version is not the cause. {EASYCACHE_ADVICE}")


def unconsumed_mark_cause(extra: Any, diffusion_model=None) -> str:
    """The likely cause when a marked block's attention never saw GAG's mark, as a sentence."""
    cause = block_call_cause(extra, diffusion_model)
    if cause is not None:
        return (f"another node replaced the model's code ({cause}) and runs the block without "
                f"handing it transformer_options. {EASYCACHE_ADVICE}")
    return ("this ComfyUI version does not hand transformer_options to the attention call of "
            "this block, or an attention backend bypasses optimized_attention_override.")


# ComfyUI's own attention overrides, by (module, function qualname without "<locals>"): what a
# user calls the node that installs them.
KNOWN_CORE_OVERRIDES: dict[tuple[str, str], str] = {
    ("comfy.model_patcher", "ModelPatcher.set_model_optimized_attention.optimized_attention_override"):
        "ComfyUI's ModelAttentionBackend node (ModelPatcher.set_model_optimized_attention)",
    ("comfy_extras.nodes_sparse_attention", "make_attention_override.override"):
        "ComfyUI's BlockSparseAttention node",
}


def describe_override(fn: Any) -> str:
    """An attention override for messages: its function and where it comes from, e.g.
    ``'optimized_attention_override (ComfyUI's ModelAttentionBackend node …)'`` or
    ``'nag_override in ComfyUI-NAG/nodes.py'``."""
    function = _function_of(fn)
    if function is None:
        return f"an override of type {type(fn).__qualname__}"
    name = function.__qualname__.replace(".<locals>", "")
    if is_comfy_code(function):
        node = KNOWN_CORE_OVERRIDES.get((function.__module__, name))
        return (f"{name.rsplit('.', 1)[-1]} ({node})" if node
                else f"{name} in ComfyUI's {function.__module__}")
    return code_origin(function) or name


# (words in a module path or a custom-node folder of a diffusion model's code, lower case) →
# the pack, why GAG cannot act inside its models, and the family ids whose port of it hands
# attention its transformer_options (those are guided, and audited per model call like any).
WRAPPED_MODEL_PACKS: tuple[tuple[tuple[str, ...], str, str, tuple[str, ...]], ...] = (
    (("nunchaku",), "Nunchaku",
     "Nunchaku's quantized models run their blocks in fused CUDA kernels (FLUX.1) or call "
     "attention without transformer_options (Qwen-Image), so no attention patch — GAG's "
     "included — can reach their attention", ("zimage",)),
)


def _code_place(cls: type) -> str:
    """A class's module path and, for a custom node pack, its folder (never the rest of the
    file path: the user's own folder names say nothing about the code)."""
    try:
        where = inspect.getfile(cls)
    except TypeError:  # a class without a source file
        where = ""
    folder = _pack_folder(where) if "custom_nodes" in Path(where).parts else ""
    return f"{cls.__module__} {folder}".lower()


def wrapped_model_refusal(diffusion_model, family_id: Optional[str] = None,
                          modules_to_scan: int = 64) -> Optional[str]:
    """Why GAG refuses a model another pack wrapped, naming the pack (Nunchaku), or None.

    Read from the module path (and custom-node folder) of the diffusion model's class and of
    the first ``modules_to_scan`` submodules' classes (a wrapper may hold the pack's model
    inside a ComfyUI class). ``family_id``: the family the model matched, if any; a family the
    pack's port leaves reachable is not refused."""
    if diffusion_model is None:
        return None
    classes = [type(diffusion_model)]
    modules = getattr(diffusion_model, "modules", None)
    if callable(modules):
        for i, module in enumerate(modules()):
            if i >= modules_to_scan:
                break
            classes.append(type(module))
    for cls in dict.fromkeys(classes):
        place = _code_place(cls)
        for words, pack, why, reachable in WRAPPED_MODEL_PACKS:
            if any(word in place for word in words) and family_id not in reachable:
                return (f"GAG cannot guide this {pack} model ({cls.__qualname__} from "
                        f"{cls.__module__}): {why}. Use the model's non-{pack} checkpoint "
                        f"with GAG, or sample without GAG.")
    return None
