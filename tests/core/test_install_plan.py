"""What the DiT hook installs (``nodes.adapters.install_plan.plan_install``), for each way a
family's blocks can be reached, without a model and without ComfyUI.

The pack is loaded as a package with the node layer's ``__init__`` left unrun (it defines the
ComfyUI node classes); the family table, the hooks and the plan import without ComfyUI.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAIN_PACK = "gag_pack_without_comfyui"


def load_without_comfyui(module: str):
    """Import ``<pack>.<module>`` with the pack's ``nodes/__init__`` (ComfyUI's node API) unrun."""
    if PLAIN_PACK not in sys.modules:
        spec = importlib.machinery.ModuleSpec(PLAIN_PACK, None, is_package=True)
        pack = importlib.util.module_from_spec(spec)
        pack.__path__ = [str(REPO_ROOT)]
        sys.modules[PLAIN_PACK] = pack
        spec = importlib.machinery.ModuleSpec(f"{PLAIN_PACK}.nodes", None, is_package=True)
        nodes = importlib.util.module_from_spec(spec)
        nodes.__path__ = [str(REPO_ROOT / "nodes")]
        sys.modules[f"{PLAIN_PACK}.nodes"] = nodes
    return importlib.import_module(f"{PLAIN_PACK}.{module}")


@pytest.fixture(scope="module")
def plan():
    return load_without_comfyui("nodes.adapters.install_plan")


@pytest.fixture(scope="module")
def families():
    return load_without_comfyui("nodes.adapters.families")


@pytest.fixture(scope="module")
def LayerRef():
    return load_without_comfyui("gag_core.layer_spec").LayerRef


def layers_of(LayerRef, **groups):
    return [LayerRef(group, i) for group, count in groups.items() for i in range(count)]


def test_block_info_reaches_every_flux_block_with_nothing_installed_per_block(plan, families,
                                                                             LayerRef):
    flux = families.family_by_id("flux")
    layers = layers_of(LayerRef, double=3, single=4)
    result = plan.plan_install(flux, layers, True, layers)
    assert result.via_block_info == tuple(layers)
    assert result.via_dit_replace == () and not result.all_blocks
    assert dict(result.block_types) == {"double": "double", "single": "single"}
    assert result.relies_on_block_info


def test_without_block_info_flux_blocks_get_dit_replaces(plan, families, LayerRef):
    flux = families.family_by_id("flux")
    layers = layers_of(LayerRef, double=2, single=2)[1:]
    result = plan.plan_install(flux, layers, False, layers_of(LayerRef, double=2, single=2))
    assert result.via_dit_replace == tuple(layers) and result.via_block_info == ()
    assert result.block_types == () and not result.relies_on_block_info


def test_a_group_comfyui_never_labels_goes_through_dit_replaces_even_with_block_info(
        plan, families, LayerRef):
    sd3 = families.family_by_id("sd3")   # ComfyUI never sets block_type for MMDiT
    layers = layers_of(LayerRef, joint=3)
    result = plan.plan_install(sd3, layers, True, layers)
    assert result.via_dit_replace == tuple(layers) and result.via_block_info == ()


def test_groups_are_planned_one_by_one(plan, families, LayerRef):
    """A family whose single blocks carry no block_type mixes both paths on one model."""
    flux = families.family_by_id("flux")
    double, single = flux.groups
    mixed = dataclasses.replace(flux, groups=(double, dataclasses.replace(single,
                                                                          block_type=None)))
    layers = layers_of(LayerRef, double=2, single=2)
    result = plan.plan_install(mixed, layers, True, layers)
    assert result.via_block_info == tuple(layers[:2])
    assert result.via_dit_replace == tuple(layers[2:])
    assert not result.relies_on_block_info


def test_blocks_neither_labelled_nor_replaceable_are_refused_by_group(plan, families, LayerRef):
    zimage = families.family_by_id("zimage")   # block info only, no dit replaces
    layers = layers_of(LayerRef, joint=2)
    with pytest.raises(ValueError, match="cannot reach the 'joint' blocks of Z-Image"):
        plan.plan_install(zimage, layers, False, layers)
    assert plan.plan_install(zimage, layers, True, layers).via_block_info == tuple(layers)


def test_a_whole_model_family_is_guided_as_a_whole_or_refused(plan, families, LayerRef):
    hidream = families.family_by_id("hidream")
    every = layers_of(LayerRef, double=2, single=3)
    result = plan.plan_install(hidream, every, True, every, "HiDream/x")
    assert result.all_blocks and result.via_block_info == result.via_dit_replace == ()
    assert not result.relies_on_block_info
    with pytest.raises(ValueError, match=r"HiDream \(HiDream/x\) on all its blocks together.*"
                                         r"'paper' or 'all'"):
        plan.plan_install(hidream, every[:2], True, every, "HiDream/x")


def test_the_plan_is_frozen(plan, families, LayerRef):
    layers = layers_of(LayerRef, double=1)
    result = plan.plan_install(families.family_by_id("flux"), layers, True, layers)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.all_blocks = True


def test_the_table_and_the_plan_import_without_comfyui():
    """In a fresh interpreter: loading the family table, the hooks and the plan imports no
    ComfyUI module (the hooks import ComfyUI only inside the functions that need it)."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import test_install_plan as t; t.load_without_comfyui('nodes.adapters.install_plan'); "
            f"t.load_without_comfyui('nodes.adapters'); "
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            f"('comfy', 'comfy_api', 'comfy_extras')); print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
