"""Shared test set-up.

tests/core/  need torch only.
tests/comfy/ need a real ComfyUI checkout, found (in this order) at $COMFYUI_PATH, two folders
             above this pack when it sits in ComfyUI/custom_nodes/<pack>, or ~/ComfyUI. Without
             one they skip, saying where they looked.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "comfyui_gag"  # the name tests import the pack under; ComfyUI uses the folder path

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # gag_core is importable on its own

# The tests run tiny tensors, where thread start-up and contention cost far more than the
# arithmetic saves: one thread made tiny-model sampling 50–90× faster on busy 2-core machines.
import torch  # noqa: E402
torch.set_num_threads(1)


def _is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_patcher.py").is_file() and (path / "main.py").is_file()


def comfyui_candidates() -> list[Path]:
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]).expanduser())
    candidates.append(REPO_ROOT.parents[1])
    candidates.append(Path.home() / "ComfyUI")
    return candidates


def find_comfyui() -> Path | None:
    for path in comfyui_candidates():
        if _is_comfyui(path):
            return path.resolve()
    return None


COMFYUI_PATH = find_comfyui()


def comfyui_version(path: Path | None = COMFYUI_PATH) -> str | None:
    """The version a ComfyUI checkout declares in its comfyui_version.py (None if unreadable)."""
    import re
    try:
        text = (path / "comfyui_version.py").read_text(encoding="utf-8")
    except (OSError, TypeError):
        return None
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return found.group(1) if found else None


COMFYUI_VERSION = comfyui_version()
SKIP_NO_COMFY = ("ComfyUI not found (looked at $COMFYUI_PATH, the folder two levels above the "
                 "pack, ~/ComfyUI: " + ", ".join(str(p) for p in comfyui_candidates()) + ")")


def import_comfy(cpu: bool = True):
    """Put ComfyUI on sys.path, import it once (on the CPU unless told otherwise: the tests never
    look for a GPU driver; GPU benchmarks pass cpu=False); returns the ComfyUI path."""
    if COMFYUI_PATH is None:
        pytest.skip(SKIP_NO_COMFY)
    if str(COMFYUI_PATH) not in sys.path:
        sys.path.insert(0, str(COMFYUI_PATH))
    import comfy.cli_args
    comfy.cli_args.args.cpu = cpu
    import comfy.model_management  # noqa: F401  (after the CPU flag)
    return COMFYUI_PATH


def import_pack(cpu: bool = True):
    """Import this repository as a package (as ComfyUI's loader does) under PACK_MODULE."""
    import_comfy(cpu)
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


DIGITS = REPO_ROOT / "bench" / "digits"


def import_digits_evaluate(weights: str, trainer: str):
    """bench/digits/evaluate.py (the digits study's sampler and judge) as a module, after checking
    that the trained ``weights`` file it needs is shipped (else fail, naming ``trainer``)."""
    if not (DIGITS / weights).is_file():
        pytest.fail(f"bench/digits/{weights} is missing (run bench/digits/{trainer})")
    sys.path.insert(0, str(DIGITS))  # evaluate.py imports digits_model from its own folder
    spec = importlib.util.spec_from_file_location("bench_digits_evaluate", DIGITS / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# The pack's modules that tests reach by name, in one place: when a module moves or is renamed,
# this table changes and the tests do not. Role → module inside the pack.
PACK_MODULES = {
    "api": "nodes.api",                      # apply_gag and the family lookups the nodes use
    "families": "nodes.adapters",            # the family table and the hooks' layer lists
    "family_table": "nodes.adapters.families",  # the table module itself (matching internals)
    "dit_hook": "nodes.adapters.dit_hook",   # the DiT attention override
    "dit_replace": "nodes.adapters.dit_replace",  # ComfyUI 0.3.64's block-replace marks
    "model_call": "nodes.adapters.model_call",    # the per-model-call wrapper
    "comfy_compat": "nodes.adapters.comfy_compat",  # what the running ComfyUI offers
    "runtime": "nodes.guidance",             # GuidanceRuntime
    "settings": "nodes.settings",            # GAGSettings
    "core": "gag_core",                      # the math (pure torch)
    "layer_spec": "gag_core.layer_spec",     # LayerRef
}


def pack_module(role: str):
    """The pack's module for ``role`` (see PACK_MODULES), the pack imported as ComfyUI does."""
    import_pack()
    return importlib.import_module(f"{PACK_MODULE}.{PACK_MODULES[role]}")


def record_guided_calls(monkeypatch, dit_hook, entry) -> list:
    """Spy on the DiT hook for one test: every call that runs GAG
    (JointAttentionOverride.guide) still runs, and appends ``entry(override, layer, call)`` to
    the returned list."""
    hits = []
    original = dit_hook.JointAttentionOverride.guide

    def spy(self, layer, call, *args):
        hits.append(entry(self, layer, call))
        return original(self, layer, call, *args)

    monkeypatch.setattr(dit_hook.JointAttentionOverride, "guide", spy)
    return hits


def rel_change(a, b) -> float:
    """‖a − b‖ / ‖b‖: how much ``a`` differs from the reference ``b``."""
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="session")
def family_table():
    """nodes.adapters: the family table (FAMILIES, find_family, family_by_id) and available_layers."""
    return pack_module("families")


@pytest.fixture(scope="session")
def api():
    """nodes.api: apply_gag and the family lookups the nodes use."""
    return pack_module("api")


@pytest.fixture(scope="session")
def dit_hook():
    """nodes.adapters.dit_hook: the DiT attention override."""
    return pack_module("dit_hook")


@pytest.fixture(scope="session")
def comfy_path():
    return import_comfy()


@pytest.fixture(scope="session")
def pack():
    return import_pack()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/comfy/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.comfy)


def pytest_configure(config):
    config.addinivalue_line("markers", "comfy: needs a real ComfyUI checkout")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")


def pytest_terminal_summary(terminalreporter):
    stats = terminalreporter.stats
    def count(kind):
        return sum(1 for r in stats.get(kind, []) if "tests/comfy/" in r.nodeid)
    where = (f"ComfyUI {COMFYUI_VERSION or '(unknown version)'} at {COMFYUI_PATH}"
             if COMFYUI_PATH else "ComfyUI NOT FOUND")
    terminalreporter.write_line(
        f"ComfyUI integration tests on {where}: {count('passed')} passed, "
        f"{count('failed')} failed, {count('error')} errors, {count('skipped')} skipped")
