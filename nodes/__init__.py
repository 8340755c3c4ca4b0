"""ComfyUI glue: the node classes and the extension that lists them."""

from __future__ import annotations

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .layers import GAGLayers
from .model_patch import GAGModelPatch
from .schedule_node import GAGSchedule
from .sparsity import GAGSparsity

NODES: list[type[io.ComfyNode]] = [GAGModelPatch, GAGLayers, GAGSparsity, GAGSchedule]


class GAGExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
