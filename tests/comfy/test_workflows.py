"""The bundled workflows (workflows/*.json) against a real ComfyUI server.

One server (tests/comfy/comfy_server.py) runs for the whole module: this pack plus the test-only
node pack tests/comfy/test_node_pack, in a fresh base directory into which empty files with the
names the workflows expect are placed under models/<folder>/, so that the loaders' file combos
list them and every widget value can be checked strictly against the live /object_info.

* format: UI-format JSON as ComfyUI's front end saves it (version 0.4), internally consistent;
* fit: every node type exists on the server; widget values fit each input (count, type, range,
  combo choice); links join matching socket types; required sockets are connected;
* documentation: every model file a loader names is listed in the node's properties.models
  (name, URL, folder) and in the Read-me note with its models/<folder>/ path;
* A/B fairness: the two Save Image (Save Video) nodes compute the same graph except for the GAG
  Model Patch nodes (one per model: Wan 2.2's two experts get one each), with the pack's
  documented GAG settings;
* serving: ComfyUI's template browser lists the workflows and serves them and their thumbnails;
* end to end: converted to API format, with the model loaders and text encoders swapped for
  tiny random-weight stand-ins, each workflow runs through POST /prompt (steps, samplers, CFG and
  GAG settings as shipped; 128-pixel images, 9-frame videos); both images (videos) come out, and
  the sampled latents of A and B (saved beside them) differ, while with GAG Model Patch bypassed
  they are equal.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

import tiny_families as tf
from comfy_server import REPO_ROOT, TEST_NODE_PACK, PACK_FOLDER_NAME, shared_server
from ui_to_api import (DYNAMIC_COMBO, VIRTUAL_NODE_TYPES, combo_choices, input_type,
                       ordered_inputs, spec_options, ui_to_api, widget_slots, widget_values,
                       widget_values_and_specs)

WORKFLOW_DIR = REPO_ROOT / "workflows"
WORKFLOW_FILES = sorted(WORKFLOW_DIR.glob("*.json"))
NAMES = [p.stem for p in WORKFLOW_FILES]

# One A/B workflow per family the pack documents.
EXPECTED = {"gag_sdxl_base_cfg", "gag_hyper_sdxl_8step", "gag_dmd2_sdxl_4step", "gag_flux1_dev",
            "gag_flux1_schnell", "gag_qwen_image", "gag_flux2_klein_4step", "gag_z_image_turbo",
            "gag_wan22_t2v_lightning_4step", "gag_wan22_ti2v_5b"}
# Workflows whose nodes only newer ComfyUI releases have: checked against the server where it has
# them, skipped (saying why) where it does not. ComfyUI 0.3.64 has no FLUX.2 nodes.
NEEDS_NODES = {"gag_flux2_klein_4step": ("FLUX.2", {"EmptyFlux2LatentImage", "Flux2Scheduler"})}
# Workflows for models older ComfyUI versions cannot run: run end to end only from this version
# on (their graphs are still checked against every server's /object_info).
NEEDS_COMFYUI = {"gag_z_image_turbo": ((0, 33, 0), "Z-Image needs ComfyUI 0.33 (its model "
                                                   "class, loaders' types and tiny stand-in)")}
# Workflows whose widgets are those of a newer ComfyUI than the server's (its node definitions
# differ), so none of their checks apply there.
GRAPH_NEEDS_COMFYUI = {
    name: ((0, 33, 0), "its CreateVideo (bit_depth) and SaveVideo (format) widgets are 0.33's")
    for name in ("gag_wan22_t2v_lightning_4step", "gag_wan22_ti2v_5b")}
# The GAG settings each workflow ships with: the paper's λ, η, ζ, its layer preset, the
# family's default mode, α 1.5 and the whole sampling run.
GAG_SETTINGS = {"GAGModelPatch": {"scale": 10.0, "eta": 15.0, "zeta": 0.0},
                "GAGLayers": {"preset": "paper", "mode": "auto"},
                "GAGSparsity": {"alpha": 1.5},
                "GAGSchedule": {"start_percent": 0.0, "end_percent": 1.0, "ramp": "constant"}}
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}

# End to end: which stand-in replaces which loader/encoder (see test_node_pack/__init__.py), the
# family of tiny model each workflow gets, and what is shrunk to keep a CPU run short.
STAND_INS = {"CheckpointLoaderSimple": "GAGTestTinyCheckpoint",
             "UNETLoader": "GAGTestTinyDiffusionModel",
             "DualCLIPLoader": "GAGTestTinyTextEncoderLoader",
             "CLIPLoader": "GAGTestTinyTextEncoderLoader",
             "VAELoader": "GAGTestTinyVAE",
             "LoraLoaderModelOnly": "GAGTestTinyLora",
             "CLIPTextEncode": "GAGTestTinyTextEncode"}
# workflow → the tiny model (an id of the tests' family registry, tests/comfy/tiny_families.py)
FAMILY = {"gag_sdxl_base_cfg": "unet-sdxl", "gag_hyper_sdxl_8step": "unet-sdxl",
          "gag_dmd2_sdxl_4step": "unet-sdxl", "gag_flux1_dev": "flux-dev",
          "gag_flux1_schnell": "flux-schnell", "gag_qwen_image": "qwen_image",
          "gag_flux2_klein_4step": "flux2-klein", "gag_z_image_turbo": "zimage",
          "gag_wan22_t2v_lightning_4step": "wan", "gag_wan22_ti2v_5b": "wan22_ti2v"}
# image pixels per latent pixel; 8 elsewhere
LATENT_SCALE = {"gag_flux2_klein_4step": 16, "gag_wan22_ti2v_5b": 16}
EMPTY_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyFlux2LatentImage",
                 "EmptyHunyuanLatentVideo", "Wan22ImageToVideoLatent")
SAVE_NODES = ("SaveImage", "SaveVideo")
E2E_IMAGE_SIZE = 128   # pixels (16×16 latents); steps, sampler, scheduler, CFG/guidance,
                       # flow shift and GAG settings stay as shipped
E2E_VIDEO_LENGTH = 9   # frames: 3 latent frames


def load(name: str) -> dict:
    return json.loads((WORKFLOW_DIR / f"{name}.json").read_text(encoding="utf-8"))


def skip_without_nodes(name: str, object_info: dict) -> None:
    """Skip a check of workflow ``name`` on a server that lacks the nodes it needs."""
    if name in GRAPH_NEEDS_COMFYUI:
        from conftest import COMFYUI_VERSION
        needed, why = GRAPH_NEEDS_COMFYUI[name]
        found = tuple(int(x) for x in (COMFYUI_VERSION or "0.0.0").split(".")[:3])
        if found < needed:
            pytest.skip(f"{name}: ComfyUI {COMFYUI_VERSION} < {'.'.join(map(str, needed))}: "
                        f"{why}")
    if name in NEEDS_NODES:
        family, nodes = NEEDS_NODES[name]
        missing = sorted(nodes - set(object_info))
        if missing:
            from conftest import COMFYUI_VERSION
            pytest.skip(f"ComfyUI {COMFYUI_VERSION} has no {family} nodes ({', '.join(missing)}); "
                        f"{name} needs a newer ComfyUI (checked on 0.33.0)")


def expected_model_files() -> set[tuple[str, str]]:
    """(folder, file name) for every model file any bundled workflow declares."""
    files = set()
    for path in WORKFLOW_FILES:
        for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
            for entry in (node.get("properties") or {}).get("models", []):
                files.add((entry["directory"], entry["name"]))
    return files


@pytest.fixture(scope="session")
def workflow_server():
    with shared_server([TEST_NODE_PACK], frontend=True) as server:
        yield server


def _server_version(server) -> tuple[int, ...]:
    version = server.get_json("/system_stats")["system"]["comfyui_version"]
    return tuple(int(x) for x in version.split(".")[:3])


def require_comfyui_for(name: str, server) -> None:
    """Skip a workflow the running ComfyUI is too old for (NEEDS_COMFYUI), saying why."""
    if name in NEEDS_COMFYUI:
        needed, why = NEEDS_COMFYUI[name]
        found = _server_version(server)
        if found < needed:
            pytest.skip(f"{name}: ComfyUI {'.'.join(map(str, found))} < "
                        f"{'.'.join(map(str, needed))}: {why}")


@pytest.fixture(scope="module")
def object_info(workflow_server):
    # Empty stand-ins for the model files, placed where the workflows say they go: the loaders'
    # combos list files found in their folders, so a wrong folder fails the combo check below.
    for folder, file_name in expected_model_files():
        target = workflow_server.models_dir / folder / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    return workflow_server.get_json("/object_info")


def test_every_family_has_a_workflow():
    assert set(NAMES) == EXPECTED


# --- format ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_ui_format_is_consistent(name):
    wf = load(name)
    assert wf["version"] == 0.4
    for key in ("id", "last_node_id", "last_link_id", "nodes", "links", "groups", "config",
                "extra"):
        assert key in wf, key
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] >= max(nodes)
    assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for node in wf["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs",
                    "properties", "widgets_values"):
            assert key in node, (node["id"], key)
        assert node["mode"] == 0, f"node {node['id']} is muted or bypassed"
    assert sorted(n["order"] for n in wf["nodes"]) == list(range(len(nodes)))
    link_ids = set()
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        assert link_id not in link_ids
        link_ids.add(link_id)
        output = nodes[src]["outputs"][src_slot]
        target = nodes[dst]["inputs"][dst_slot]
        assert link_id in (output["links"] or []), f"link {link_id} missing at its origin"
        assert target["link"] == link_id, f"link {link_id} missing at its target"
        assert output["type"] == kind == target["type"] or "*" in (output["type"], target["type"])
        # execution order stored in the file must respect the link
        assert nodes[src]["order"] < nodes[dst]["order"]
    for node in wf["nodes"]:
        for entry in node["inputs"]:
            assert entry["link"] is None or entry["link"] in link_ids
        for entry in node["outputs"]:
            assert all(l in link_ids for l in entry["links"] or [])


# --- fit with the live server ---------------------------------------------------------------

def _value_problem(name: str, spec: list, value) -> str | None:
    kind, options = input_type(spec), spec_options(spec)
    if kind in ("COMBO", DYNAMIC_COMBO):
        choices = combo_choices(spec)
        return None if value in choices else f"{name}={value!r} not among {choices[:12]}"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name}={value!r} is not an integer"
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"{name}={value!r} is not a finite number"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"{name}={value!r} is not text"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}={value!r} is not a boolean"
    low, high = options.get("min", -math.inf), options.get("max", math.inf)
    if not low <= value <= high:
        return f"{name}={value!r} outside [{low}, {high}]"
    return None


@pytest.mark.parametrize("name", NAMES)
def test_widget_values_fit_the_servers_inputs(name, object_info):
    skip_without_nodes(name, object_info)
    problems = []
    for node in load(name)["nodes"]:
        if node["type"] in VIRTUAL_NODE_TYPES:
            continue
        assert node["type"] in object_info, f"node {node['id']}: unknown type {node['type']}"
        definition = object_info[node["type"]]
        # raises when the count does not fit
        values, specs = widget_values_and_specs(node, definition)
        for input_name, value in values.items():
            problem = _value_problem(input_name, specs[input_name], value)
            if problem:
                problems.append(f"node {node['id']} ({node['type']}): {problem}")
        for slot in widget_slots(definition):
            if slot.count == 2 and input_type(slot.spec) == "INT":
                control = node["widgets_values"][slot.first + 1]
                if control not in CONTROL_VALUES:
                    problems.append(f"node {node['id']}: control value {control!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_links_join_matching_types_and_required_inputs_are_connected(name, object_info):
    skip_without_nodes(name, object_info)
    wf = load(name)
    nodes = {n["id"]: n for n in wf["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        origin = object_info[nodes[src]["type"]]
        produced = origin["output"][src_slot]
        target_name = nodes[dst]["inputs"][dst_slot]["name"]
        specs = {n: s for n, s, _ in ordered_inputs(object_info[nodes[dst]["type"]])}
        assert target_name in specs, f"link {link_id}: {nodes[dst]['type']} has no input {target_name}"
        wanted = input_type(specs[target_name])
        assert produced == kind, f"link {link_id}: origin makes {produced}, link says {kind}"
        assert wanted in (produced, "*"), (
            f"link {link_id}: {nodes[src]['type']} output {produced} into "
            f"{nodes[dst]['type']}.{target_name} ({wanted})")
    ui_to_api(wf, object_info)  # raises for a required input without link or widget value


def test_converter_reads_comfyuis_own_templates(object_info):
    """ui_to_api against workflows the real front end saved (ComfyUI's template package):
    seeds with their control value, a PrimitiveNode driving a widget turned into an input."""
    templates = pytest.importorskip("comfyui_workflow_templates")
    from importlib.metadata import version
    if version("comfyui_workflow_templates") != "0.1.95":
        pytest.skip("expected values below were read from comfyui_workflow_templates 0.1.95")
    folder = Path(templates.__file__).parent / "templates"
    flux = ui_to_api(json.loads((folder / "flux_dev_full_text_to_image.json").read_text()),
                     object_info)
    assert flux["31"]["inputs"] == {
        "model": ["38", 0], "seed": 192044955347061, "steps": 20, "cfg": 1,
        "sampler_name": "euler", "scheduler": "simple", "positive": ["41", 0],
        "negative": ["42", 0], "latent_image": ["27", 0], "denoise": 1}
    sdxl = ui_to_api(json.loads((folder / "sdxl_simple_example.json").read_text()), object_info)
    assert sdxl["10"]["inputs"] == {
        "model": ["4", 0], "add_noise": "enable", "noise_seed": 721897303308196, "steps": 25,
        "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "positive": ["6", 0],
        "negative": ["7", 0], "latent_image": ["5", 0], "start_at_step": 0, "end_at_step": 20,
        "return_with_leftover_noise": "enable"}
    assert not any(v["class_type"] in VIRTUAL_NODE_TYPES for v in sdxl.values())


# --- documentation --------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_model_files_are_declared_and_explained(name, object_info):
    skip_without_nodes(name, object_info)
    wf = load(name)
    notes = [n["widgets_values"][0] for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert len(notes) == 1, "one Read-me note per workflow"
    note = notes[0]
    for heading in ("MODEL FILES", "SETTINGS AND WHY", "WHAT TO CHANGE FIRST", "WHAT TO LOOK FOR"):
        assert heading in note, heading
    for node in wf["nodes"]:
        if node["type"] in VIRTUAL_NODE_TYPES:
            continue
        declared = {m["name"]: m for m in node["properties"].get("models", [])}
        for value in widget_values(node, object_info[node["type"]]).values():
            if isinstance(value, str) and value.endswith(MODEL_SUFFIXES):
                assert value in declared, f"{node['type']}: {value} not in properties.models"
                entry = declared[value]
                assert entry["url"].startswith("https://huggingface.co/")
                assert entry["url"].endswith("/" + value)
                assert value in note, f"the note does not name {value}"
                assert f"models/{entry['directory']}/" in note, entry["directory"]


# --- A/B fairness ---------------------------------------------------------------------------

def _canonical(prompt: dict, node_id: str, skip: set, memo: dict) -> str:
    """A hash of everything a node's output depends on, treating the nodes in ``skip`` as the
    input they patch (their "model")."""
    if node_id in memo:
        return memo[node_id]
    node = prompt[node_id]
    if node_id in skip:
        memo[node_id] = _canonical(prompt, node["inputs"]["model"][0], skip, memo)
        return memo[node_id]
    parts = [node["class_type"]]
    for key, value in sorted(node["inputs"].items()):
        if node["class_type"] in SAVE_NODES and key == "filename_prefix":
            continue
        if isinstance(value, list):
            parts.append(f"{key}<-{_canonical(prompt, value[0], skip, memo)}:{value[1]}")
        else:
            parts.append(f"{key}={value!r}")
    memo[node_id] = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return memo[node_id]


def _upstream(prompt: dict, node_id: str) -> set[str]:
    seen, todo = set(), [node_id]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += [v[0] for v in prompt[current]["inputs"].values() if isinstance(v, list)]
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_a_and_b_differ_only_by_gag(name, object_info):
    skip_without_nodes(name, object_info)
    prompt = ui_to_api(load(name), object_info)
    saves = [k for k, v in prompt.items() if v["class_type"] in SAVE_NODES]
    assert len(saves) == 2
    prefixes = {prompt[k]["inputs"]["filename_prefix"] for k in saves}
    assert len(prefixes) == 2, "A and B must save under different names"
    patches = {k for k, v in prompt.items() if v["class_type"] == "GAGModelPatch"}
    # one patch per diffusion model the branch samples with (Wan 2.2 A14B: two experts)
    models = {k for k, v in prompt.items() if v["class_type"] in ("UNETLoader",
                                                                   "CheckpointLoaderSimple")}
    assert len(patches) == len(models) >= 1
    reached = [patches & _upstream(prompt, k) for k in saves]
    assert sorted(map(len, reached)) == [0, len(patches)], (
        "one branch goes through every GAG Model Patch, the other through none")
    memo: dict = {}
    a, b = (_canonical(prompt, k, patches, memo) for k in saves)
    assert a == b, "apart from GAG Model Patch the two branches compute different things"
    for kind, expected in GAG_SETTINGS.items():
        nodes = [v for v in prompt.values() if v["class_type"] == kind]
        assert len(nodes) == (len(patches) if kind == "GAGModelPatch" else 1), kind
        for node in nodes:
            got = {k: node["inputs"][k] for k in expected}
            assert got == expected, f"{kind}: {got} != {expected}"


# --- template browser -----------------------------------------------------------------------

def test_template_browser_lists_and_serves_the_workflows(workflow_server):
    # ComfyUI 0.3.64 looks for example_workflows/, example/, examples/, workflow/ and workflows/
    # in every loaded pack; the front end asks /workflow_templates and fetches
    # /api/workflow_templates/<pack folder>/<name>.json and <name>.jpg.
    listing = workflow_server.get_json("/workflow_templates")
    assert sorted(listing.get(PACK_FOLDER_NAME, [])) == NAMES
    for name in NAMES:
        served = workflow_server.get_json(f"/api/workflow_templates/{PACK_FOLDER_NAME}/{name}.json")
        assert served == load(name)
        thumbnail = workflow_server.get_bytes(
            f"/api/workflow_templates/{PACK_FOLDER_NAME}/{name}.jpg")
        assert thumbnail[:3] == b"\xff\xd8\xff", f"{name}.jpg is not a JPEG"


# --- end to end -----------------------------------------------------------------------------

def _with_stand_ins(prompt: dict, family: str) -> dict:
    for node in prompt.values():
        kind = node["class_type"]
        if kind in STAND_INS:
            node["class_type"] = STAND_INS[kind]
            if kind not in ("LoraLoaderModelOnly", "CLIPTextEncode"):
                node["inputs"]["family"] = family
        elif kind in EMPTY_LATENTS:
            node["inputs"].update(width=E2E_IMAGE_SIZE, height=E2E_IMAGE_SIZE)
            if "length" in node["inputs"]:
                node["inputs"]["length"] = E2E_VIDEO_LENGTH
    return prompt


def _decode_of(prompt: dict, save_id: str) -> dict:
    """The VAEDecode a Save Image / Save Video node saves (through CreateVideo)."""
    node = prompt[save_id]
    while node["class_type"] != "VAEDecode":
        source = node["inputs"].get("images") or node["inputs"].get("video")
        node = prompt[source[0]]
    return node


def _add_latent_savers(prompt: dict, name: str) -> dict[str, str]:
    """A SaveLatent beside each SaveImage, on the latent its VAEDecode decodes: random-weight
    models give latents whose differences an 8-bit image may not show. Returns
    {SaveImage id: SaveLatent id}."""
    savers = {}
    for node_id, node in list(prompt.items()):
        if node["class_type"] not in SAVE_NODES:
            continue
        decode = _decode_of(prompt, node_id)
        saver = f"latent_of_{node_id}"
        prompt[saver] = {"class_type": "SaveLatent",
                         "inputs": {"samples": decode["inputs"]["samples"],
                                    "filename_prefix": f"e2e/{name}_{node_id}"}}
        savers[node_id] = saver
    return savers


def _pixels(path: Path):
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def _video_frames(path: Path):
    """The frames of a saved video, (frames, H, W, 3) in [0, 1] (PyAV, which ComfyUI 0.33's video
    nodes use)."""
    import av
    import numpy as np
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames).astype(np.float64) / 255.0


def _latent(path: Path):
    from safetensors.torch import load_file
    return load_file(str(path))["latent_tensor"].double()


@pytest.mark.parametrize("name", NAMES)
def test_end_to_end_on_tiny_models(name, workflow_server, object_info):
    require_comfyui_for(name, workflow_server)
    skip_without_nodes(name, object_info)
    prompt = _with_stand_ins(ui_to_api(load(name), object_info), FAMILY[name])
    latent_savers = _add_latent_savers(prompt, name)
    history = workflow_server.run_prompt(prompt, timeout=300)
    saves = sorted(latent_savers, key=lambda k: prompt[k]["inputs"]["filename_prefix"])
    images, latents = [], []
    for node_id in saves:
        files = workflow_server.output_files(history, node_id)
        assert len(files) == 1 and files[0].is_file(), f"no image from node {node_id}"
        prefix = prompt[node_id]["inputs"]["filename_prefix"]
        assert files[0].name.startswith(prefix.rsplit("/", 1)[-1])
        if prompt[node_id]["class_type"] == "SaveVideo":
            frames = _video_frames(files[0])
            # the stand-in VAE decodes one image per latent frame: 3 frames of 9
            assert frames.shape[0] == (E2E_VIDEO_LENGTH - 1) // 4 + 1, frames.shape
            images.append(frames[0])
        else:
            images.append(_pixels(files[0]))
        (latent_file,) = workflow_server.output_files(history, latent_savers[node_id], "latents")
        latents.append(_latent(latent_file))
    # prefixes sort "…_A_without_GAG" before "…_B_with_GAG"
    assert images[0].shape == images[1].shape == (E2E_IMAGE_SIZE, E2E_IMAGE_SIZE, 3)
    for image in images:
        assert image.std() > 0.02, "a flat image: the sampler or VAE produced nothing useful"
    plain, guided = latents
    assert plain.shape == guided.shape
    assert plain.shape[-1] == E2E_IMAGE_SIZE // tf.find(FAMILY[name])[1].downscale
    assert bool(plain.isfinite().all() and guided.isfinite().all())
    # Without GAG the two branches agree bit for bit (test_without_gag_a_equals_b), so any
    # difference is GAG's. Tiny random UNets show a weak effect (measured 4e-5 to 2e-4 relative
    # for the SDXL family, 1e-2 for the DiTs); a GAG that is not installed gives exactly 0.
    relative = ((plain - guided).abs().mean() / plain.abs().mean()).item()
    assert relative > 1e-6, f"GAG changed nothing: mean |A−B| / mean |A| = {relative:.2e}"


def _run_latents(server, prompt: dict, name: str):
    savers = _add_latent_savers(prompt, name)
    history = server.run_prompt(prompt, timeout=300)
    order = sorted(savers, key=lambda k: prompt[k]["inputs"]["filename_prefix"])
    return [_latent(server.output_files(history, savers[k], "latents")[0]) for k in order]


@pytest.mark.parametrize("name", ["gag_sdxl_base_cfg", "gag_flux1_dev"])
def test_without_gag_a_equals_b(name, workflow_server, object_info):
    """Control for the end-to-end check: the same graph with GAG Model Patch bypassed (its
    consumers fed its input model) gives two identical latents."""
    prompt = _with_stand_ins(ui_to_api(load(name), object_info), FAMILY[name])
    (patch,) = [k for k, v in prompt.items() if v["class_type"] == "GAGModelPatch"]
    source = prompt[patch]["inputs"]["model"]
    for node in prompt.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list) and value[0] == patch:
                node["inputs"][key] = list(source)
    for kind in GAG_SETTINGS:  # unreachable now; ComfyUI runs only what outputs need
        for node_id in [k for k, v in prompt.items() if v["class_type"] == kind]:
            del prompt[node_id]
    plain, also_plain = _run_latents(workflow_server, prompt, name + "_control")
    assert plain.shape == also_plain.shape and bool((plain == also_plain).all())
