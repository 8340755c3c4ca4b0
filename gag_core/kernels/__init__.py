"""Fused GPU backends for gag_attention.

``select_backend`` is how gag_core.attention asks whether a fused kernel can take a call; the
PyTorch path in attention.py stays the reference every kernel is tested against.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["select_backend"]


def select_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                   alpha: float) -> Optional[Callable]:
    """A fused implementation that accepts these inputs, or None for the PyTorch path.

    The returned callable has gag_attention's signature (q, k, v, *, scale, eta, zeta, alpha,
    mask) and returns (B, H, Lq, Dv) in q's dtype.
    """
    return None
