"""Rewrite the family lists in README.md and the help pages from the family table.

    python docs/write_family_docs.py           rewrite the generated regions in place
    python docs/write_family_docs.py --check   only say which files are stale (exit status 1)

A generated region sits between two markers in a Markdown file:

    <!-- families:begin NAME -->
    … written by this script …
    <!-- families:end NAME -->

and holds what ``nodes/family_text.py`` makes of ``FAMILIES`` (nodes/adapters/families.py) for
NAME (see REGIONS). Text outside the markers is never touched. A region whose begin marker ends
its line is written as whole lines (between blank lines); otherwise inline, inside a sentence.

Runs with nothing but the repository and Python 3.9+ (no ComfyUI): the table's modules are
loaded from their files under a private package name, without the package __init__ files that
import ComfyUI. tests/core/test_family_docs.py fails while a committed copy is stale.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PRIVATE_PACKAGE = "_gag_family_docs"

# file (relative to the repository) → {region name → function of nodes/family_text.py}
REGIONS = {
    "README.md": {"supported-models": "readme_supported_models", "presets": "readme_presets"},
    "web/docs/GAGLayers.md": {"presets": "help_presets", "layouts": "help_layouts"},
    "web/docs/GAGModelPatch.md": {"models": "help_models"},
    "web/docs/GAGSparsity.md": {"names": "help_family_names"},
}


def family_text(root: Path = REPO_ROOT):
    """nodes/family_text.py of this repository, imported without ComfyUI.

    The pack's package __init__ files (the pack, ``nodes``, ``nodes/adapters``, ``gag_core``)
    import ComfyUI or torch; here each package is an empty module whose ``__path__`` is its
    folder, so only the modules the table needs are executed.
    """
    name = f"{PRIVATE_PACKAGE}.nodes.family_text"
    if name in sys.modules:
        return sys.modules[name]
    packages = ((PRIVATE_PACKAGE, root), (f"{PRIVATE_PACKAGE}.gag_core", root / "gag_core"),
                (f"{PRIVATE_PACKAGE}.nodes", root / "nodes"),
                (f"{PRIVATE_PACKAGE}.nodes.adapters", root / "nodes" / "adapters"))
    for package, folder in packages:
        module = types.ModuleType(package)
        module.__path__ = [str(folder)]
        sys.modules[package] = module
    return importlib.import_module(name)


def _marker(kind: str, region: str) -> str:
    return f"<!-- families:{kind} {region} -->"


def rewrite(text: str, regions: dict[str, str], path: str = "") -> str:
    """text with each region's content replaced; a missing or doubled marker is an error."""
    for region, content in regions.items():
        begin, end = _marker("begin", region), _marker("end", region)
        pattern = re.compile(re.escape(begin) + r"(.*?)" + re.escape(end), re.DOTALL)
        found = pattern.findall(text)
        if len(found) != 1 or text.count(begin) != 1 or text.count(end) != 1:
            raise ValueError(f"{path}: expected one '{begin}' … '{end}' region, found "
                             f"{text.count(begin)} begin and {text.count(end)} end markers")
        block = found[0].startswith("\n")
        # Blank lines around a block region: Markdown then reads the markers as HTML blocks of
        # their own, and the content as the table or list it is.
        body = f"\n\n{content}\n\n" if block else content
        text = pattern.sub(lambda _: begin + body + end, text)
    return text


def render_all(root: Path = REPO_ROOT) -> dict[Path, tuple[str, str]]:
    """path → (committed text, text with fresh regions), for every file in REGIONS."""
    words = family_text(root)
    out = {}
    for relative, regions in REGIONS.items():
        path = root / relative
        current = path.read_text(encoding="utf-8")
        fresh = {region: getattr(words, function)() for region, function in regions.items()}
        out[path] = (current, rewrite(current, fresh, relative))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, (current, fresh) in render_all().items():
        if current != fresh:
            stale.append(path.relative_to(REPO_ROOT).as_posix())
            if not args.check:
                path.write_text(fresh, encoding="utf-8")
    if args.check:
        print("stale: " + ", ".join(stale) if stale else "family docs are up to date")
        return 1 if stale else 0
    print("rewrote " + ", ".join(stale) if stale else "family docs were up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
