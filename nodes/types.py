"""The custom socket types that connect GAG's companion nodes to GAG Model Patch."""

from comfy_api.latest import io

GAGLayersType = io.Custom("GAG_LAYERS")
GAGSparsityType = io.Custom("GAG_SPARSITY")
GAGScheduleType = io.Custom("GAG_SCHEDULE")
