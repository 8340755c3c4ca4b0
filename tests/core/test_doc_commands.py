"""The commands and code in README.md and docs/DEVELOPING.md work as written (no ComfyUI here;
README's ComfyUI examples run in tests/comfy/test_doc_examples.py).

- README's test command is the one command: `python -m pytest tests -ra`.
- Every repository path a shell example names exists.
- docs/DEVELOPING.md's Python examples run as written, from the repository root, in a fresh
  Python.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from doc_blocks import DOCS, REPO_ROOT, python_blocks, shell_blocks

# A repository path in a command: a file with a known suffix, or .ci/run.
_PATH = re.compile(r"(?<![\w/~.$-])((?:[\w.-]+/)*[\w.-]+\.(?:py|txt|md|json|sh)|\.ci/run)\b")


def test_readme_states_the_one_test_command():
    commands = [b.code.strip() for b in shell_blocks("README.md")]
    assert "python -m pytest tests -ra" in commands


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_shell_example_names_exists(doc):
    missing, checked = [], []
    for block in shell_blocks(doc):
        for line in block.code.splitlines():
            if line.lstrip().startswith(("git clone", "cd ")):
                continue  # the user's own folders (ComfyUI/custom_nodes, the clone)
            for path in _PATH.findall(line):
                # README's install runs inside ComfyUI/custom_nodes, where the clone is comfyui-gag
                relative = path.split("comfyui-gag/", 1)[-1]
                checked.append(relative)
                if not (REPO_ROOT / relative).exists():
                    missing.append(f"{block.where()}: {path}")
    assert checked, f"{doc}: no shell example names a file of the repository"
    assert not missing, "shell examples name files that do not exist:\n" + "\n".join(missing)


def test_developing_python_examples_run_as_written():
    examples = python_blocks("docs/DEVELOPING.md")
    assert examples, "docs/DEVELOPING.md lost its Python example"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for block in examples:
        result = subprocess.run([sys.executable, "-c", block.code], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{block.where()} failed:\n{result.stderr[-4000:]}"
        assert result.stdout.strip(), f"{block.where()} printed nothing"
