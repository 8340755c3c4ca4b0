"""The family lists in README.md and web/docs/*.md are generated from the family table.

docs/write_family_docs.py rewrites the marked regions from nodes/family_text.py, which reads
FAMILIES (nodes/adapters/families.py); the node tooltips call the same functions when ComfyUI
loads the pack. Here: the committed copies are what the script writes now, every supported
family is in every list, and a family added to the table shows up everywhere with no other
change. No ComfyUI needed: the script loads the table's modules on their own.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FIX = "python docs/write_family_docs.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("write_family_docs",
                                                  REPO_ROOT / "docs" / "write_family_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("write_family_docs", module)
    spec.loader.exec_module(module)
    return module


script = _load_script()
words = script.family_text()


def test_committed_family_docs_are_what_the_table_gives():
    stale = [path.relative_to(REPO_ROOT).as_posix()
             for path, (current, fresh) in script.render_all().items() if current != fresh]
    assert not stale, (f"the family lists in {', '.join(stale)} are stale (the family table "
                       f"changed); run `{FIX}` and commit the result")


def test_every_supported_family_is_in_every_generated_list():
    supported = words.supported()
    assert supported, "the family table lists no supported family"
    texts = {"README supported models": words.readme_supported_models(),
             "README presets": words.readme_presets(),
             "GAGLayers presets": words.help_presets(),
             "GAGModelPatch models": words.help_models(),
             "GAGSparsity names": words.help_family_names(),
             "model tooltip": words.model_tooltip(),
             "preset tooltip": words.preset_tooltip()}
    for where, text in texts.items():
        missing = [f.display_name for f in supported if f.display_name not in text]
        assert not missing, f"{where} lacks {missing}"
    layouts = words.help_layouts()
    for family in supported:
        for layout in family.layouts:
            assert f"**{layout.label}** ({family.display_name}: {layout.models}): " \
                f"{words.layout_groups(layout)}" in layouts
    for family in words.refused():
        assert family.display_name in words.readme_supported_models()
        assert family.refused in words.readme_supported_models()
        assert family.display_name not in words.model_tooltip()


def test_layer_counts_and_groups_are_the_layouts():
    families = {f.id: f for f in words.supported()}
    sdxl = next(l for l in families["unet"].layouts if l.id == "sdxl")
    assert words.preset_layers(sdxl, "input, output") == (60, 70)
    assert words.preset_layers(sdxl, "all") == (70, 70)
    assert words.layout_groups(sdxl) == ("input 4-5 (2 each), 7-8 (10 each); middle 0 (10); "
                                         "output 0-2 (10 each), 3-5 (2 each)")
    flux = families["flux"].layouts[0]
    assert words.layout_groups(flux) == "double 0-18, single 0-37"
    assert words.preset_layers(flux, families["flux"].presets["paper"]) == (57, 57)


def test_a_family_added_to_the_table_shows_up_everywhere(monkeypatch):
    """A new family (here a made-up video DiT) needs no change to the generator."""
    template = words.FAMILIES[[f.id for f in words.FAMILIES].index("flux")]
    layout = dataclasses.replace(template.layouts[0], id="tiny_video", label="TinyVid 1B",
                                 models="TinyVid 1B t2v / i2v", blocks={"double": 4, "single": 8},
                                 file_hint="tinyvid")
    video = dataclasses.replace(template, id="tiny_video", display_name="TinyVid",
                                layouts=(layout,), min_comfyui="0.40.0",
                                presets={"paper": "double", "all": "all", "double": "double",
                                         "frames": "single"})
    monkeypatch.setattr(words, "FAMILIES", words.FAMILIES + (video,))
    table = words.readme_supported_models()
    assert ("| TinyVid | TinyVid 1B t2v / i2v | 0.40.0+ | double 0-3, single 0-7 | `double` "
            "(TinyVid 1B: 4 of 12 layers) |") in table
    assert "- TinyVid: **paper** (double), **all**, **double**, **frames** (single)" in \
        words.readme_presets()
    assert "- **TinyVid 1B** (TinyVid: TinyVid 1B t2v / i2v): double 0-3, single 0-7" in \
        words.help_layouts()
    assert "from ComfyUI 0.40.0: TinyVid." in words.help_models()
    assert "frames (TinyVid)" in words.preset_tooltip()
    for text in (words.help_family_names(), words.model_tooltip(), words.help_presets()):
        assert "TinyVid" in text
    # And the committed files would change: the check asks for the script to be run.
    assert any(current != fresh for current, fresh in script.render_all().values())


def test_a_region_needs_exactly_one_pair_of_markers():
    good = "a\n<!-- families:begin x -->\nold\n<!-- families:end x -->\nb"
    assert script.rewrite(good, {"x": "new"}) == \
        "a\n<!-- families:begin x -->\n\nnew\n\n<!-- families:end x -->\nb"
    inline = "(<!-- families:begin x -->old<!-- families:end x -->)"
    assert script.rewrite(inline, {"x": "new"}) == \
        "(<!-- families:begin x -->new<!-- families:end x -->)"
    for broken in ("no markers", "<!-- families:begin x -->", good + good):
        with pytest.raises(ValueError, match="expected one '<!-- families:begin x -->'"):
            script.rewrite(broken, {"x": "new"}, "README.md")


def test_the_check_mode_reports_up_to_date_files(capsys):
    assert script.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
