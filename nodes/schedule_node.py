"""GAG Schedule: the part of the sampling run where GAG acts, and a ramp of λ across it."""

from __future__ import annotations

from comfy_api.latest import io

from ..gag_core.schedule import RAMPS
from .settings import Schedule
from .types import GAGScheduleType


class GAGSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="GAGSchedule",
            display_name="GAG Schedule",
            category="model_patches/GAG",
            description=("Limit GAG to a window of the sampling run and ramp λ across it. "
                         "Outside the window the layers compute exactly what they would "
                         "without GAG. Inside, λ is multiplied by the ramp (at a multiplier "
                         "of 0 the layer still uses the sparse retrieval)."),
            inputs=[
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Where GAG starts, as a fraction of the sampling run "
                               "(0 = first step, high noise). Converted to a noise level with "
                               "the model's own schedule, like ComfyUI's core nodes."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Where GAG stops (1 = last step). Must not be before "
                               "start_percent."),
                io.Combo.Input("ramp", options=list(RAMPS), default="constant",
                               tooltip="How λ changes across the window: constant; linear up "
                               "(0 → λ); linear down (λ → 0); cosine up/down (smooth)."),
            ],
            outputs=[GAGScheduleType.Output()],
        )

    @classmethod
    def execute(cls, start_percent, end_percent, ramp) -> io.NodeOutput:
        return io.NodeOutput(Schedule(start_percent=start_percent, end_percent=end_percent,
                                      ramp=ramp))
