"""How the bench scripts reach ComfyUI and this pack: the finder and the package import that
the tests use (tests/conftest.py), so scripts and tests run the same code the same way."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))

import conftest  # noqa: E402  (needs the path above)


def find_comfyui() -> Path:
    """The ComfyUI checkout, or exit with where it was looked for."""
    if conftest.COMFYUI_PATH is None:
        sys.exit(conftest.SKIP_NO_COMFY + "; set COMFYUI_PATH")
    return conftest.COMFYUI_PATH


def import_api(cpu: bool):
    """ComfyUI imported (CPU-only when ``cpu``), then this repository as a package, as ComfyUI's
    loader imports it; returns the pack's ``nodes.api`` module."""
    find_comfyui()
    pack = conftest.import_pack(cpu=cpu)
    return importlib.import_module(f"{pack.__name__}.nodes.api")
