"""The method's published defaults, written once (../shared/docs/method.md: both public
re-implementations of the paper's Eq. 12/13 use them). Everything else — gag_core's keyword
defaults, the nodes' widgets, the settings object, the Python API — reads them from here."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaperDefaults", "PAPER"]


@dataclass(frozen=True)
class PaperDefaults:
    scale: float = 10.0   # λ, strength of the extrapolation
    eta: float = 15.0     # η, cap on the guidance direction's norm
    zeta: float = 0.0     # ζ, share of the orthogonal part kept
    alpha: float = 1.5    # α of the sparse branch's α-entmax


PAPER = PaperDefaults()
