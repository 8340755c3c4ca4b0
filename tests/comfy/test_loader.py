"""The pack loads through ComfyUI's own custom-node loader, as a user's ComfyUI would load it.

``nodes.load_custom_node`` imports the folder under a module name made from its path (not
``comfyui_gag``, the name the other tests import it under), takes the V3 ``comfy_entrypoint``
and registers the extension's nodes in ``nodes.NODE_CLASS_MAPPINGS``. Both copies live in this
one pytest process; the test checks they do not interfere and that the loaded copy works.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from pathlib import Path

import pytest
import torch

import tiny_models as tm
from conftest import REPO_ROOT

NODE_IDS = ["GAGModelPatch", "GAGLayers", "GAGSparsity", "GAGSchedule"]


@pytest.fixture(scope="module")
def comfy_nodes(comfy_path, pack):
    # ComfyUI's top-level nodes.py; the pack's own nodes/ folder must not shadow it
    nodes = importlib.import_module("nodes")
    assert Path(nodes.__file__).resolve() == Path(comfy_path) / "nodes.py", (
        f"'import nodes' found {nodes.__file__}, not ComfyUI's nodes.py; check sys.path order")
    return nodes


@pytest.fixture(scope="module")
def loaded(comfy_nodes):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        ok = asyncio.run(comfy_nodes.load_custom_node(str(REPO_ROOT)))
    finally:
        logging.getLogger().removeHandler(handler)
    problems = [r.getMessage() for r in records if r.levelno >= logging.WARNING
                and "pyproject" not in r.getMessage()]
    assert ok, f"load_custom_node returned False; log: {problems}"
    assert not problems, problems
    return comfy_nodes


def test_loader_registers_the_four_nodes(loaded):
    for node_id in NODE_IDS:
        assert node_id in loaded.NODE_CLASS_MAPPINGS, node_id
        cls = loaded.NODE_CLASS_MAPPINGS[node_id]
        assert cls.RELATIVE_PYTHON_MODULE == f"custom_nodes.{REPO_ROOT.name}"
        assert loaded.NODE_DISPLAY_NAME_MAPPINGS[node_id] == cls.GET_SCHEMA().display_name
    web = Path(loaded.EXTENSION_WEB_DIRS[REPO_ROOT.name])
    assert web == REPO_ROOT / "web" and web.is_dir()


def test_loaded_copy_is_separate_from_the_test_import(loaded, pack):
    """The loader's module tree and ``comfyui_gag`` coexist: different module objects, the same
    schemas (apart from the module path ComfyUI records)."""
    test_nodes = importlib.import_module(f"{pack.__name__}.nodes")
    ours = {cls.GET_SCHEMA().node_id: cls for cls in test_nodes.NODES}
    loader_module = str(REPO_ROOT).replace(".", "_x_")
    assert loader_module in sys.modules and loader_module != pack.__name__
    for node_id in NODE_IDS:
        loaded_cls = loaded.NODE_CLASS_MAPPINGS[node_id]
        assert loaded_cls is not ours[node_id]
        assert loaded_cls.__module__.startswith(loader_module + ".")
        loaded_info = dict(loaded_cls.GET_NODE_INFO_V1())
        our_info = dict(ours[node_id].GET_NODE_INFO_V1())
        loaded_info.pop("python_module")
        our_info.pop("python_module")
        assert loaded_info == our_info, node_id


def test_loaded_schema_types(loaded):
    info = {node_id: loaded.NODE_CLASS_MAPPINGS[node_id].GET_NODE_INFO_V1() for node_id in NODE_IDS}
    patch_inputs = info["GAGModelPatch"]["input"]
    assert patch_inputs["required"]["model"][0] == "MODEL"
    assert {k: v[1]["default"] for k, v in patch_inputs["required"].items() if k != "model"} == {
        "scale": 10.0, "eta": 15.0, "zeta": 0.0}
    assert {k: v[0] for k, v in patch_inputs["optional"].items()} == {
        "target_gain": "FLOAT", "layers": "GAG_LAYERS", "sparsity": "GAG_SPARSITY",
        "schedule": "GAG_SCHEDULE"}
    assert patch_inputs["optional"]["target_gain"][1]["default"] == 0.0  # off unless set
    assert info["GAGLayers"]["output"] == ["GAG_LAYERS"]
    assert info["GAGSparsity"]["output"] == ["GAG_SPARSITY"]
    assert info["GAGSparsity"]["input"]["required"]["alpha"][1]["default"] == 1.5
    assert info["GAGSchedule"]["output"] == ["GAG_SCHEDULE"]
    assert info["GAGModelPatch"]["output"] == ["MODEL"]


def test_loaded_nodes_patch_a_model_like_the_test_import(loaded, pack):
    mapping = loaded.NODE_CLASS_MAPPINGS
    model = tm.tiny_sdxl()
    positive, negative = tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2)
    layers = mapping["GAGLayers"].execute(preset="paper", custom="", mode="auto").result[0]
    sparsity = mapping["GAGSparsity"].execute(alpha=1.5).result[0]
    patched = mapping["GAGModelPatch"].execute(model=model, scale=10.0, eta=15.0, zeta=0.0,
                                               layers=layers, sparsity=sparsity).result[0]
    api = importlib.import_module(f"{pack.__name__}.nodes.api")
    reference = api.apply_gag(model)
    plain = tm.sample(model, positive, negative, steps=2, size=16)
    via_loader = tm.sample(patched, positive, negative, steps=2, size=16)
    via_test_import = tm.sample(reference, positive, negative, steps=2, size=16)
    assert torch.equal(via_loader, via_test_import)
    assert not torch.allclose(via_loader, plain, rtol=1e-4, atol=0)
