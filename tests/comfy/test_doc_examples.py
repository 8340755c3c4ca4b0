"""README's Python examples run as written, the way README says to run them.

README ("Using GAG from Python") says: run with ComfyUI's Python, from ComfyUI's folder, with the
pack cloned as custom_nodes/comfyui-gag (the folder name its install section uses). Here that
folder exists for real: a ComfyUI folder whose entries link to the ComfyUI under test, with
custom_nodes/comfyui-gag linking to this repository. The blocks run in order, in one fresh
Python process started in that folder, each exactly as README prints it. What README says the
reader brings is all the test adds between them: a MODEL (a tiny SDXL built through ComfyUI's
real classes) before the first block that uses `model`, and a run of ComfyUI's sampler on
`patched` before the first block that reads its readout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "core"))
from doc_blocks import python_blocks, shell_blocks  # noqa: E402

CLONE_FOLDER = "comfyui-gag"

# Runs in the child process: README's blocks in one namespace, with the reader's part between.
RUNNER = r'''
import json, re, sys
import torch
torch.set_num_threads(1)
blocks, tests_comfy = json.loads(sys.stdin.read()), sys.argv[1]
namespace = {"__name__": "__main__"}
sampled = False
for where, code in blocks:
    if re.search(r"\bmodel\b", code) and "model" not in namespace:
        # The reader's MODEL: a tiny SDXL, built through ComfyUI's own classes (on the CPU).
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        sys.path.append(tests_comfy)
        import tiny_models as tm
        namespace["model"] = tm.tiny_sdxl()
    if "last_readout(patched)" in code and not sampled:
        # "After a sampler has run patched": ComfyUI's sampler, 3 steps.
        tm.sample(namespace["patched"], tm.sdxl_conditioning(), tm.sdxl_conditioning(seed=2),
                  steps=3, cfg=5.0)
        sampled = True
    print(f"--- {where}", flush=True)
    exec(compile(code, where, "exec"), namespace)
print("--- all blocks ran", flush=True)
'''


def _comfyui_folder_with_the_pack(comfy_path: Path, tmp_path: Path) -> Path:
    """A ComfyUI folder as README's install section leaves it: ComfyUI's files (linked) and this
    pack cloned as custom_nodes/comfyui-gag (linked)."""
    folder = tmp_path / "ComfyUI"
    folder.mkdir()
    for entry in comfy_path.iterdir():
        if entry.name != "custom_nodes":
            (folder / entry.name).symlink_to(entry)
    (folder / "custom_nodes").mkdir()
    (folder / "custom_nodes" / CLONE_FOLDER).symlink_to(REPO_ROOT, target_is_directory=True)
    return folder


def test_readme_install_clones_into_the_folder_the_python_example_loads():
    install = next(b for b in shell_blocks("README.md") if "git clone" in b.code)
    assert f"git clone <this repository> {CLONE_FOLDER}" in install.code, install.where()
    assert f"pip install -r {CLONE_FOLDER}/requirements.txt" in install.code, install.where()
    loader = python_blocks("README.md")[0]
    assert f'"custom_nodes/{CLONE_FOLDER}"' in loader.code, (
        f"{loader.where()}: the Python example must load the folder README's install section "
        f"clones into (custom_nodes/{CLONE_FOLDER})")


def test_readme_python_examples_run_as_written(comfy_path, tmp_path):
    examples = python_blocks("README.md")
    assert len(examples) >= 3, "README's Python examples went missing"
    folder = _comfyui_folder_with_the_pack(Path(comfy_path), tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(REPO_ROOT / "tests" / "comfy")], cwd=folder, env=env,
        input=json.dumps([[b.where(), b.code] for b in examples]), capture_output=True,
        text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"README's Python examples failed:\n{output[-6000:]}"
    assert "--- all blocks ran" in result.stdout, output[-6000:]
    # The readout example printed the figures of the run the test sampled.
    assert "GAG: attention gain" in result.stdout, output[-6000:]
