"""GAG Layers: which attention layers GAG patches, and which part of a joint attention."""

from __future__ import annotations

from comfy_api.latest import io

from .adapters import all_presets
from .family_text import preset_tooltip
from .settings import MODES, LayerChoice
from .types import GAGLayersType


class GAGLayers(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="GAGLayers",
            display_name="GAG Layers",
            category="model_patches/GAG",
            description=("Choose the attention layers GAG guides: a preset for the model's "
                         "family, or 'custom' with a selection such as 'input 4-8, output 0-5' "
                         "(UNet) or 'double 0-18, single 0-37' (FLUX). Checked against the "
                         "model when GAG Model Patch runs; unknown layers are an error that "
                         "lists the valid ones."),
            inputs=[
                io.Combo.Input("preset", options=all_presets(), default="paper",
                               tooltip=preset_tooltip()),
                io.String.Input("custom", default="", multiline=True,
                                placeholder="input 4-8, output 0-5   |   double 0-18, single 0-37",
                                tooltip="Used when preset is 'custom'. Items separated by "
                                "commas: a group (input, middle, output; double, single, joint…) "
                                "with block numbers or ranges; 'block:index' picks transformer "
                                "indices inside a block, e.g. 'input 7:0-3'; 'all' = every layer."),
                io.Combo.Input("mode", options=list(MODES), default="auto",
                               tooltip="Joint-attention models only. text: guide only how image "
                               "tokens retrieve text tokens; joint: guide the whole joint "
                               "attention. auto: the family's default. UNets always guide their "
                               "cross-attention (text)."),
            ],
            outputs=[GAGLayersType.Output()],
        )

    @classmethod
    def execute(cls, preset, custom, mode) -> io.NodeOutput:
        return io.NodeOutput(LayerChoice(preset=preset, custom=custom, mode=mode))
