"""What the DiT hook will install for a family, a layer selection and a ComfyUI: a pure
function of data (no model, no ComfyUI import), so that every case can be tested alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ...gag_core.layer_spec import LayerRef

__all__ = ["InstallPlan", "plan_install"]


@dataclass(frozen=True)
class InstallPlan:
    """How GAG reaches each selected block.

    via_block_info: layers whose attention learns its block from ComfyUI's ``block_type`` /
        ``block_index`` (0.33+); nothing is installed per block for them.
    via_dit_replace: layers that get a ``dit`` block replace marking their attention
        (``dit_replace``: ComfyUI without block info for that group).
    all_blocks: every attention call of the model is guided (no call can tell its block; the
        selection is every block: ``Family.all_blocks_only``).
    block_types: (ComfyUI ``block_type``, group name) pairs the override trusts.
    """
    via_block_info: tuple[LayerRef, ...]
    via_dit_replace: tuple[LayerRef, ...]
    all_blocks: bool
    block_types: tuple[tuple[str, str], ...]

    @property
    def relies_on_block_info(self) -> bool:
        """Every guided call is told its block by ComfyUI: its absence means something replaced
        the model's code (the model-call check may then raise)."""
        return not self.via_dit_replace and not self.all_blocks


def plan_install(family, layers: Sequence[LayerRef], block_info: bool,
                 available: Sequence[LayerRef], model: str = "this model") -> InstallPlan:
    """The plan for GAG on ``layers`` of a ``family`` model.

    block_info: whether the model's forward tells attention its block (``comfy_compat.
    model_sets_block_info``). available: every layer the model has (``available_layers``), to
    tell a whole-model selection. model: the model's name, for messages.

    Raises ValueError when a selected block cannot be reached on this ComfyUI, or when a
    family that can only be guided as a whole gets a partial selection.
    """
    trusted = tuple((g.block_type, g.name) for g in family.groups if block_info and g.block_type)
    trusted_groups = {name for _, name in trusted}
    via_info = tuple(ref for ref in layers if ref.group in trusted_groups)
    via_dit = tuple(ref for ref in layers if ref.group not in trusted_groups)
    unreachable = [ref for ref in via_dit if family.group(ref.group).dit_replace is None]
    if unreachable and family.all_blocks_only:
        if set(layers) != set(available):
            raise ValueError(
                f"GAG guides {family.display_name} ({model}) on all its blocks together or not "
                f"at all (layer preset 'paper' or 'all'): ComfyUI tells its attention neither "
                f"which block it is in nor offers 'dit' block replaces, so one block's "
                f"attention cannot be told from another's")
        return InstallPlan((), (), True, trusted)
    if unreachable:
        raise ValueError(f"GAG cannot reach the '{unreachable[0].group}' blocks of "
                         f"{family.display_name} on this ComfyUI: it neither tells their "
                         f"attention which block it is in nor offers a 'dit' block replace")
    return InstallPlan(via_info, via_dit, False, trusted)
