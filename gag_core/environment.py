"""gag_core's environment switches (GAG_BACKEND, GAG_TORCH_POLICY), read the same way."""

from __future__ import annotations

import os

__all__ = ["choice"]


def choice(variable: str, allowed: tuple[str, ...]) -> str:
    """The value of environment variable ``variable``, lower-cased, or ``allowed[0]`` (the
    default) when it is unset or blank; ValueError naming the allowed values for anything else.
    Read on every call, so a change made while ComfyUI runs takes effect at the next call."""
    value = os.environ.get(variable, "").strip().lower() or allowed[0]
    if value not in allowed:
        raise ValueError(f"environment variable {variable} must be one of {', '.join(allowed)} "
                         f"(or unset); got {os.environ.get(variable)!r}")
    return value
