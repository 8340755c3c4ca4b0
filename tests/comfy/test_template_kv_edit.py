"""ComfyUI's official "FLUX.2 [klein] 9B KV image edit" template with a GAG Model Patch, through
/prompt (issue 24, item 3).

The template is read from where ComfyUI 0.33's requirements install it (the package
``comfyui_workflow_templates_json``, ``templates/image_flux2_klein_9b_kv_image_edit.json``); it
is never copied into this repository. It is a UI-format workflow with two subgraphs ("Reference
Conditioning": VAEEncode + two ReferenceLatent each), and puts ComfyUI's core FluxKVCache node
between the diffusion model loader and the CFGGuider. The test does what a user would: opens the
template, inserts a GAG Model Patch right after FluxKVCache (between it and the guider), and
queues it. On the way to /prompt, as in test_workflows.py's end-to-end runs, the subgraphs are
expanded (ui_to_api.expand_subgraphs), the graph is converted to API format, the loaders and the
text encoder are swapped for the test node pack's tiny stand-ins (the tiny FLUX.2 Klein,
registry id "flux2-klein"), and the two input images are small PNGs made here. Steps, sampler,
scheduler, guider (CFG 1), noise seed and prompt stay as shipped; only the image size shrinks
(the template's "Scale Image to Total Pixels" nodes are set to 128×128 pixels instead of 1 MP).

From the second step FluxKVCache drops the reference tokens from the queries and appends their
cached keys and values to the keys. GAG must guide those steps too: the readout line of the run
must count every step the sampler ran. The readout counts only steps in which GAG guided a call
(a GAG that let the cached steps through would log "1 step"), which a control run shows: the
same graph with GAG's schedule window closing after the first step logs exactly one step. A
second control, the template with FluxKVCache bypassed, must log the same layers and steps as
with it.

Skips: ComfyUI 0.3.64 has neither FLUX.2 nor this template package (its requirements pin
comfyui_workflow_templates 0.1.x); the test also skips where the package or the file is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from comfy_server import TEST_NODE_PACK, shared_server
from ui_to_api import MODE_BYPASSED, expand_subgraphs, link_as_list, ui_to_api

pytestmark = pytest.mark.comfy

TEMPLATE_PACKAGE = "comfyui_workflow_templates_json"
TEMPLATE_FILE = "image_flux2_klein_9b_kv_image_edit.json"
NEEDED_NODES = {"FluxKVCache", "ReferenceLatent", "EmptyFlux2LatentImage", "Flux2Scheduler"}
FAMILY = "flux2-klein"   # the tiny FLUX.2 Klein of tests/comfy/tiny_families.py
# The loader/encoder swap of test_workflows.py's end-to-end runs (tests/comfy/test_node_pack).
STAND_INS = {"UNETLoader": "GAGTestTinyDiffusionModel",
             "CLIPLoader": "GAGTestTinyTextEncoderLoader",
             "VAELoader": "GAGTestTinyVAE",
             "CLIPTextEncode": "GAGTestTinyTextEncode"}
IMAGE_PIXELS = 128 * 128   # what "Scale Image to Total Pixels" makes of the input images
INPUT_IMAGE_SIZE = 64      # the PNGs placed in the server's input folder (scaled up to 128)
# The pack's documented GAG settings (the bundled workflows'): the paper's λ, η, ζ.
GAG_WIDGETS = [10.0, 15.0, 0.0]
READOUT = re.compile(r"GAG: attention gain .*\((\d+) layers?, (\d+) steps?[;)]")


def template_path() -> Path:
    """The template file from the installed package; skips (saying why) when it is absent."""
    import importlib.resources
    try:
        folder = importlib.resources.files(TEMPLATE_PACKAGE) / "templates"
    except ModuleNotFoundError:
        from conftest import COMFYUI_VERSION
        pytest.skip(f"the Python package {TEMPLATE_PACKAGE} is not installed (ComfyUI "
                    f"{COMFYUI_VERSION}'s requirements do not bring it: it comes with ComfyUI "
                    f"0.33's, which also has FLUX.2 and FluxKVCache; 0.3.64 has neither)")
    path = Path(str(folder / TEMPLATE_FILE))
    if not path.is_file():
        from importlib.metadata import version
        pytest.skip(f"{TEMPLATE_PACKAGE} {version(TEMPLATE_PACKAGE)} has no "
                    f"templates/{TEMPLATE_FILE}")
    return path


@pytest.fixture(scope="module")
def template() -> dict:
    return json.loads(template_path().read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server(template):
    # Depends on ``template``: where it skips, no server is started.
    with shared_server([TEST_NODE_PACK], frontend=True) as info:  # test_workflows' server
        yield info


@pytest.fixture(scope="module")
def object_info(server):
    info = server.get_json("/object_info")
    missing = NEEDED_NODES - set(info)
    if missing:
        pytest.skip(f"this ComfyUI has no {', '.join(sorted(missing))} node (FLUX.2 and "
                    "FluxKVCache are ComfyUI 0.33's)")
    return info


# --- editing the UI graph as a user would -------------------------------------------------------

def nodes_of_type(workflow: dict, kind: str) -> list[dict]:
    return [n for n in workflow["nodes"] if n["type"] == kind]


def insert_after(workflow: dict, kind: str, node_type: str, widgets_values: list) -> dict:
    """A copy of the flat UI ``workflow`` with a new ``node_type`` node (one MODEL in, one MODEL
    out) between the only ``kind`` node and every consumer of its MODEL output."""
    flat = json.loads(json.dumps(workflow))
    (before,) = nodes_of_type(flat, kind)
    links = [link_as_list(link) for link in flat["links"]]
    new_id = max(int(n["id"]) for n in flat["nodes"]) + 1
    next_link = max(int(link[0]) for link in links) + 1
    moved = []
    for link in links:
        if int(link[1]) == before["id"] and int(link[2]) == 0:
            link[1], link[2] = new_id, 0   # consumers now read the new node's output
            moved.append(link[0])
    assert moved, f"nothing consumes {kind}'s MODEL output"
    links.append([next_link, before["id"], 0, new_id, 0, "MODEL"])
    before["outputs"][0]["links"] = [next_link]
    flat["nodes"].append({
        "id": new_id, "type": node_type, "pos": [0, 0], "size": [300, 130], "flags": {},
        "order": len(flat["nodes"]), "mode": 0, "properties": {},
        "inputs": [{"name": "model", "type": "MODEL", "link": next_link}],
        "outputs": [{"name": "MODEL", "type": "MODEL", "links": moved}],
        "widgets_values": list(widgets_values)})
    flat["links"] = links
    flat["last_node_id"], flat["last_link_id"] = new_id, next_link
    return flat


def with_gag(template: dict, bypass_cache: bool = False) -> dict:
    """The template, subgraphs expanded, with a GAG Model Patch right after FluxKVCache;
    ``bypass_cache``: FluxKVCache bypassed (mode 4), as a user would switch it off."""
    flat = insert_after(expand_subgraphs(template), "FluxKVCache", "GAGModelPatch",
                        GAG_WIDGETS)
    if bypass_cache:
        nodes_of_type(flat, "FluxKVCache")[0]["mode"] = MODE_BYPASSED
    return flat


# --- the way to /prompt ---------------------------------------------------------------------------

def on_tiny_models(prompt: dict) -> dict:
    """Swap the loaders and the text encoder for the tiny stand-ins and shrink the images;
    everything else stays as shipped."""
    for node in prompt.values():
        kind = node["class_type"]
        if kind in STAND_INS:
            node["class_type"] = STAND_INS[kind]
            if kind != "CLIPTextEncode":
                node["inputs"]["family"] = FAMILY
        elif kind == "ImageScaleToTotalPixels":
            node["inputs"]["megapixels"] = IMAGE_PIXELS / 2 ** 20   # the node's "megapixel"
    return prompt


def place_input_images(server, prompt: dict, folder: Path) -> None:
    """A small, distinct PNG for every LoadImage of the prompt, made in ``folder`` and copied
    into the server's input folder under the name the template gives it."""
    import numpy as np
    from PIL import Image
    target = server.base_dir / "input"
    target.mkdir(exist_ok=True)
    loads = sorted(node["inputs"]["image"] for node in prompt.values()
                   if node["class_type"] == "LoadImage")
    assert len(loads) == 2, loads   # the person and the outfit
    ramp = np.linspace(0, 255, INPUT_IMAGE_SIZE)
    for i, name in enumerate(loads):
        pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, -ramp) % 256,
                           np.full((INPUT_IMAGE_SIZE,) * 2, 60.0 + 120 * i)], axis=-1)
        made = folder / name
        Image.fromarray(pixels.astype(np.uint8)).save(made)
        shutil.copy(made, target / name)


def sampler_steps(prompt: dict) -> int:
    """Steps the template's sampler runs: SamplerCustomAdvanced samples the sigmas of its
    Flux2Scheduler (steps + 1 values)."""
    (sampler,) = [v for v in prompt.values() if v["class_type"] == "SamplerCustomAdvanced"]
    scheduler = prompt[sampler["inputs"]["sigmas"][0]]
    assert scheduler["class_type"] == "Flux2Scheduler", scheduler
    return scheduler["inputs"]["steps"]


def readout_of_run(server, prompt: dict) -> tuple[int, int]:
    """(layers, steps) of the GAG readout line the run of ``prompt`` logged."""
    before = len(READOUT.findall(server.log()))
    history = server.run_prompt(prompt, timeout=300)
    (save,) = [k for k, v in prompt.items() if v["class_type"] == "SaveImage"]
    assert len(server.output_files(history, save)) == 1, "the template saved no image"
    deadline = time.monotonic() + 15
    while len(READOUT.findall(server.log())) == before and time.monotonic() < deadline:
        time.sleep(0.2)   # the log reaches its file a moment after the prompt's messages
    found = READOUT.findall(server.log())[before:]
    assert len(found) == 1, (found, server.log_tail())
    return int(found[0][0]), int(found[0][1])


# --- the test -----------------------------------------------------------------------------------

def test_the_template_is_a_kv_cache_edit_with_subgraphs(template):
    """What the test below relies on in the shipped file: two subgraph instances, FluxKVCache
    feeding the guider, two input images, 4 steps."""
    subgraphs = {d["id"] for d in template["definitions"]["subgraphs"]}
    assert len([n for n in template["nodes"] if n["type"] in subgraphs]) == 2
    flat = expand_subgraphs(template)
    assert not any(n["type"] in subgraphs for n in flat["nodes"])
    assert len(nodes_of_type(flat, "ReferenceLatent")) == 4
    assert len(nodes_of_type(flat, "VAEEncode")) == 2
    (cache,) = nodes_of_type(flat, "FluxKVCache")
    consumers = {int(link[3]) for link in map(link_as_list, flat["links"])
                 if int(link[1]) == cache["id"]}
    assert [n["type"] for n in flat["nodes"] if n["id"] in consumers] == ["CFGGuider"]
    assert len(nodes_of_type(flat, "LoadImage")) == 2
    assert nodes_of_type(flat, "Flux2Scheduler")[0]["widgets_values"][0] == 4


def test_gag_after_flux_kv_cache_guides_every_step_of_the_template(template, server,
                                                                   object_info, tmp_path):
    prompt = on_tiny_models(ui_to_api(with_gag(template), object_info))
    (gag,) = [k for k, v in prompt.items() if v["class_type"] == "GAGModelPatch"]
    (cache,) = [k for k, v in prompt.items() if v["class_type"] == "FluxKVCache"]
    (guider,) = [v for v in prompt.values() if v["class_type"] == "CFGGuider"]
    assert prompt[gag]["inputs"]["model"] == [cache, 0] and guider["inputs"]["model"] == [gag, 0]
    assert guider["inputs"]["cfg"] == 1   # as shipped
    place_input_images(server, prompt, tmp_path)
    steps = sampler_steps(prompt)

    layers, guided_steps = readout_of_run(server, prompt)
    assert layers > 0
    assert guided_steps == steps, (
        f"GAG guided {guided_steps} of the {steps} steps the sampler ran after FluxKVCache")

    # Control 1: the readout counts guided steps, not sampler steps — with GAG's window closing
    # after the first step, the same graph logs 1 step (what a GAG that let FluxKVCache's
    # cached steps through would log).
    first_only = json.loads(json.dumps(prompt))
    first_only["gag_first_step"] = {"class_type": "GAGSchedule",
                                    "inputs": {"start_percent": 0.0, "end_percent": 0.05,
                                               "ramp": "constant"}}
    first_only[gag]["inputs"]["schedule"] = ["gag_first_step", 0]
    assert readout_of_run(server, first_only) == (layers, 1)

    # Control 2: without the cache (FluxKVCache bypassed) every step is an ordinary one; with
    # it, GAG guides as many layers and steps.
    plain = on_tiny_models(ui_to_api(with_gag(template, bypass_cache=True), object_info))
    assert not any(v["class_type"] == "FluxKVCache" for v in plain.values())
    assert readout_of_run(server, plain) == (layers, steps)


# --- the subgraph expander on a graph made to exercise it -----------------------------------------

def _node(node_id, kind, inputs=(), outputs=(), widgets=(), mode=0):
    return {"id": node_id, "type": kind, "mode": mode, "widgets_values": list(widgets),
            "inputs": [{"name": name, "type": t, "link": link, **({"widget": {"name": name}}
                                                                  if widget else {})}
                       for name, t, link, widget in inputs],
            "outputs": [{"name": name, "type": t, "links": []} for name, t in outputs]}


def _link(link_id, origin, origin_slot, target, target_slot, kind):
    return {"id": link_id, "origin_id": origin, "origin_slot": origin_slot,
            "target_id": target, "target_slot": target_slot, "type": kind}


def test_subgraphs_expand_nested_reused_and_passed_through():
    """Subgraph "outer" (used twice) holds a node and an instance of subgraph "inner"; its
    second input is wired straight to its second output, and its unconnected third input
    feeds an inner widget, which keeps the inner node's own value."""
    inner = {"id": "inner", "name": "inner",
             "inputs": [{"name": "x", "type": "LATENT"}], "outputs": [{"name": "y",
                                                                      "type": "LATENT"}],
             "nodes": [_node(20, "Blur", [("samples", "LATENT", 1, False)],
                             [("LATENT", "LATENT")], [0.5])],
             "links": [_link(1, -10, 0, 20, 0, "LATENT"), _link(2, 20, 0, -20, 0, "LATENT")]}
    outer = {"id": "outer", "name": "outer",
             "inputs": [{"name": "a", "type": "LATENT"}, {"name": "b", "type": "MODEL"},
                        {"name": "strength", "type": "FLOAT"}],
             "outputs": [{"name": "out", "type": "LATENT"}, {"name": "model", "type": "MODEL"}],
             "nodes": [_node(10, "Sharpen", [("samples", "LATENT", 5, False),
                                             ("strength", "FLOAT", 6, True)],
                             [("LATENT", "LATENT")], [0.25]),
                       _node(11, "inner", [("x", "LATENT", 7, False)], [("y", "LATENT")])],
             "links": [_link(5, -10, 0, 10, 0, "LATENT"), _link(6, -10, 2, 10, 1, "FLOAT"),
                       _link(7, 10, 0, 11, 0, "LATENT"), _link(8, 11, 0, -20, 0, "LATENT"),
                       _link(9, -10, 1, -20, 1, "MODEL")]}
    instance_inputs = lambda a, b: [("a", "LATENT", a, False), ("b", "MODEL", b, False),
                                    ("strength", "FLOAT", None, True)]
    workflow = {
        "nodes": [_node(1, "Source", [], [("LATENT", "LATENT"), ("MODEL", "MODEL")]),
                  _node(2, "outer", instance_inputs(1, 2), [("out", "LATENT"),
                                                            ("model", "MODEL")]),
                  _node(3, "outer", instance_inputs(3, 4), [("out", "LATENT"),
                                                            ("model", "MODEL")]),
                  _node(4, "Sink", [("samples", "LATENT", 5, False),
                                    ("model", "MODEL", 6, False)])],
        "links": [[1, 1, 0, 2, 0, "LATENT"], [2, 1, 1, 2, 1, "MODEL"],
                  [3, 2, 0, 3, 0, "LATENT"], [4, 2, 1, 3, 1, "MODEL"],
                  [5, 3, 0, 4, 0, "LATENT"], [6, 3, 1, 4, 1, "MODEL"]],
        "definitions": {"subgraphs": [outer, inner]}}
    flat = expand_subgraphs(workflow)
    kinds = [n["type"] for n in flat["nodes"]]
    assert sorted(kinds) == ["Blur", "Blur", "Sharpen", "Sharpen", "Sink", "Source"]
    ids = [n["id"] for n in flat["nodes"]]
    assert len(set(ids)) == len(ids)
    nodes = {n["id"]: n for n in flat["nodes"]}
    links = {link[0]: link for link in flat["links"]}
    assert len(links) == len(flat["links"])

    def source(node, slot):
        link = links[node["inputs"][slot]["link"]]
        return nodes[link[1]], link[2]

    # Sink ← Blur ← Sharpen ← Blur ← Sharpen ← Source; Sink's model passes straight through.
    chain, node = [], nodes[ids[kinds.index("Sink")]]
    while node["inputs"]:
        node, slot = source(node, 0)
        chain.append(node["type"])
    assert chain == ["Blur", "Sharpen", "Blur", "Sharpen", "Source"]
    assert source(nodes[ids[kinds.index("Sink")]], 1) == (nodes[1], 1)
    for sharpen in (n for n in flat["nodes"] if n["type"] == "Sharpen"):
        assert sharpen["inputs"][1]["link"] is None and sharpen["widgets_values"] == [0.25]
    for link_id, origin, origin_slot, target, target_slot, _ in flat["links"]:
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
    assert "definitions" not in flat and workflow["nodes"][1]["type"] == "outer"  # a copy
