"""The fenced code blocks of README.md and docs/DEVELOPING.md, for the tests that run them
(tests/core/test_doc_commands.py, tests/comfy/test_doc_examples.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/DEVELOPING.md")
_FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```[ \t]*$", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    doc: str       # file, relative to the repository
    line: int      # line of the opening fence
    language: str  # "python", "bash", "" …
    code: str      # without the block's indentation

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(doc: str) -> list[Block]:
    text = (REPO_ROOT / doc).read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        indent = len(match.group(1))
        code = "\n".join(line[indent:] for line in match.group(3).splitlines())
        found.append(Block(doc, text.count("\n", 0, match.start()) + 1, match.group(2), code))
    return found


def python_blocks(doc: str) -> list[Block]:
    return [b for b in blocks(doc) if b.language == "python"]


def shell_blocks(doc: str) -> list[Block]:
    return [b for b in blocks(doc) if b.language in ("bash", "sh", "shell")]
