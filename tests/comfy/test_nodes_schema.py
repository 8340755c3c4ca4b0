"""The four GAG nodes as ComfyUI's front end sees them, and the errors bad inputs give.

Schemas are read through ``GET_NODE_INFO_V1`` — what ComfyUI's /object_info serves — so a
missing tooltip, a wrong default or a socket type that does not connect shows up here as it would
in the editor. Validation is checked at the node level: every bad value must raise a ValueError
that names the parameter and the value, before any model is touched.
"""

from __future__ import annotations

import importlib
import math

import pytest

import tiny_models as tm

NODE_IDS = ["GAGModelPatch", "GAGLayers", "GAGSparsity", "GAGSchedule"]


@pytest.fixture(scope="module")
def node_classes(pack):
    nodes = importlib.import_module(f"{pack.__name__}.nodes")
    return {cls.GET_SCHEMA().node_id: cls for cls in nodes.NODES}


@pytest.fixture(scope="module")
def infos(node_classes):
    return {node_id: cls.GET_NODE_INFO_V1() for node_id, cls in node_classes.items()}


def all_inputs(info) -> dict:
    return {**info["input"].get("required", {}), **info["input"].get("optional", {})}


def test_the_extension_lists_exactly_the_four_nodes(node_classes):
    assert sorted(node_classes) == sorted(NODE_IDS)


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_node_is_described_and_every_input_has_a_tooltip(infos, node_id):
    info = infos[node_id]
    assert info["display_name"].startswith("GAG ")
    assert info["category"] == "model_patches/GAG"
    assert len(info["description"]) > 60
    inputs = all_inputs(info)
    assert inputs, node_id
    for name, (_, options) in inputs.items():
        assert len(options.get("tooltip", "")) > 15, f"{node_id}.{name} has no useful tooltip"


def test_model_patch_schema(infos):
    info = infos["GAGModelPatch"]
    required, optional = info["input"]["required"], info["input"]["optional"]
    assert info["input_order"]["required"] == ["model", "scale", "eta", "zeta"]
    assert required["model"][0] == "MODEL"
    assert {k: (v[0], v[1]["default"]) for k, v in required.items() if k != "model"} == {
        "scale": ("FLOAT", 10.0), "eta": ("FLOAT", 15.0), "zeta": ("FLOAT", 0.0)}
    assert (required["zeta"][1]["min"], required["zeta"][1]["max"]) == (0.0, 1.0)
    assert required["eta"][1]["min"] > 0
    assert {k: v[0] for k, v in optional.items()} == {
        "target_gain": "FLOAT", "layers": "GAG_LAYERS", "sparsity": "GAG_SPARSITY",
        "schedule": "GAG_SCHEDULE"}
    # Optional, first of the optional inputs: its widget follows zeta's, so workflows saved
    # before it existed keep their three widget values in place.
    assert info["input_order"]["optional"][0] == "target_gain"
    target = optional["target_gain"][1]
    assert (target["default"], target["min"], target["max"]) == (0.0, 0.0, 10.0)
    assert info["output"] == ["MODEL"]


def test_companion_schemas(infos):
    layers = infos["GAGLayers"]["input"]["required"]
    assert layers["preset"][0] == "COMBO"
    options = layers["preset"][1]["options"]
    assert layers["preset"][1]["default"] == "paper" and options[0] == "paper"
    assert {"paper", "all", "input", "output", "middle", "custom"} <= set(options)
    assert options[-1] == "custom"
    assert layers["custom"][0] == "STRING" and layers["custom"][1]["multiline"] is True
    assert layers["mode"][1]["options"] == ["auto", "text", "joint"]
    assert layers["mode"][1]["default"] == "auto"

    alpha = infos["GAGSparsity"]["input"]["required"]["alpha"]
    assert alpha[0] == "FLOAT" and alpha[1]["default"] == 1.5
    assert 1.0 < alpha[1]["min"] and alpha[1]["max"] == 2.0

    schedule = infos["GAGSchedule"]["input"]["required"]
    assert (schedule["start_percent"][1]["default"], schedule["end_percent"][1]["default"]) == (
        0.0, 1.0)
    assert schedule["ramp"][1]["options"] == ["constant", "linear up", "linear down",
                                              "cosine up", "cosine down"]
    assert schedule["ramp"][1]["default"] == "constant"


def test_companion_outputs_plug_into_the_model_patch(infos):
    optional = infos["GAGModelPatch"]["input"]["optional"]
    for node_id, socket in [("GAGLayers", "layers"), ("GAGSparsity", "sparsity"),
                            ("GAGSchedule", "schedule")]:
        assert infos[node_id]["output"] == [optional[socket][0]], node_id


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(pack):
    return tm.tiny_sdxl()


def _call(node_classes, node_id, model, **kwargs):
    cls = node_classes[node_id]
    if node_id == "GAGModelPatch":
        kwargs = {"model": model, "scale": 10.0, "eta": 15.0, "zeta": 0.0, **kwargs}
    elif node_id == "GAGLayers":
        kwargs = {"preset": "custom", "custom": "", "mode": "auto", **kwargs}
    elif node_id == "GAGSchedule":
        kwargs = {"start_percent": 0.0, "end_percent": 1.0, "ramp": "constant", **kwargs}
    return cls.execute(**kwargs)


BAD_INPUTS = [
    # node, inputs, words the message must contain
    ("GAGModelPatch", dict(eta=0.0), ["eta", "> 0", "0.0"]),
    ("GAGModelPatch", dict(eta=-2.0), ["eta", "-2.0"]),
    ("GAGModelPatch", dict(eta=math.nan), ["eta", "nan"]),
    ("GAGModelPatch", dict(zeta=-0.1), ["zeta", "[0, 1]", "-0.1"]),
    ("GAGModelPatch", dict(zeta=1.5), ["zeta", "[0, 1]", "1.5"]),
    ("GAGModelPatch", dict(zeta=math.nan), ["zeta", "nan"]),
    ("GAGModelPatch", dict(scale=math.nan), ["scale", "finite", "nan"]),
    ("GAGModelPatch", dict(scale=math.inf), ["scale", "finite", "inf"]),
    ("GAGModelPatch", dict(target_gain=0.5), ["target_gain", "[1, 10]", "0.5"]),
    ("GAGModelPatch", dict(target_gain=12.0), ["target_gain", "[1, 10]", "12.0"]),
    ("GAGModelPatch", dict(target_gain=math.nan), ["target_gain", "nan"]),
    ("GAGSparsity", dict(alpha=1.0), ["alpha", "(1, 2]", "1.0"]),
    ("GAGSparsity", dict(alpha=0.5), ["alpha", "(1, 2]", "0.5"]),
    ("GAGSparsity", dict(alpha=2.5), ["alpha", "(1, 2]", "2.5"]),
    ("GAGSparsity", dict(alpha=math.nan), ["alpha", "nan"]),
    ("GAGSchedule", dict(start_percent=0.8, end_percent=0.2),
     ["start_percent", "0.8", "end_percent", "0.2"]),
    ("GAGSchedule", dict(start_percent=-0.1), ["start_percent", "[0, 1]", "-0.1"]),
    ("GAGSchedule", dict(end_percent=1.5), ["end_percent", "[0, 1]", "1.5"]),
    ("GAGSchedule", dict(end_percent=math.nan), ["end_percent", "nan"]),
    ("GAGSchedule", dict(ramp="exponential"), ["ramp", "exponential", "linear up"]),
    ("GAGLayers", dict(custom=""), ["empty"]),
    ("GAGLayers", dict(custom="input 4-"), ["'4-'", "input 4-"]),
    ("GAGLayers", dict(custom="input x"), ["'x'", "not a number"]),
    ("GAGLayers", dict(custom="output 8-4"), ["8-4", "backwards", "4-8"]),
    ("GAGLayers", dict(custom="4-8"), ["'4-8'", "group"]),
    ("GAGLayers", dict(custom="all 3"), ["all", "all 3"]),
    ("GAGLayers", dict(custom="input 4:1-"), ["'1-'"]),
    ("GAGLayers", dict(preset="paper", mode="both"), ["mode", "both", "joint"]),
]


@pytest.mark.parametrize("node_id,inputs,words", BAD_INPUTS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in i.items())}"
                              for n, i, _ in BAD_INPUTS])
def test_bad_input_is_a_clear_value_error(node_classes, tiny_model, node_id, inputs, words):
    with pytest.raises(ValueError) as info:
        _call(node_classes, node_id, tiny_model, **inputs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_bad_input_leaves_no_patched_model_behind(node_classes, tiny_model):
    """Validation happens before cloning: the input's options are not touched on failure."""
    before = repr(tiny_model.model_options)
    with pytest.raises(ValueError):
        _call(node_classes, "GAGModelPatch", tiny_model, eta=-1.0)
    assert repr(tiny_model.model_options) == before


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_widget_bound_and_default_is_accepted(node_classes, infos, tiny_model, node_id):
    """The widgets must not offer values the validation then rejects."""
    required = infos[node_id]["input"]["required"]
    numeric = {name: options for name, (kind, options) in required.items() if kind == "FLOAT"}
    for name, options in numeric.items():
        for key in ("default", "min", "max"):
            value = options[key]
            if node_id == "GAGSchedule":  # keep the window ordered while moving one end
                other = {"start_percent": "end_percent", "end_percent": "start_percent"}[name]
                extra = {other: 1.0 if other == "end_percent" else 0.0}
            else:
                extra = {}
            kwargs = {name: value, **extra}
            if node_id == "GAGLayers":
                kwargs = {"preset": "paper", **kwargs}
            _call(node_classes, node_id, tiny_model, **kwargs)
    for name, (kind, options) in required.items():
        if kind == "COMBO":
            for option in options["options"]:
                kwargs = {name: option}
                if node_id == "GAGLayers":
                    kwargs = {"preset": "paper", "custom": "all", **kwargs}
                result = _call(node_classes, node_id, tiny_model, **kwargs).result[0]
                assert result is not None
