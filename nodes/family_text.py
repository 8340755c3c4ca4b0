"""The family table (``adapters/families.py``) in words: the node tooltips' family and preset
lists, and the family lists of README.md and the help pages in web/docs/.

Everything here is derived from ``FAMILIES``, so a family added to the table shows up in the
tooltips when ComfyUI loads the pack, and in the docs when ``python docs/write_family_docs.py``
rewrites them (tests/core/test_family_docs.py fails while a committed copy is stale). Pure
Python over the table's data: no ComfyUI, no torch.

Ranges are written with an ASCII hyphen ("double 0-18"), as a custom selection takes them, so
they can be copied into GAG Layers' text box.
"""

from __future__ import annotations

from typing import Iterable

from ..gag_core.layer_spec import LayerRef, parse_layer_spec, resolve_layers
from .adapters.families import FAMILIES, Family, Layout

__all__ = ["supported", "refused", "layout_layers", "layout_groups", "preset_layers",
           "model_tooltip", "preset_tooltip", "readme_supported_models", "readme_presets",
           "help_presets", "help_layouts", "help_models", "help_family_names"]


def supported() -> list[Family]:
    """The families GAG guides, for reading: those tested on older ComfyUI releases first, then
    in table order (the table itself is in detection order, most specific first)."""
    families = [f for f in FAMILIES if not f.refused]
    return sorted(families, key=lambda f: _version_key(f.min_comfyui))  # stable: table order


def refused() -> list[Family]:
    """The families GAG recognises and refuses by name, with the reason."""
    return [f for f in FAMILIES if f.refused]


def layout_layers(layout: Layout) -> list[LayerRef]:
    """Every attention layer of a full-size layout, in model order (UNet: one per transformer
    with cross-attention; DiT: one per block)."""
    refs = []
    for group, count in layout.blocks.items():
        if layout.transformers:
            for block, subs in sorted(layout.transformers.get(group, {}).items()):
                refs += [LayerRef(group, block, sub) for sub in range(subs)]
        else:
            refs += [LayerRef(group, block) for block in range(count)]
    return refs


def _runs(items: Iterable[tuple[int, object]]) -> list[tuple[int, int, object]]:
    """Consecutive numbers with the same value, as (first, last, value)."""
    runs: list[list] = []
    for number, value in items:
        if runs and runs[-1][1] == number - 1 and runs[-1][2] == value:
            runs[-1][1] = number
        else:
            runs.append([number, number, value])
    return [tuple(r) for r in runs]


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def layout_groups(layout: Layout) -> str:
    """The layout's block groups: "double 0-18, single 0-37"; for a UNet the blocks that hold
    cross-attention and their transformer counts: "input 4-5 (2 each), 7-8 (10 each); …"."""
    if not layout.transformers:
        return ", ".join(f"{group} {_span(0, count - 1)}" for group, count in layout.blocks.items())
    parts = []
    for group in layout.blocks:
        runs = _runs(sorted(layout.transformers.get(group, {}).items()))
        if not runs:
            continue
        one_each = all(value == 1 for _, _, value in runs)
        spans = [_span(first, last) + ("" if one_each else
                                       f" ({value}{' each' if last > first else ''})")
                 for first, last, value in runs]
        parts.append(f"{group} " + ", ".join(spans))
    return "; ".join(parts)


def preset_layers(layout: Layout, selection: str) -> tuple[int, int]:
    """(layers a preset's selection picks in the layout, layers the layout has)."""
    layers = layout_layers(layout)
    return len(resolve_layers(parse_layer_spec(selection), layers, layout.label)), len(layers)


def _names(families: Iterable[Family]) -> str:
    return ", ".join(f.display_name for f in families)


def _paper_groups() -> list[tuple[str, list[Family]]]:
    """The `paper` selections, each with the families whose preset it is."""
    groups: dict[str, list[Family]] = {}
    for family in supported():
        groups.setdefault(family.presets["paper"], []).append(family)
    return list(groups.items())


def _group_presets() -> list[tuple[str, list[Family]]]:
    """The presets besides `paper` and `all` ("input, output, middle"), each list with the
    families that offer exactly those of them."""
    offered: dict[str, list[Family]] = {}
    for family in supported():
        for name in family.presets:
            if name not in ("paper", "all"):
                offered.setdefault(name, []).append(family)
    shared: dict[tuple[str, ...], list[str]] = {}
    for name, families in offered.items():
        shared.setdefault(tuple(f.id for f in families), []).append(name)
    by_id = {f.id: f for f in supported()}
    return [(", ".join(names), [by_id[i] for i in ids]) for ids, names in shared.items()]


# --- tooltips (read when ComfyUI loads the pack) ---------------------------------------------

def model_tooltip() -> str:
    versions = sorted({f.min_comfyui for f in supported()}, key=_version_key)
    newer = "; some families need a newer ComfyUI, see the help page" if len(versions) > 1 else ""
    return (f"The model to guide: {_names(supported())} (from ComfyUI {versions[0]} on{newer}). "
            f"Any other model is an error that names it. It is cloned, never modified.")


def preset_tooltip() -> str:
    paper = "; ".join(f"{selection} ({_names(families)})"
                      for selection, families in _paper_groups())
    groups = "; ".join(f"{name} ({_names(families)})" for name, families in _group_presets())
    return (f"paper: the layers the paper's method uses for the model's family — {paper}. "
            f"all: every attention layer. One block group: {groups}. A preset the model's family "
            f"lacks is an error that lists its presets. custom: use the text below.")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


# --- Markdown for README.md and web/docs/*.md --------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _presets_md(family: Family) -> str:
    """"**paper** (input, output), **all**, **input**, …": a preset named after what it selects
    is shown bare."""
    return ", ".join(f"**{name}**" + ("" if selection == name else f" ({selection})")
                     for name, selection in family.presets.items())


def _paper_md(family: Family) -> str:
    counts = []
    for layout in family.layouts:
        chosen, total = preset_layers(layout, family.presets["paper"])
        counts.append((layout.label, chosen, total))
    if all(chosen == total for _, chosen, total in counts):
        amount = "every layer"
    else:
        amount = "; ".join(f"{label}: {chosen} of {total} layers"
                           for label, chosen, total in counts)
    return f"`{family.presets['paper']}` ({amount})"


def _modes_md(family: Family) -> str:
    if family.modes == ("text",):
        return "text (cross-attention)" if family.text == "cross" else "text"
    return ", ".join(f"{m} (auto)" if i == 0 else m for i, m in enumerate(family.modes))


def _notes(family: Family) -> str:
    notes = []
    if family.all_blocks_only:
        notes.append("all blocks together or none: ComfyUI does not tell this model's attention "
                     "its block")
    if family.hook == "joint" and family.text == "cross":
        notes.append("guides each block's cross-attention to the text")
    if family.text == "last":
        notes.append("text tokens after the image tokens")
    return "; ".join(notes)


def _layouts_md(family: Family) -> str:
    if len(family.layouts) == 1:
        return layout_groups(family.layouts[0])
    return "; ".join(f"{layout.label}: {layout_groups(layout)}" for layout in family.layouts)


def readme_supported_models() -> str:
    """README's supported-models table and the refused families under it."""
    lines = ["| family | models | ComfyUI (tested from) | layer groups (full size) "
             "| `paper` preset | modes | notes |",
             "|---|---|---|---|---|---|---|"]
    for family in supported():
        models = "; ".join(layout.models for layout in family.layouts)
        lines.append("| " + " | ".join(_cell(c) for c in (
            family.display_name, models, f"{family.min_comfyui}+", _layouts_md(family),
            _paper_md(family), _modes_md(family), _notes(family))) + " |")
    for family in refused():
        lines += ["", f"**{family.display_name}** (ComfyUI {family.min_comfyui}) is recognised and "
                      f"refused with the reason: {family.refused}."]
    return "\n".join(lines)


def _preset_lines(bold_names: bool) -> list[str]:
    """One line per distinct set of presets (and its limits), naming the families that share
    it."""
    lines: dict[str, list[Family]] = {}
    for family in supported():
        line = _presets_md(family)
        if family.modes == ("text",):
            line += "; mode text only"
        if family.all_blocks_only:
            line += ("; all blocks together or none (ComfyUI does not tell this model's attention "
                     "its block)")
        lines.setdefault(line, []).append(family)
    name = (lambda f: f"**{f.display_name}**") if bold_names else (lambda f: f.display_name)
    return [f"- {', '.join(map(name, families))}: {line}" for line, families in lines.items()]


def readme_presets() -> str:
    """README's per-family preset list (GAG Layers)."""
    return "\n".join(_preset_lines(bold_names=False))


def help_presets() -> str:
    """GAGLayers.md: each family's presets."""
    return "\n".join(_preset_lines(bold_names=True))


def help_layouts() -> str:
    """GAGLayers.md: the layouts the layer map draws (released full-size models)."""
    lines = []
    for family in supported():
        for layout in family.layouts:
            chosen, total = preset_layers(layout, family.presets["paper"])
            paper = "" if chosen == total else f"; **paper**: {chosen} of {total} layers"
            lines.append(f"- **{layout.label}** ({family.display_name}: {layout.models}): "
                         f"{layout_groups(layout)}{paper}")
    for family in refused():
        lines.append(f"- **{family.display_name}** (ComfyUI {family.min_comfyui}) is not supported "
                     f"yet: GAG refuses it with the reason.")
    return "\n".join(lines)


def help_models() -> str:
    """GAGModelPatch.md: the families its model input takes, with the ComfyUI each needs."""
    by_version: dict[str, list[Family]] = {}
    for family in supported():
        by_version.setdefault(family.min_comfyui, []).append(family)
    parts = [f"from ComfyUI {version}: {_names(families)}"
             for version, families in sorted(by_version.items(),
                                             key=lambda item: _version_key(item[0]))]
    return "; ".join(parts) + "."


def help_family_names() -> str:
    """Every supported family's name, for a sentence."""
    return _names(supported())
