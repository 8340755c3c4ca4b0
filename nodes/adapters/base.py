"""The interface every architecture family implements, and the bookkeeping they share.

An adapter knows one family of diffusion models: how to recognise it from the model object,
which attention layers it has (as ``LayerRef``s), which presets make sense, and how to hook its
attention through ComfyUI's public patch points. Adding a family is adding one module with one
``Adapter`` subclass and listing it in ``nodes/adapters/__init__.py``.
"""

from __future__ import annotations

from typing import ClassVar

from ...gag_core.layer_spec import LayerRef


class Adapter:
    """Base class; subclasses set the class attributes and implement the three methods."""

    family: ClassVar[str] = ""          # short id used in messages and the front end: "unet"
    display_name: ClassVar[str] = ""    # what users call it: "SD1.5 / SDXL UNet"
    presets: ClassVar[dict[str, str]] = {}   # preset name → layer selection text; has "paper"
    modes: ClassVar[tuple[str, ...]] = ("text",)  # modes it supports; the first is "auto"

    @classmethod
    def detect(cls, model_patcher) -> bool:
        """True when this adapter handles the model behind ``model_patcher``."""
        raise NotImplementedError

    @classmethod
    def available_layers(cls, model_patcher) -> list[LayerRef]:
        """Every attention layer of this model that GAG can patch."""
        raise NotImplementedError

    @classmethod
    def install(cls, model_patcher, layers: list[LayerRef], runtime, mode: str) -> None:
        """Register GAG on ``layers`` of ``model_patcher`` (already a clone: mutate it freely)."""
        raise NotImplementedError

    @classmethod
    def uninstall(cls, model_patcher) -> int:
        """Remove GAG patches an earlier GAG node left on this clone, restoring what they wrapped;
        returns how many were removed. GAG applied twice replaces the first application."""
        raise NotImplementedError

    @classmethod
    def resolve_mode(cls, mode: str) -> str:
        if mode == "auto":
            return cls.modes[0]
        if mode not in cls.modes:
            raise ValueError(f"mode {mode!r} does not apply to {cls.display_name} models; "
                             f"valid modes: auto, {', '.join(cls.modes)}")
        return mode


def model_name(model_patcher) -> str:
    """A readable name for error messages: the model class and its config class."""
    model = getattr(model_patcher, "model", None)
    config = getattr(model, "model_config", None)
    parts = [type(model).__name__ if model is not None else type(model_patcher).__name__]
    if config is not None:
        parts.append(type(config).__name__)
    diffusion = getattr(model, "diffusion_model", None)
    if diffusion is not None:
        parts.append(type(diffusion).__name__)
    return "/".join(dict.fromkeys(parts))
