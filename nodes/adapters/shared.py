"""What every GAG patch object shares with ComfyUI's patch bookkeeping."""

from __future__ import annotations


class Immutable:
    """A patch object that never changes once installed.

    ``ModelPatcher.clone`` deep-copies ``model_options`` and ``model_patches_to`` moves every
    patch with ``.to(device)``; both must hand back this same object, so that clones share one
    patch (and one runtime) instead of copying the tensors or state it refers to.
    """

    def __deepcopy__(self, memo):
        return self

    def to(self, device):
        return self
