"""GAG Model Patch: clone a MODEL and install Geometry-Aware Attention Guidance on it."""

from __future__ import annotations

from comfy_api.latest import io

from ..gag_core import PAPER
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
                               f"attention gain it gave: aim for about ×1.6–×2; lower λ if images "
                               f"oversaturate."),
                io.Float.Input("eta", default=PAPER.eta, min=0.01, max=1000.0, step=0.1,
                               round=0.01,
                               tooltip=f"η, cap on the norm of the guidance direction per token "
                               f"(the correction is at most λ·η). Paper default {PAPER.eta:g}; "
                               f"lower values make GAG gentler and more stable."),
                io.Float.Input("zeta", default=PAPER.zeta, min=0.0, max=1.0, step=0.01,
                               tooltip=f"ζ, share of the orthogonal part of the sparse–dense "
                               f"difference that is kept. {PAPER.zeta:g} (paper) = only the part "
                               f"along the sparse output; 1 with a large η = PLADIS."),
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
    def execute(cls, model, scale, eta, zeta, layers=None, sparsity=None,
                schedule=None) -> io.NodeOutput:
        settings = GAGSettings(scale=scale, eta=eta, zeta=zeta,
                               alpha=(sparsity or Sparsity()).alpha,
                               layers=layers or LayerChoice(),
                               schedule=schedule or Schedule())
        node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
        return io.NodeOutput(patch_model(model, settings, report_to=node_id))
