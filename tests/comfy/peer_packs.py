"""Other node packs users stack GAG with, found outside the repository like ComfyUI is.

The packs' public code is placed (never committed here) in one folder per pack under
$GAG_PEER_PACKS_DIR (default ~/comfy-packs), each under its repository name:
ComfyUI-GGUF (city96), ComfyUI-TeaCache (welltop-cn), Comfy-WaveSpeed (chengzeyi). A test that
needs a missing pack, or one that does not import on this ComfyUI, skips and says which.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import pytest

PEER_PACKS_DIR = Path(os.environ.get("GAG_PEER_PACKS_DIR", "~/comfy-packs")).expanduser()


def pack_dir(folder: str) -> Path:
    path = PEER_PACKS_DIR / folder
    if not path.is_dir():
        pytest.skip(f"{folder} not found at {path} (put its code there, or set "
                    f"GAG_PEER_PACKS_DIR to the folder that holds it)")
    return path


def import_pack_module(folder: str, submodule: str, run_init: bool = True):
    """Import ``<folder>/<submodule>.py`` of a peer pack as a submodule of the pack's package,
    so its relative imports work. ``run_init=False`` leaves the package's ``__init__`` unrun
    (for packs whose ``__init__`` also loads unrelated nodes with heavy extra dependencies)."""
    path = pack_dir(folder)
    package = "gag_peer_" + folder.replace("-", "_").lower()
    try:
        if package not in sys.modules:
            if run_init:
                spec = importlib.util.spec_from_file_location(
                    package, path / "__init__.py", submodule_search_locations=[str(path)])
            else:
                spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
            module = importlib.util.module_from_spec(spec)
            if not run_init:
                module.__path__ = [str(path)]
            sys.modules[package] = module
            try:
                if run_init:
                    spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[package]
                raise
        return importlib.import_module(f"{package}.{submodule}")
    except Exception as error:  # the pack itself does not load here
        pytest.skip(f"{folder} does not import on this ComfyUI: {type(error).__name__}: {error}")
