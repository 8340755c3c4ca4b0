"""How the bench scripts reach ComfyUI and this pack (on their own; the test suite has its own
finder in tests/conftest.py).

The ComfyUI checkout is, in this order: the script's ``--comfyui PATH``, ``$COMFYUI_PATH``, the
folder two levels above this pack (when it sits in ComfyUI/custom_nodes/<pack>), ``~/ComfyUI``.
Without one the script exits, saying where it looked. The pack is imported as the package
``comfyui_gag`` from this repository, the way ComfyUI's loader imports a custom-node folder.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "comfyui_gag"


def add_comfyui_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--comfyui", type=Path, default=None, metavar="PATH",
                        help="ComfyUI checkout (default: $COMFYUI_PATH, ../.. of this pack, "
                             "~/ComfyUI)")


def _is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_patcher.py").is_file() and (path / "main.py").is_file()


def comfyui_path(explicit: os.PathLike | str | None = None) -> Path:
    """The ComfyUI checkout to use, or exit with where it was looked for."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not _is_comfyui(path):
            sys.exit(f"--comfyui {path}: not a ComfyUI checkout (no comfy/model_patcher.py and "
                     "main.py there)")
        return path.resolve()
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(("$COMFYUI_PATH", Path(os.environ["COMFYUI_PATH"]).expanduser()))
    candidates += [("two folders above the pack", REPO_ROOT.parents[1]),
                   ("~/ComfyUI", Path.home() / "ComfyUI")]
    for _, path in candidates:
        if _is_comfyui(path):
            return path.resolve()
    looked = "; ".join(f"{what}: {path}" for what, path in candidates)
    sys.exit(f"ComfyUI not found ({looked}). Pass --comfyui PATH or set COMFYUI_PATH.")


def import_comfy(cpu: bool = True, path: os.PathLike | str | None = None) -> Path:
    """ComfyUI on sys.path and imported once, CPU-only when ``cpu`` (then no GPU driver is looked
    for); returns its folder."""
    root = comfyui_path(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.cli_args
    comfy.cli_args.args.cpu = cpu
    import comfy.model_management  # noqa: F401  (after the CPU flag)
    return root


def import_pack(cpu: bool = True, path: os.PathLike | str | None = None):
    """ComfyUI, then this repository as the package ``comfyui_gag``; returns the package."""
    import_comfy(cpu, path)
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


def import_api(cpu: bool, path: os.PathLike | str | None = None):
    """The pack's ``nodes.api`` module (ComfyUI and the pack imported first)."""
    pack = import_pack(cpu, path)
    return importlib.import_module(f"{pack.__name__}.nodes.api")
