"""The pack's import graph: no cycles, function-level imports included, and the layers import
in one direction (nodes → adapters → gag_core; gag_core never imports ComfyUI or nodes; the
family table imports no hook).

Read from the source with ``ast`` (nothing is imported), so these run without ComfyUI.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# What ships as the pack: the top-level __init__, gag_core/ and nodes/ (tests, bench and the
# workflow tools are scripts around it).
PACKAGE_DIRS = ("gag_core", "nodes")


def package_modules(root: Path, dirs=PACKAGE_DIRS) -> dict[str, Path]:
    """Module name (``nodes.adapters.dit_hook``; a package by its own name; the top-level
    ``__init__`` as "") → file."""
    modules = {}
    if (root / "__init__.py").is_file():
        modules[""] = root / "__init__.py"
    for folder in dirs:
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The pack modules ``name`` imports anywhere in its file (module level or inside a
    function), relative imports resolved. ``from X import y`` counts as importing ``X.y`` where
    that is a module, else ``X``. Importing a submodule also runs its parents' ``__init__``;
    that implicit edge is Python's, not the code's, and is not counted."""
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package else name.split(".")[:-1]
    package = [part for part in package if part]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGE_DIRS and alias.name in modules:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = len(package) - (node.level - 1)
                assert keep >= 0, f"{path}: relative import above the pack"
                base = _join(".".join(package[:keep]), node.module or "")
            elif (node.module or "").split(".")[0] in PACKAGE_DIRS:
                base = node.module
            else:
                continue  # torch, comfy, the standard library, …
            for alias in node.names:
                target = _join(base, alias.name)
                found.add(target if target in modules else base)
    found.discard(name)
    return {target for target in found if target in modules}


def import_graph(root: Path = REPO_ROOT, dirs=PACKAGE_DIRS) -> dict[str, set[str]]:
    modules = package_modules(root, dirs)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]):
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_pack_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(name or "<pack>" for name in cycle)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    """The check itself: a cycle hidden in a function body, through a relative import of a
    package's module, is reported."""
    (tmp_path / "nodes" / "sub").mkdir(parents=True)
    (tmp_path / "nodes" / "__init__.py").write_text("")
    (tmp_path / "nodes" / "sub" / "__init__.py").write_text("")
    (tmp_path / "nodes" / "table.py").write_text("from .sub import hook\n")
    (tmp_path / "nodes" / "sub" / "hook.py").write_text(
        "import torch\n\ndef name():\n    from ..table import x\n    return x\n")
    graph = import_graph(tmp_path, ("nodes",))
    assert graph["nodes.table"] == {"nodes.sub.hook"}
    assert graph["nodes.sub.hook"] == {"nodes.table"}
    assert find_cycle(graph) in (["nodes.sub.hook", "nodes.table", "nodes.sub.hook"],
                                 ["nodes.table", "nodes.sub.hook", "nodes.table"])


def test_layers_import_in_one_direction():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("gag_core"):
            assert not {t for t in targets if not t.startswith("gag_core")}, (
                f"{name} (pure torch) imports {targets}")
        if name.startswith("nodes.adapters"):
            upward = {t for t in targets if t.startswith("nodes") and
                      not t.startswith("nodes.adapters")}
            assert not upward, f"{name} imports the node layer above it: {upward}"
    hooks = {"nodes.adapters.dit_hook", "nodes.adapters.unet_hook", "nodes.adapters.dit_replace",
             "nodes.adapters.model_call"}
    assert not graph["nodes.adapters.families"] & hooks, "the family table is data: no hooks"
    assert not graph["nodes.adapters.install_plan"] & hooks, "the plan is pure: no hooks"


def test_gag_core_never_imports_comfyui():
    for name, path in package_modules(REPO_ROOT, ("gag_core",)).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            assert not any(n.split(".")[0] in ("comfy", "comfy_extras", "comfy_api")
                           for n in names), f"{name} imports ComfyUI"


def test_no_module_name_means_two_things():
    """gag_core/ and nodes/ name their modules by role: no file name is in both."""
    core = {p.stem for p in (REPO_ROOT / "gag_core").rglob("*.py")} - {"__init__"}
    glue = {p.stem for p in (REPO_ROOT / "nodes").rglob("*.py")} - {"__init__"}
    assert not core & glue, f"modules named alike in gag_core/ and nodes/: {sorted(core & glue)}"
