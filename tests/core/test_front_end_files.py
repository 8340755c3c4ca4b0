"""The front end's files keep one job each (docs/DEVELOPING.md, "The front end"): one file per
preview, canvas drawing only in web/js/gag_draw.js, graph and node helpers only in
web/js/gag_common.js. What the previews draw is checked in a browser by
tests/comfy/test_frontend.py; this checks that no file grows its own copy of a shared helper."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
JS = REPO_ROOT / "web" / "js"
DRAWING = "gag_draw.js"
COMMON = "gag_common.js"
# file → the one canvas widget it adds (the previews and the readout plot)
WIDGETS = {"gag_schedule_preview.js": "gag_schedule_preview", "gag_layer_map.js": "gag_layer_map",
           "gag_readout.js": "gag_readout_plot"}


def _sources() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(JS.glob("*.js"))}


def _definitions(source: str) -> set[str]:
    return set(re.findall(r"^(?:export )?(?:async )?function (\w+)", source, re.MULTILINE)
               + re.findall(r"^(?:export )?const (\w+) =", source, re.MULTILINE))


def test_shared_helpers_are_defined_once():
    sources = _sources()
    shared = {DRAWING: _definitions(sources[DRAWING]), COMMON: _definitions(sources[COMMON])}
    assert {"COLORS", "panel", "wrapText", "hatch", "addCanvasWidget"} <= shared[DRAWING]
    assert {"widgetValue", "downstreamNodes", "upstreamOf", "growToFit", "registerOnce"} <= \
        shared[COMMON]
    copies = [f"{name} defines {helper} (shared in {home})"
              for name, source in sources.items() if name not in shared
              for home, helpers in shared.items()
              for helper in sorted(_definitions(source) & helpers)]
    assert not copies, "\n".join(copies)


def test_only_the_drawing_module_builds_canvas_widgets_and_draws_shapes():
    for name, source in _sources().items():
        if name == DRAWING:
            continue
        assert not re.search(r"\.addCustomWidget\(", source), (
            f"{name} builds a canvas widget itself; use {DRAWING}'s addCanvasWidget")
        for primitive in (r"\.roundRect\(", r"setLineDash", r"\.arc\("):
            assert not re.search(primitive, source), (
                f"{name} draws with {primitive!r} itself; shared drawing belongs in {DRAWING}")


def test_one_file_per_preview():
    sources = _sources()
    for name, widget in WIDGETS.items():
        found = re.findall(r'name: "(\w+)"', sources[name])
        assert found == [widget], f"{name} adds {found}; one canvas widget per file"
