"""The model families GAG supports, as data: one ``Family`` entry per family.

An entry says how the family is recognised (its diffusion-model class in ComfyUI and, where two
families share a class, the config values that tell them apart), which block groups it has and
how ComfyUI names them (the attribute holding the blocks, the ``block_type`` ComfyUI tells
attention, the ``dit`` replace key), where the text tokens sit, its presets and modes, and the
layouts of its released full-size models for the front end's layer map.

Two hooks read the table (``HOOKS``): ``unet`` (cross-attention replaces of SD1.5/SDXL-family
UNets) and ``joint`` (one chained attention override for joint-attention DiTs). The front end
reads it through ``front_end_table()``, served at ``/gag/families``. Adding a family is adding an
entry here (most specific first: the first entry that matches a model wins) and its tiny-model
test.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Optional

from ...gag_core.layer_spec import LayerRef
from . import joint, unet

__all__ = ["BlockGroup", "Layout", "Family", "FAMILIES", "find_family", "family_by_id",
           "all_presets", "model_name", "front_end_table"]


@dataclass(frozen=True)
class BlockGroup:
    """One kind of block of a DiT, as users name it in a layer selection.

    blocks: attribute of the diffusion model that lists these blocks, in model order.
    block_type: the ``transformer_options["block_type"]`` ComfyUI sets while these blocks run
        (0.33+ for the families that have it); None where ComfyUI never says.
    dit_replace: the ``dit`` block-replace key ComfyUI offers for these blocks, if any.
    separate_text: the block's replace arguments carry ``txt`` and ``img`` apart ("double
        stream"); False for single-stream blocks that see one joint sequence.
    skip: attribute listing block indices the model never runs (not offered as layers).
    """
    name: str
    blocks: str
    block_type: Optional[str]
    dit_replace: Optional[str]
    separate_text: bool = True
    skip: Optional[str] = None


@dataclass(frozen=True)
class Layout:
    """A released full-size model of a family, for the layer map (the GAG Layers node has no
    model input, so the map draws these layouts).

    blocks: group → number of blocks. transformers: UNet only, group → {block: number of
    transformers with cross-attention}; DiT blocks hold one attention each.
    """
    id: str
    label: str
    models: str
    blocks: dict[str, int]
    transformers: dict[str, dict[int, int]] = field(default_factory=dict)
    file_hint: str = ""   # regular expression on a model file name that suggests this layout


@dataclass(frozen=True)
class Family:
    """One family of diffusion models.

    model_class: (module, class) of its diffusion model in ComfyUI; a family whose class the
        running ComfyUI lacks is never matched.
    flags: dotted attribute path on the diffusion model → whether it must be truthy (a missing
        attribute reads as False), to tell apart families that share a class.
    hook: "unet" or "joint" (see ``HOOKS``).
    text: where the text tokens are: "cross" (separate cross-attention) or "first" (at the
        start of the joint sequence).
    modes: the first one is what "auto" picks.
    """
    id: str
    display_name: str
    model_class: tuple[str, str]
    hook: str
    text: str
    presets: dict[str, str]
    modes: tuple[str, ...]
    layouts: tuple[Layout, ...]
    groups: tuple[BlockGroup, ...] = ()
    flags: dict[str, bool] = field(default_factory=dict)

    def group(self, name: str) -> BlockGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def resolve_mode(self, mode: str) -> str:
        if mode == "auto":
            return self.modes[0]
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r} does not apply to {self.display_name} models; "
                             f"valid modes: auto, {', '.join(self.modes)}")
        return mode


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

UNET_PRESETS = {
    "paper": "input, output",   # PLADIS's and the GAG re-implementations' choice
    "all": "all",
    "input": "input",
    "output": "output",
    "middle": "middle",
}
# Every joint attention holds the image-query → text-key retrieval, the DiT analogue of "all
# cross-attention layers" in PLADIS; README has the measurements behind the modes.
FLUX_PRESETS = {"paper": "double, single", "all": "all", "double": "double", "single": "single"}
JOINT_PRESETS = {"paper": "joint", "all": "all", "joint": "joint"}
DIT_MODES = ("text", "joint")

FLUX_GROUPS = (
    BlockGroup("double", "double_blocks", "double", "double_block"),
    BlockGroup("single", "single_blocks", "single", "single_block", separate_text=False),
)
FLUX_MODEL = ("comfy.ldm.flux.model", "Flux")

FAMILIES: tuple[Family, ...] = (
    Family(
        id="unet", display_name="SD1.5 / SDXL UNet",
        model_class=("comfy.ldm.modules.diffusionmodules.openaimodel", "UNetModel"),
        hook="unet", text="cross", presets=UNET_PRESETS, modes=("text",),
        layouts=(
            Layout("sdxl", "SDXL", "SDXL, Pony, Illustrious, Hyper-SDXL, DMD2",
                   blocks={"input": 9, "middle": 1, "output": 9},
                   transformers={"input": {4: 2, 5: 2, 7: 10, 8: 10}, "middle": {0: 10},
                                 "output": {0: 10, 1: 10, 2: 10, 3: 2, 4: 2, 5: 2}},
                   file_hint=r"xl|pony|illustrious|noob|dmd2|playground"),
            Layout("sd15", "SD1.5", "SD1.5, SD2.x",
                   blocks={"input": 12, "middle": 1, "output": 12},
                   transformers={"input": {1: 1, 2: 1, 4: 1, 5: 1, 7: 1, 8: 1}, "middle": {0: 1},
                                 "output": {i: 1 for i in range(3, 12)}},
                   file_hint=r"v1[-_.]?5|sd[-_]?1[-_.]?5|sd15|v2[-_.]?[01]|sd[-_]?2[-_.]?[01]|sd2"),
        ),
    ),
    Family(
        # Chroma before FLUX: some ComfyUI versions build Chroma on FLUX's classes.
        id="chroma", display_name="Chroma",
        model_class=("comfy.ldm.chroma.model", "Chroma"),
        hook="joint", text="first", presets=FLUX_PRESETS, modes=DIT_MODES,
        groups=(BlockGroup("double", "double_blocks", "double", "double_block", skip="skip_mmdit"),
                BlockGroup("single", "single_blocks", "single", "single_block",
                           separate_text=False, skip="skip_dit")),
        layouts=(Layout("chroma", "Chroma", "Chroma", blocks={"double": 19, "single": 38},
                        file_hint=r"chroma"),),
    ),
    Family(
        # FLUX.2 runs on FLUX.1's class with modulation shared across blocks.
        id="flux2", display_name="FLUX.2", model_class=FLUX_MODEL,
        flags={"params.global_modulation": True},
        hook="joint", text="first", presets=FLUX_PRESETS, modes=DIT_MODES, groups=FLUX_GROUPS,
        layouts=(
            Layout("flux2", "FLUX.2", "FLUX.2 dev", blocks={"double": 8, "single": 48},
                   file_hint=r"flux[-_. ]?2(?!.*klein)"),
            Layout("flux2_klein_4b", "Klein 4B", "FLUX.2 klein 4B",
                   blocks={"double": 5, "single": 20}, file_hint=r"klein.*4b|klein(?!.*9b)"),
            Layout("flux2_klein_9b", "Klein 9B", "FLUX.2 klein 9B",
                   blocks={"double": 8, "single": 24}, file_hint=r"klein.*9b"),
        ),
    ),
    Family(
        id="flux", display_name="FLUX.1", model_class=FLUX_MODEL,
        flags={"params.global_modulation": False},
        hook="joint", text="first", presets=FLUX_PRESETS, modes=DIT_MODES, groups=FLUX_GROUPS,
        layouts=(Layout("flux", "FLUX.1", "FLUX.1 dev / schnell / Kontext / Krea",
                        blocks={"double": 19, "single": 38}, file_hint=r"flux|krea|kontext"),),
    ),
    Family(
        # ComfyUI keys SD3's joint blocks as "double_block" replaces and never sets block_type.
        id="sd3", display_name="SD3 / SD3.5 MMDiT",
        model_class=("comfy.ldm.modules.diffusionmodules.mmdit", "MMDiT"),
        hook="joint", text="first", presets=JOINT_PRESETS, modes=DIT_MODES,
        groups=(BlockGroup("joint", "joint_blocks", None, "double_block"),),
        layouts=(
            Layout("sd35_large", "SD3.5 L", "SD3.5 large, large turbo", blocks={"joint": 38},
                   file_hint=r"(sd|stable[-_ ]?diffusion)[-_ ]?3[-_.]?5[-_ ]?large"),
            Layout("sd3", "SD3", "SD3 medium, SD3.5 medium", blocks={"joint": 24},
                   file_hint=r"sd3|sd_3|stable[-_ ]?diffusion[-_ ]?3"),
        ),
    ),
    Family(
        id="qwen_image", display_name="Qwen-Image",
        model_class=("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel"),
        hook="joint", text="first", presets=JOINT_PRESETS, modes=DIT_MODES,
        groups=(BlockGroup("joint", "transformer_blocks", "double", "double_block"),),
        layouts=(Layout("qwen_image", "Qwen-Image", "Qwen-Image, Qwen-Image-Edit",
                        blocks={"joint": 60}, file_hint=r"qwen"),),
    ),
)


# ---------------------------------------------------------------------------------------------
# Reading the table
# ---------------------------------------------------------------------------------------------

def _class_of(family: Family) -> Optional[type]:
    """The family's diffusion-model class, or None when this ComfyUI does not have it."""
    module_name, class_name = family.model_class
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    found = getattr(module, class_name, None)
    return found if isinstance(found, type) else None


def _flag(obj, dotted: str) -> bool:
    for name in dotted.split("."):
        obj = getattr(obj, name, None)
    return bool(obj)


def diffusion_model_of(model_patcher):
    return getattr(getattr(model_patcher, "model", None), "diffusion_model", None)


def matches(family: Family, model_patcher) -> bool:
    cls = _class_of(family)
    diffusion = diffusion_model_of(model_patcher)
    if cls is None or not isinstance(diffusion, cls):
        return False
    return all(_flag(diffusion, path) == wanted for path, wanted in family.flags.items())


def model_name(model_patcher) -> str:
    """A readable name for error messages: the model class and its config class."""
    model = getattr(model_patcher, "model", None)
    config = getattr(model, "model_config", None)
    parts = [type(model).__name__ if model is not None else type(model_patcher).__name__]
    if config is not None:
        parts.append(type(config).__name__)
    diffusion = getattr(model, "diffusion_model", None)
    if diffusion is not None:
        parts.append(type(diffusion).__name__)
    return "/".join(dict.fromkeys(parts))


def find_family(model_patcher) -> Family:
    """The family of this model, or a ValueError naming the model and what is supported."""
    for family in FAMILIES:
        if matches(family, model_patcher):
            return family
    supported = ", ".join(f.display_name for f in FAMILIES)
    raise ValueError(f"GAG does not support this model ({model_name(model_patcher)}); "
                     f"supported families: {supported}")


def family_by_id(family_id: str) -> Family:
    for family in FAMILIES:
        if family.id == family_id:
            return family
    raise KeyError(family_id)


def all_presets() -> list[str]:
    """Every preset name any family offers, "paper" first, then "custom"."""
    names = ["paper"]
    for family in FAMILIES:
        names += [n for n in family.presets if n not in names]
    return names + ["custom"]


def available_layers(family: Family, model_patcher) -> list[LayerRef]:
    """Every attention layer of this model that GAG can patch, in model order."""
    return HOOKS[family.hook].available_layers(family, model_patcher)


def front_end_table() -> list[dict]:
    """The layer map's data: one entry per released layout, in the shape web/js reads.

    ``attention`` maps a block number to its number of transformers (UNet) or to None (a DiT
    block is one attention); blocks without attention are absent and drawn dimmed.
    """
    table = []
    for family in FAMILIES:
        for layout in family.layouts:
            groups = []
            for name, count in layout.blocks.items():
                if layout.transformers:
                    attention = {str(b): n for b, n in layout.transformers.get(name, {}).items()}
                else:
                    attention = {str(b): None for b in range(count)}
                groups.append({"name": name, "blocks": count, "attention": attention})
            table.append({"id": layout.id, "label": layout.label, "family": family.id,
                          "display_name": family.display_name, "models": layout.models,
                          "groups": groups, "presets": dict(family.presets),
                          "modes": list(family.modes), "file_hint": layout.file_hint})
    return table


# hook name → module with available_layers / install / uninstall
HOOKS = {"unet": unet, "joint": joint}
