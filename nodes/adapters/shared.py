"""What every GAG patch object shares with ComfyUI's patch bookkeeping."""

from __future__ import annotations


class SharedObject:
    """An object GAG puts into ``model_options`` or ``transformer_options`` that must stay one
    object: a patch, the runtime it uses, or the record of one model call.

    ``ModelPatcher.clone`` deep-copies ``model_options``, ComfyUI may deep-copy the options of a
    call, and ``model_patches_to`` moves every patch with ``.to(device)``; all of them must hand
    back this same object, so that clones share one patch (and one runtime) and a call's blocks
    share one record, instead of copies of the state they refer to.
    """

    def __deepcopy__(self, memo):
        return self

    def to(self, device):
        return self
