"""GAG Sparsity: the α of the α-entmax that makes the sparse retrieval."""

from __future__ import annotations

from comfy_api.latest import io

from ..gag_core import PAPER
from .settings import Sparsity
from .types import GAGSparsityType


class GAGSparsity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="GAGSparsity",
            display_name="GAG Sparsity",
            category="model_patches/GAG",
            description=("How sparse the sparse retrieval is: α-entmax with α in (1, 2]. "
                         "1.5 (paper) keeps a few dozen keys per query; 2 is sparsemax "
                         "(sparser); values near 1 approach softmax, so GAG fades out."),
            inputs=[
                io.Float.Input("alpha", default=PAPER.alpha, min=1.01, max=2.0, step=0.01,
                               tooltip=f"α of α-entmax. {PAPER.alpha:g} = paper default (exact, "
                               f"fastest); 2 = sparsemax (exact); others use bisection. Range "
                               f"(1, 2]."),
            ],
            outputs=[GAGSparsityType.Output()],
        )

    @classmethod
    def execute(cls, alpha) -> io.NodeOutput:
        return io.NodeOutput(Sparsity(alpha=alpha))
