"""GAG Model Patch: clone a MODEL and install Geometry-Aware Attention Guidance on it."""

from __future__ import annotations

from comfy_api.latest import io

from ..gag_core import PAPER
from ..gag_core.target_gain import MAX_TARGET_SCALE, TARGET_GAIN_RANGE
from .api import patch_model
from .family_text import model_tooltip
from .settings import GAGSettings, LayerChoice, Schedule, Sparsity
from .types import GAGLayersType, GAGScheduleType, GAGSparsityType


class GAGModelPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="GAGModelPatch",
            display_name="GAG Model Patch",
            category="model_patches/GAG",
            description=(
                "Geometry-Aware Attention Guidance: in the chosen attention layers, computes a "
                "sparse (α-entmax) and a dense (softmax) retrieval from the same scores and "
                "extrapolates along the part of their difference parallel to the sparse output, "
                "with a norm cap. No extra model pass, so it also works for few-step distilled "
                "models run at CFG 1. Returns a patched copy; the input model is unchanged."),
            inputs=[
                io.Model.Input("model", tooltip=model_tooltip()),
                io.Float.Input("scale", default=PAPER.scale, min=0.0, max=100.0, step=0.1,
                               round=0.01,
                               tooltip=f"λ, guidance strength. 0 = plain sparse attention; paper "
                               f"default {PAPER.scale:g}. The log line after each run shows the "
                               f"attention gain it gave. Best in our tests: about ×1.6–×2 on a "
                               f"UNet without CFG, ×1.1–×1.3 on a DiT in text mode; with CFG, "
                               f"less or none. Lower λ if images oversaturate. Unused when "
                               f"target_gain is set."),
                io.Float.Input("eta", default=PAPER.eta, min=0.01, max=1000.0, step=0.1,
                               round=0.01,
                               tooltip=f"η, cap on the norm of the guidance direction per token "
                               f"(the correction is at most λ·η). Paper default {PAPER.eta:g}; "
                               f"lower values make GAG gentler and more stable."),
                io.Float.Input("zeta", default=PAPER.zeta, min=0.0, max=1.0, step=0.01,
                               tooltip=f"ζ, share of the orthogonal part of the sparse–dense "
                               f"difference that is kept. {PAPER.zeta:g} (paper) = only the part "
                               f"along the sparse output; 1 with a large η = PLADIS."),
                # Optional and after zeta: workflows saved before it existed keep their widget
                # values in place and load with it off.
                io.Float.Input("target_gain", default=0.0, min=0.0, max=TARGET_GAIN_RANGE[1],
                               step=0.05, round=0.01, optional=True,
                               tooltip=f"Target-gain mode: the median attention gain GAG should "
                               f"apply, e.g. 1.8. 0 = off (λ is scale). When set, λ is chosen "
                               f"for every guided attention call so that its median gain lands "
                               f"on this value (η and ζ still apply; λ at most "
                               f"{MAX_TARGET_SCALE:g}; a schedule ramp scales it), and scale is "
                               f"ignored. Allowed: 0 or {TARGET_GAIN_RANGE[0]:g}–"
                               f"{TARGET_GAIN_RANGE[1]:g}. Runs on the PyTorch path."),
                GAGLayersType.Input("layers", optional=True,
                                    tooltip="Which attention layers (GAG Layers). Default: the "
                                    "paper preset for the model's family."),
                GAGSparsityType.Input("sparsity", optional=True,
                                      tooltip=f"α of the sparse branch (GAG Sparsity). Default "
                                      f"{PAPER.alpha:g}."),
                GAGScheduleType.Input("schedule", optional=True,
                                      tooltip="When GAG acts during sampling (GAG Schedule). "
                                      "Default: every step at full strength."),
            ],
            outputs=[io.Model.Output()],
            # The node's id: the strength readout of each sampling run is shown on this node.
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, scale, eta, zeta, target_gain=0.0, layers=None, sparsity=None,
                schedule=None) -> io.NodeOutput:
        settings = GAGSettings(scale=scale, eta=eta, zeta=zeta, target_gain=target_gain,
                               alpha=(sparsity or Sparsity()).alpha,
                               layers=layers or LayerChoice(),
                               schedule=schedule or Schedule())
        node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
        return io.NodeOutput(patch_model(model, settings, report_to=node_id))
