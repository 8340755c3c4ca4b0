"""Installing the pack the way a user does, and the Comfy Registry's rules.

A fresh ComfyUI (tests/comfy/comfy_server.py: a temporary base directory with this pack copied
into custom_nodes/comfyui-gag, as a clone or the Registry would put it) must start without an
import error from the pack and list its nodes; requirements.txt must need nothing ComfyUI does not
already bring; pyproject.toml must satisfy the Registry's specification (parsed with tomllib and
with ComfyUI's own comfy_config parser); and no module may evaluate code or install packages at
run time.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

from comfy_server import PACK_FOLDER_NAME, REPO_ROOT, find_comfyui, shared_server

GAG_NODES = {"GAGModelPatch": "GAG Model Patch", "GAGLayers": "GAG Layers",
             "GAGSparsity": "GAG Sparsity", "GAGSchedule": "GAG Schedule"}
# Packages ComfyUI installs itself, in builds matched to the user's GPU; a custom node that asks
# for them again (unpinned, or pinned differently) can replace a working CUDA build.
HEAVY = {"torch", "torchvision", "torchaudio", "xformers", "triton", "tensorflow", "jax",
         "jaxlib", "onnxruntime", "onnxruntime-gpu", "opencv-python", "bitsandbytes"}
# Folders whose Python never runs inside a user's ComfyUI but ships in the clone; they obey the
# same rules anyway, except that the test helpers may start processes (never pip).
SOURCE_FILES = sorted(p for p in REPO_ROOT.rglob("*.py")
                      if not {".git", "__pycache__", ".ci"} & set(p.relative_to(REPO_ROOT).parts))


def requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


@pytest.fixture(scope="session")
def install_server():
    # The same arguments as the front-end tests use, so the session starts one such server.
    with shared_server(frontend=True) as server:
        yield server


# --- requirements and pyproject -------------------------------------------------------------

def test_requirements_txt_adds_nothing_heavy():
    from packaging.requirements import Requirement
    path = REPO_ROOT / "requirements.txt"
    assert path.is_file(), "ComfyUI-Manager and the Registry look for requirements.txt"
    requirements = [Requirement(line) for line in requirement_lines(path)]  # raises if invalid
    heavy = [str(r) for r in requirements if r.name.lower() in HEAVY]
    assert not heavy, f"requirements.txt asks for packages ComfyUI provides: {heavy}"
    for requirement in requirements:
        assert requirement.specifier, f"{requirement} is unpinned"
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(map(str, requirements)) == sorted(str(Requirement(d)) for d in declared), (
        "pyproject.toml [project].dependencies and requirements.txt disagree")


def test_pyproject_meets_the_registry_specification():
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project, comfy = config["project"], config["tool"]["comfy"]
    name = project["name"]
    # Registry: < 100 characters; letters, digits, '-', '_', '.'; no two special characters in
    # a row; starts with a letter.
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", name)
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "version must be X.Y.Z"
    assert project["description"].strip()
    assert project["urls"]["Repository"].startswith("https://")
    license_entry = project["license"]
    if "file" in license_entry:
        assert (REPO_ROOT / license_entry["file"]).is_file()
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"]), comfy["PublisherId"]
    assert comfy["DisplayName"].strip()
    icon = comfy.get("Icon", "")
    assert icon == "" or re.fullmatch(r"https://\S+\.(svg|png|jpe?g|gif)", icon), icon
    requires = comfy.get("requires-comfyui")
    if requires:
        assert Version("0.3.64") in SpecifierSet(requires), "the tested ComfyUI must qualify"


def test_comfyui_parses_pyproject():
    comfyui = find_comfyui()
    if str(comfyui) not in sys.path:
        sys.path.insert(0, str(comfyui))
    from comfy_config import config_parser
    parsed = config_parser.extract_node_configuration(str(REPO_ROOT))
    raw = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert parsed.project.name == raw["project"]["name"]
    assert parsed.project.version == raw["project"]["version"]
    assert parsed.project.urls.repository == raw["project"]["urls"]["Repository"]
    assert parsed.tool_comfy.publisher_id == raw["tool"]["comfy"]["PublisherId"]
    assert parsed.tool_comfy.display_name == raw["tool"]["comfy"]["DisplayName"]
    assert parsed.project.supported_comfyui_version == raw["tool"]["comfy"].get(
        "requires-comfyui", "")


# --- Registry code rules --------------------------------------------------------------------

def _pip_in(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str)
               and re.search(r"\bpip\b|ensurepip", n.value) for n in ast.walk(node))


def code_rule_violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            dotted = (f"{func.value.id}.{func.attr}" if isinstance(func, ast.Attribute)
                      and isinstance(func.value, ast.Name) else None)
            if name in ("eval", "exec", "compile", "__import__"):
                found.append(f"{name}() at line {node.lineno}")
            if (dotted and dotted.split(".")[0] in ("subprocess", "os", "pip")
                    and (dotted.startswith("pip.") or _pip_in(node))):
                found.append(f"{dotted}(… pip …) at line {node.lineno}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if any(m and m.split(".")[0] in ("pip", "ensurepip") for m in modules):
                found.append(f"imports pip at line {node.lineno}")
    return found


def test_no_eval_exec_or_runtime_pip():
    problems = [f"{p.relative_to(REPO_ROOT)}: {v}" for p in SOURCE_FILES
                for v in code_rule_violations(p)]
    assert not problems, "\n".join(problems)


def test_code_rule_scan_catches_violations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import subprocess, sys\n"
                   "eval('1')\n"
                   "exec('x = 1')\n"
                   "subprocess.run([sys.executable, '-m', 'pip', 'install', 'x'])\n"
                   "import pip\n"
                   "model.eval()\n")
    found = code_rule_violations(bad)
    assert len(found) == 4, found  # model.eval() (torch) is not the builtin


# --- a fresh ComfyUI with the pack installed ------------------------------------------------

def startup_log(log: str) -> str:
    """The part of a server log written while loading, before it starts serving: later lines
    belong to whatever the (shared) server ran since."""
    return log.split("Starting server", 1)[0]


def pack_import_problems(log: str, pack_dir: str) -> list[str]:
    """Lines of a ComfyUI start-up log that say the pack at ``pack_dir`` failed to load."""
    lines = startup_log(log).splitlines()
    timing = [line for line in lines if line.rstrip().endswith(pack_dir)]
    if not timing:
        return [f"{pack_dir} missing from the import-time list"]
    problems = [line for line in timing if "IMPORT FAILED" in line]
    for marker in ("Cannot import", "Error while calling comfy_entrypoint", "did not return",
                   "Skip " + pack_dir):
        problems += [line for line in lines if marker in line and pack_dir in line]
    problems += [line for line in lines if "Unable to parse pyproject.toml" in line]
    if any(line.startswith("Traceback") for line in lines):
        problems.append("a traceback while loading")
    return problems


def test_pack_imports_cleanly_in_a_fresh_comfyui(install_server):
    log = install_server.log()
    assert "Import times for custom nodes" in log
    problems = pack_import_problems(log, str(install_server.pack_dir))
    assert not problems, "\n".join(problems) + "\n" + startup_log(log)[-4000:]


def test_import_scan_catches_failures():
    # Lines as ComfyUI 0.3.64 writes them for a pack whose module fails to import (seen with a
    # copy of this pack with one import broken).
    pack = "/tmp/base/custom_nodes/comfyui-gag"
    clean = f"Import times for custom nodes:\n   0.0 seconds: {pack}\n\nStarting server\n"
    assert pack_import_problems(clean, pack) == []
    failed = (f"Error while calling comfy_entrypoint in {pack}: cannot import name 'x'\n"
              f"Import times for custom nodes:\n   0.0 seconds (IMPORT FAILED): {pack}\n"
              "Starting server\n")
    assert len(pack_import_problems(failed, pack)) == 2
    assert pack_import_problems(clean.replace(pack, pack + "-other"), pack)
    after_start = clean + "Traceback (most recent call last):\n"  # a later prompt's error
    assert pack_import_problems(after_start, pack) == []


def test_nodes_are_listed_with_help(install_server):
    info = install_server.get_json("/object_info")
    for node_id, display in GAG_NODES.items():
        assert node_id in info, f"{node_id} missing from /object_info"
        entry = info[node_id]
        assert entry["display_name"] == display
        assert entry["category"] == "model_patches/GAG"
        assert entry["python_module"] == f"custom_nodes.{PACK_FOLDER_NAME}"
        assert len(entry["description"]) > 40
        for section in ("required", "optional"):
            for input_name, spec in entry["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("tooltip"), f"{node_id}.{input_name} has no tooltip"


def test_front_end_files_are_served(install_server):
    extensions = install_server.get_json("/extensions")
    web = install_server.pack_dir / "web"
    for script in sorted(web.rglob("*.js")):
        url = f"/extensions/{PACK_FOLDER_NAME}/{script.relative_to(web).as_posix()}"
        assert url in extensions, f"{url} not announced by /extensions"
        assert install_server.get_bytes(url) == script.read_bytes()
    for page in sorted((web / "docs").glob("*.md")):
        url = f"/extensions/{PACK_FOLDER_NAME}/docs/{page.name}"
        assert install_server.get_bytes(url) == page.read_bytes()
    assert {p.stem for p in (web / "docs").glob("*.md")} >= set(GAG_NODES), (
        "every node should have a help page")
