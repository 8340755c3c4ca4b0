"""The settings a GAG patch carries, built and validated once when the node runs.

Everything below is immutable; the node builds one ``GAGSettings`` from its inputs and the
companion nodes' outputs, and the adapters read it. No loose keyword arguments travel further.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..gag_core import PAPER, check_alpha, check_guidance_params
from ..gag_core.layer_spec import parse_layer_spec
from ..gag_core.schedule import RAMPS, check_window
from ..gag_core.target_gain import check_target_gain

MODES = ("auto", "text", "joint")


@dataclass(frozen=True)
class LayerChoice:
    """What GAG Layers outputs: a preset name, or "custom" with the selection text, and a mode.

    mode: "auto" lets the model family choose; "text" guides only the retrieval of text tokens
    (UNet cross-attention is always that); "joint" guides the whole joint attention of an MMDiT.
    """
    preset: str = "paper"
    custom: str = ""
    mode: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.preset == "custom":
            parse_layer_spec(self.custom)  # syntax errors surface here, before any model is seen


@dataclass(frozen=True)
class Schedule:
    """The sampling window [start_percent, end_percent] and the ramp of λ across it."""
    start_percent: float = 0.0
    end_percent: float = 1.0
    ramp: str = "constant"

    def __post_init__(self):
        check_window(self.start_percent, self.end_percent)
        if self.ramp not in RAMPS:
            raise ValueError(f"ramp must be one of {', '.join(RAMPS)}; got {self.ramp!r}")

    @property
    def is_always_on(self) -> bool:
        return self.start_percent <= 0.0 and self.end_percent >= 1.0 and self.ramp == "constant"


@dataclass(frozen=True)
class Sparsity:
    """What GAG Sparsity outputs: the α of the sparse branch's α-entmax."""
    alpha: float = 1.5

    def __post_init__(self):
        check_alpha(self.alpha)


@dataclass(frozen=True)
class GAGSettings:
    """λ (scale), η (eta), ζ (zeta), α (alpha), the layer choice and the schedule.

    target_gain: 0 = off (λ is ``scale``); in [1, 10], the median attention gain each guided
    call should apply: λ is then set per call (gag_core.target_gain) and ``scale`` is unused.
    """
    scale: float = PAPER.scale
    eta: float = PAPER.eta
    zeta: float = PAPER.zeta
    alpha: float = 1.5
    layers: LayerChoice = field(default_factory=LayerChoice)
    schedule: Schedule = field(default_factory=Schedule)
    target_gain: float = 0.0

    def __post_init__(self):
        check_guidance_params(self.scale, self.eta, self.zeta)
        check_alpha(self.alpha)
        check_target_gain(self.target_gain)
