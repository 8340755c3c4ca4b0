"""Build the bundled A/B workflows (UI format, as ComfyUI's front end saves them) from live
/object_info dumps, and draw a diagram thumbnail of each graph.

usage: python workflows/tools/build_workflows.py --object-info 0.3.64=OI_OLD.json \
           --object-info 0.33.0=OI_NEW.json [--out workflows/]

Each OBJECT_INFO.json is a dump of GET /object_info from a ComfyUI server of that version with
this pack installed (e.g. one started by tests/comfy/comfy_server.py). Each workflow is built
from the dump of the oldest ComfyUI that has all its nodes (``WORKFLOWS[...]["comfyui"]``): the
FLUX.2 Klein, Z-Image Turbo and Wan 2.2 video ones are built from 0.33.0's (the ComfyUI that runs
those models, and whose CreateVideo and SaveVideo widgets they carry), the others from 0.3.64's. What the workflows say (prompts, model
files, notes, titles) is in workflow_data.py; this file wires and draws the graphs. Edit these
rather than the JSON, then re-run the workflow tests.
"""
import argparse
import json
import tomllib
import uuid
from pathlib import Path

from workflow_data import (CLIP_L, DMD2_LORA, FLUX2_KLEIN, FLUX2_KLEIN_TE, FLUX2_VAE, FLUX_DEV,
                           FLUX_SCHNELL, FLUX_VAE, GAG_PAPER, HYPER_LORA, NEGATIVE_SDXL,
                           NOTE_DMD2, NOTE_FLUX2_KLEIN, NOTE_FLUX_DEV, NOTE_FLUX_SCHNELL,
                           NOTE_HYPER, NOTE_QWEN, NOTE_SDXL, PROMPT_DIT, PROMPT_SDXL, QWEN_MODEL,
                           QWEN_TE, QWEN_VAE, SDXL_CKPT, T5XXL, TITLES, NOTE_ZIMAGE_TURBO,
                           ZIMAGE_MODEL, ZIMAGE_TE, ZIMAGE_VAE)
from workflow_data import (NEGATIVE_WAN, NOTE_WAN22_T2V_LIGHTNING, NOTE_WAN22_TI2V,
                           PROMPT_VIDEO, WAN21_VAE, WAN22_LIGHTNING_HIGH, WAN22_LIGHTNING_LOW,
                           WAN22_T2V_HIGH, WAN22_T2V_LOW, WAN22_TI2V, WAN22_VAE, WAN_UMT5)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_VERSION = tomllib.load(open(REPO_ROOT / "pyproject.toml", "rb"))["project"]["version"]
GAG_TYPES = {"GAGModelPatch", "GAGLayers", "GAGSparsity", "GAGSchedule"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # ComfyUI 0.33+: a combo whose option adds widgets


def is_widget(spec):
    kind = "COMBO" if isinstance(spec[0], list) else spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if kind == DYNAMIC_COMBO:
        return not opts.get("hidden")
    return kind in WIDGET_TYPES and not opts.get("forceInput")


class Workflow:
    def __init__(self, name, object_info, comfyui_version):
        self.name = name
        self.object_info = object_info          # GET /object_info of that ComfyUI
        self.comfyui_version = comfyui_version  # written as the core nodes' "ver"
        self.nodes = {}
        self.links = []
        self.groups = []

    def node(self, kind, pos, size, widgets=(), title=None, models=None, color=None):
        nid = len(self.nodes) + 1
        node = {"id": nid, "type": kind, "pos": list(pos), "size": list(size), "flags": {},
                "order": 0, "mode": 0, "inputs": [], "outputs": []}
        if kind == "Note":
            node["properties"] = {}
        else:
            d = self.object_info[kind]
            for section in ("required", "optional"):
                for name in d["input_order"].get(section, []):
                    spec = d["input"][section][name]
                    hidden = len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("hidden")
                    if not is_widget(spec) and not hidden:
                        node["inputs"].append({"name": name, "type": spec[0], "link": None})
            for i, (t, n) in enumerate(zip(d["output"], d["output_name"])):
                node["outputs"].append({"name": n, "type": t, "links": []})
            props = {"Node name for S&R": kind}
            if kind in GAG_TYPES:
                props.update({"cnr_id": "comfyui-gag", "ver": PACK_VERSION})
            else:
                props.update({"cnr_id": "comfy-core", "ver": self.comfyui_version})
            if models:
                props["models"] = models
            node["properties"] = props
        if title:
            node["title"] = title
        node["widgets_values"] = list(widgets)
        if color:
            node["color"], node["bgcolor"] = color
        self.nodes[nid] = node
        return nid

    def link(self, src, src_slot, dst, dst_input):
        lid = len(self.links) + 1
        out = self.nodes[src]["outputs"][src_slot]
        inp = next(i for i in self.nodes[dst]["inputs"] if i["name"] == dst_input)
        slot = self.nodes[dst]["inputs"].index(inp)
        assert inp["link"] is None
        inp["link"] = lid
        out["links"].append(lid)
        self.links.append([lid, src, src_slot, dst, slot, out["type"]])

    def group(self, title, bounding, color):
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": bounding,
                            "color": color, "font_size": 24, "flags": {}})

    def finish(self):
        # execution order the front end would store: a topological order of the graph
        deps = {n: set() for n in self.nodes}
        for _, s, _, d, _, _ in self.links:
            deps[d].add(s)
        order, done = [], set()
        while len(order) < len(self.nodes):
            ready = sorted(n for n in self.nodes if n not in done and deps[n] <= done)
            for n in ready:
                order.append(n)
                done.add(n)
        for i, n in enumerate(order):
            self.nodes[n]["order"] = i
        for node in self.nodes.values():
            for out in node["outputs"]:
                if not out["links"]:
                    out["links"] = None if node["type"] == "SamplerCustomAdvanced" else []
        xs = [n["pos"][0] for n in self.nodes.values()]
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-gag/" + self.name)),
            "revision": 0,
            "last_node_id": max(self.nodes),
            "last_link_id": len(self.links),
            "nodes": [self.nodes[n] for n in sorted(self.nodes)],
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.55, "offset": [-min(xs) + 60, 120]},
                      "frontendVersion": "1.27.10"},
            "version": 0.4,
        }


GREEN = ("#232", "#353")
RED = ("#322", "#533")
NOTE = ("#432", "#653")
GAG = ("#223", "#335")
def unwrap(text):
    """Join hard-wrapped lines so the note's text box wraps them to its own width; keep
    headings, bullets, numbered items and blank lines on lines of their own."""
    import re
    out = []
    for line in text.split("\n"):
        starts_item = (not line.strip() or line.startswith("• ") or re.match(r"^\d+\. ", line)
                       or line.isupper() or line.startswith("MODEL FILES"))
        if out and out[-1].strip() and not starts_item and not out[-1].isupper() \
                and not out[-1].startswith("MODEL FILES"):
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


def build(name, object_info, *, comfyui, loaders, text, sampling, gag, note, latent, prefix):
    """loaders(wf) -> dict(model=(id, slot), clip=(id, slot), vae=(id, slot));
    text(wf, clip) -> dict(positive=(id, slot), negative=(id, slot) or None)
    sampling = (sampler_name, scheduler, steps, cfg or None); scheduler "Flux2Scheduler" is
    FLUX.2's own node (sigmas from steps and image size) instead of a BasicScheduler one"""
    wf = Workflow(name, object_info, comfyui)
    wf.node("Note", (-520, -60), (480, 1080), [unwrap(note)], title="Read me: models, settings, what to change",
            color=NOTE)
    src = loaders(wf)
    cond = text(wf, src["clip"])
    latent_kind, width, height = latent
    lat = wf.node(latent_kind, (0, 460), (330, 106), [width, height, 1], title="Image size")
    sampler_name, scheduler, steps, cfg = sampling
    noise = wf.node("RandomNoise", (880, -40), (300, 82), [20250101, "fixed"],
                    title="Seed (shared by A and B)")
    ksel = wf.node("KSamplerSelect", (880, 90), (300, 58), [sampler_name],
                   title="Sampler (shared)")
    if scheduler == "Flux2Scheduler":
        sched = wf.node("Flux2Scheduler", (880, 190), (300, 106), [steps, width, height],
                        title="Steps and schedule (shared; keep the image size)")
    else:
        sched = wf.node("BasicScheduler", (880, 190), (300, 106), [scheduler, steps, 1.0],
                        title="Steps and schedule (shared)")
        wf.link(*src["model"], sched, "model")

    # The layer map grows with the family table (a chip per released layout): room to spare.
    layers = wf.node("GAGLayers", (880, 560), (300, 440), ["paper", "", gag.get("mode", "auto")],
                     color=GAG)
    sparsity = wf.node("GAGSparsity", (880, 1050), (300, 58), [gag.get("alpha", 1.5)], color=GAG)
    schedule = wf.node("GAGSchedule", (880, 1158), (300, 250), [0.0, 1.0, "constant"], color=GAG)
    patch = wf.node("GAGModelPatch", (1220, 560), (300, 150),
                    [gag["scale"], gag["eta"], gag["zeta"]], color=GAG)
    wf.link(*src["model"], patch, "model")
    wf.link(layers, 0, patch, "layers")
    wf.link(sparsity, 0, patch, "sparsity")
    wf.link(schedule, 0, patch, "schedule")

    branches = []
    for label, model_src, y in (("A", src["model"], -40), ("B", (patch, 0), 760)):
        gx = 1220 if label == "A" else 1220
        if cfg is None:
            guider = wf.node("BasicGuider", (gx, y), (300, 46), [],
                             title=f"Guider {label} (no CFG)")
            wf.link(*model_src, guider, "model")
            wf.link(*cond["positive"], guider, "conditioning")
        else:
            guider = wf.node("CFGGuider", (gx, y), (300, 98), [cfg],
                             title=f"CFG {label} (keep equal to CFG {'B' if label == 'A' else 'A'})")
            wf.link(*model_src, guider, "model")
            wf.link(*cond["positive"], guider, "positive")
            wf.link(*cond["negative"], guider, "negative")
        sy = -40 if label == "A" else 560
        sampler = wf.node("SamplerCustomAdvanced", (1560, sy), (260, 106), [],
                          title=f"Sample {label}")
        wf.link(noise, 0, sampler, "noise")
        wf.link(guider, 0, sampler, "guider")
        wf.link(ksel, 0, sampler, "sampler")
        wf.link(sched, 0, sampler, "sigmas")
        wf.link(lat, 0, sampler, "latent_image")
        decode = wf.node("VAEDecode", (1560, sy + 150), (260, 46), [], title=f"Decode {label}")
        wf.link(sampler, 0, decode, "samples")
        wf.link(*src["vae"], decode, "vae")
        what = "without GAG" if label == "A" else "with GAG"
        save = wf.node("SaveImage", (1860, sy), (460, 500),
                       [f"GAG/{prefix}_{label}_{what.replace(' ', '_')}"],
                       title=f"{label}: {what}")
        wf.link(decode, 0, save, "images")
        branches.append(save)
    wf.group("A: without GAG", [1200, -120, 1140, 640], "#3f789e")
    wf.group("B: with GAG (same seed, prompt and sampler)", [860, 480, 1480, 978], "#8A8")
    return wf.finish()


# --- SDXL family ---------------------------------------------------------------------------

def sdxl_loaders(lora=None):
    def loaders(wf):
        ckpt = wf.node("CheckpointLoaderSimple", (0, -40), (330, 98), [SDXL_CKPT["name"]],
                       models=[SDXL_CKPT])
        model_src = (ckpt, 0)
        if lora:
            lo = wf.node("LoraLoaderModelOnly", (0, 120), (330, 82), [lora["name"], 1.0],
                         models=[lora], title="Distillation LoRA")
            wf.link(ckpt, 0, lo, "model")
            model_src = (lo, 0)
        return {"model": model_src, "clip": (ckpt, 1), "vae": (ckpt, 2)}
    return loaders


def sdxl_text(negative):
    def text(wf, clip):
        pos = wf.node("CLIPTextEncode", (380, -40), (440, 200), [PROMPT_SDXL],
                      title="Prompt", color=GREEN)
        wf.link(*clip, pos, "clip")
        out = {"positive": (pos, 0), "negative": None}
        if negative:
            neg = wf.node("CLIPTextEncode", (380, 210), (440, 120), [NEGATIVE_SDXL],
                          title="Negative prompt", color=RED)
            wf.link(*clip, neg, "clip")
            out["negative"] = (neg, 0)
        return out
    return text


# --- DiTs -----------------------------------------------------------------------------------

def flux_loaders(unet):
    def loaders(wf):
        m = wf.node("UNETLoader", (0, -40), (330, 82), [unet["name"], "default"], models=[unet])
        c = wf.node("DualCLIPLoader", (0, 90), (330, 130),
                    [CLIP_L["name"], T5XXL["name"], "flux", "default"], models=[CLIP_L, T5XXL])
        v = wf.node("VAELoader", (0, 270), (330, 58), [FLUX_VAE["name"]], models=[FLUX_VAE])
        return {"model": (m, 0), "clip": (c, 0), "vae": (v, 0)}
    return loaders


def flux_text(guidance):
    def text(wf, clip):
        pos = wf.node("CLIPTextEncode", (380, -40), (440, 200), [PROMPT_DIT], title="Prompt",
                      color=GREEN)
        wf.link(*clip, pos, "clip")
        if guidance is None:
            return {"positive": (pos, 0), "negative": None}
        g = wf.node("FluxGuidance", (380, 210), (440, 58), [guidance],
                    title="FLUX guidance (model input, not CFG)")
        wf.link(pos, 0, g, "conditioning")
        return {"positive": (g, 0), "negative": None}
    return text


def qwen_loaders(wf):
    m = wf.node("UNETLoader", (0, -40), (330, 82), [QWEN_MODEL["name"], "default"],
                models=[QWEN_MODEL])
    shift = wf.node("ModelSamplingAuraFlow", (0, 90), (330, 58), [3.1], title="Flow shift")
    wf.link(m, 0, shift, "model")
    c = wf.node("CLIPLoader", (0, 190), (330, 106), [QWEN_TE["name"], "qwen_image", "default"],
                models=[QWEN_TE])
    v = wf.node("VAELoader", (0, 340), (330, 58), [QWEN_VAE["name"]], models=[QWEN_VAE])
    return {"model": (shift, 0), "clip": (c, 0), "vae": (v, 0)}


def qwen_text(wf, clip):
    pos = wf.node("CLIPTextEncode", (380, -40), (440, 200), [PROMPT_DIT], title="Prompt",
                  color=GREEN)
    neg = wf.node("CLIPTextEncode", (380, 210), (440, 120), [""], title="Negative prompt",
                  color=RED)
    wf.link(*clip, pos, "clip")
    wf.link(*clip, neg, "clip")
    return {"positive": (pos, 0), "negative": (neg, 0)}


def flux2_klein_loaders(wf):
    m = wf.node("UNETLoader", (0, -40), (330, 82), [FLUX2_KLEIN["name"], "default"],
                models=[FLUX2_KLEIN])
    c = wf.node("CLIPLoader", (0, 90), (330, 106), [FLUX2_KLEIN_TE["name"], "flux2", "default"],
                models=[FLUX2_KLEIN_TE])
    v = wf.node("VAELoader", (0, 240), (330, 58), [FLUX2_VAE["name"]], models=[FLUX2_VAE])
    return {"model": (m, 0), "clip": (c, 0), "vae": (v, 0)}


def zimage_loaders(wf):
    m = wf.node("UNETLoader", (0, -40), (330, 82), [ZIMAGE_MODEL["name"], "default"],
                models=[ZIMAGE_MODEL])
    shift = wf.node("ModelSamplingAuraFlow", (0, 90), (330, 58), [3], title="Flow shift")
    wf.link(m, 0, shift, "model")
    c = wf.node("CLIPLoader", (0, 190), (330, 106), [ZIMAGE_TE["name"], "lumina2", "default"],
                models=[ZIMAGE_TE])
    v = wf.node("VAELoader", (0, 340), (330, 58), [ZIMAGE_VAE["name"]], models=[ZIMAGE_VAE])
    return {"model": (shift, 0), "clip": (c, 0), "vae": (v, 0)}


# --- video ----------------------------------------------------------------------------------

def build_video(name, object_info, *, comfyui, experts, shift, vae, sampling, latent, note,
                fps, prefix):
    """A/B video workflow in the shape of ComfyUI's Wan templates.

    experts: [(diffusion model file, LoRA file or None, title)], sampled one after another with
    KSamplerAdvanced over an even split of the steps (Wan 2.2 A14B: high-noise, then low-noise
    expert), or with one KSampler for a single model; branch B patches every expert with its
    own GAG Model Patch fed by the same GAG Layers, Sparsity and Schedule nodes.
    sampling = (sampler_name, scheduler, steps, cfg); latent = (node type, width, height,
    length); the video is decoded, made into a video at ``fps`` (CreateVideo) and saved with
    the core Save Video node."""
    wf = Workflow(name, object_info, comfyui)
    wf.node("Note", (-520, -60), (480, 1180), [unwrap(note)],
            title="Read me: models, settings, what to change", color=NOTE)
    models = []
    for i, (unet, lora, title) in enumerate(experts):
        y = -40 + 330 * i
        m = wf.node("UNETLoader", (0, y), (330, 82), [unet["name"], "default"], models=[unet],
                    title=title)
        source = (m, 0)
        if lora:
            lo = wf.node("LoraLoaderModelOnly", (0, y + 110), (330, 82), [lora["name"], 1.0],
                         models=[lora], title=f"{title}: lightning LoRA")
            wf.link(m, 0, lo, "model")
            source = (lo, 0)
        s = wf.node("ModelSamplingSD3", (0, y + 220), (330, 58), [shift], title="Flow shift")
        wf.link(*source, s, "model")
        models.append((s, 0))
    y = -40 + 330 * len(experts)
    clip = wf.node("CLIPLoader", (0, y), (330, 106), [WAN_UMT5["name"], "wan", "default"],
                   models=[WAN_UMT5])
    vae_node = wf.node("VAELoader", (0, y + 150), (330, 58), [vae["name"]], models=[vae])
    pos = wf.node("CLIPTextEncode", (380, -40), (440, 200), [PROMPT_VIDEO], title="Prompt",
                  color=GREEN)
    neg = wf.node("CLIPTextEncode", (380, 210), (440, 160), [NEGATIVE_WAN],
                  title="Negative prompt", color=RED)
    wf.link(clip, 0, pos, "clip")
    wf.link(clip, 0, neg, "clip")
    latent_kind, width, height, length = latent
    lat = wf.node(latent_kind, (380, 460), (330, 130), [width, height, length, 1],
                  title="Video size and length")
    if latent_kind == "Wan22ImageToVideoLatent":
        wf.link(vae_node, 0, lat, "vae")

    layers = wf.node("GAGLayers", (880, 560), (300, 440), ["paper", "", "auto"], color=GAG)
    sparsity = wf.node("GAGSparsity", (880, 1050), (300, 58), [1.5], color=GAG)
    schedule = wf.node("GAGSchedule", (880, 1158), (300, 250), [0.0, 1.0, "constant"], color=GAG)
    patched = []
    for i, model in enumerate(models):
        patch = wf.node("GAGModelPatch", (1220, 760 + 200 * i), (300, 150),
                        [GAG_PAPER["scale"], GAG_PAPER["eta"], GAG_PAPER["zeta"]], color=GAG,
                        title="GAG Model Patch" + (f" ({experts[i][2]})" if len(models) > 1
                                                   else ""))
        wf.link(*model, patch, "model")
        wf.link(layers, 0, patch, "layers")
        wf.link(sparsity, 0, patch, "sparsity")
        wf.link(schedule, 0, patch, "schedule")
        patched.append((patch, 0))

    sampler_name, scheduler, steps, cfg = sampling
    seed = 20250101
    split = [round(steps * i / len(models)) for i in range(len(models) + 1)]
    for label, branch_models, y in (("A", models, -40), ("B", patched, 560)):
        current = (lat, 0)
        for i, model in enumerate(branch_models):
            x = 1560 + 320 * i
            if len(branch_models) == 1:
                ks = wf.node("KSampler", (x, y), (300, 262),
                             [seed, "fixed", steps, cfg, sampler_name, scheduler, 1.0],
                             title=f"Sample {label}")
            else:
                last = i == len(branch_models) - 1
                ks = wf.node("KSamplerAdvanced", (x, y), (300, 334),
                             ["enable" if i == 0 else "disable", seed if i == 0 else 0, "fixed",
                              steps, cfg, sampler_name, scheduler, split[i],
                              10000 if last else split[i + 1],
                              "disable" if last else "enable"],
                             title=f"Sample {label}: {experts[i][2]} (steps "
                                   f"{split[i]}–{split[i + 1]})")
            wf.link(*model, ks, "model")
            wf.link(pos, 0, ks, "positive")
            wf.link(neg, 0, ks, "negative")
            wf.link(*current, ks, "latent_image")
            current = (ks, 0)
        x = 1560 + 320 * len(branch_models)
        decode = wf.node("VAEDecode", (x, y), (260, 46), [], title=f"Decode {label}")
        wf.link(*current, decode, "samples")
        wf.link(vae_node, 0, decode, "vae")
        video = wf.node("CreateVideo", (x, y + 90), (260, 82), [fps, 8],
                        title=f"Frames to video {label}")
        wf.link(decode, 0, video, "images")
        what = "without GAG" if label == "A" else "with GAG"
        save = wf.node("SaveVideo", (x + 300, y), (460, 400),
                       [f"GAG/{prefix}_{label}_{what.replace(' ', '_')}", "auto", "auto"],
                       title=f"{label}: {what}")
        wf.link(video, 0, save, "video")
    right = 1560 + 320 * len(models) + 780
    wf.group("A: without GAG", [1540, -120, right - 1540, 580], "#3f789e")
    wf.group("B: with GAG (same seed, prompt and sampler)", [860, 480, right - 860, 978], "#8A8")
    return wf.finish()


# name -> how build() wires it; "comfyui": the oldest ComfyUI with all its nodes (its
# /object_info dump builds the workflow)
WORKFLOWS = {
    "gag_sdxl_base_cfg": dict(
        loaders=sdxl_loaders(), text=sdxl_text(True), sampling=("euler", "normal", 30, 6.0),
        gag=GAG_PAPER, note=NOTE_SDXL, latent=("EmptyLatentImage", 1024, 1024), prefix="sdxl"),
    "gag_hyper_sdxl_8step": dict(
        loaders=sdxl_loaders(HYPER_LORA), text=sdxl_text(False),
        sampling=("ddim", "sgm_uniform", 8, None), gag=GAG_PAPER, note=NOTE_HYPER,
        latent=("EmptyLatentImage", 1024, 1024), prefix="hyper_sdxl"),
    "gag_dmd2_sdxl_4step": dict(
        loaders=sdxl_loaders(DMD2_LORA), text=sdxl_text(False),
        sampling=("lcm", "sgm_uniform", 4, None), gag=GAG_PAPER, note=NOTE_DMD2,
        latent=("EmptyLatentImage", 1024, 1024), prefix="dmd2"),
    "gag_flux1_dev": dict(
        loaders=flux_loaders(FLUX_DEV), text=flux_text(3.5), sampling=("euler", "simple", 20, None),
        gag=GAG_PAPER, note=NOTE_FLUX_DEV, latent=("EmptySD3LatentImage", 1024, 1024),
        prefix="flux1_dev"),
    "gag_flux1_schnell": dict(
        loaders=flux_loaders(FLUX_SCHNELL), text=flux_text(None),
        sampling=("euler", "simple", 4, None), gag=GAG_PAPER, note=NOTE_FLUX_SCHNELL,
        latent=("EmptySD3LatentImage", 1024, 1024), prefix="flux1_schnell"),
    "gag_qwen_image": dict(
        loaders=qwen_loaders, text=qwen_text, sampling=("euler", "simple", 20, 2.5),
        gag=GAG_PAPER, note=NOTE_QWEN, latent=("EmptySD3LatentImage", 1328, 1328),
        prefix="qwen_image"),
    "gag_flux2_klein_4step": dict(
        comfyui="0.33.0", loaders=flux2_klein_loaders, text=flux_text(None),
        sampling=("euler", "Flux2Scheduler", 4, None), gag=GAG_PAPER, note=NOTE_FLUX2_KLEIN,
        latent=("EmptyFlux2LatentImage", 1024, 1024), prefix="flux2_klein"),
    "gag_z_image_turbo": dict(
        comfyui="0.33.0", loaders=zimage_loaders, text=flux_text(None),
        sampling=("res_multistep", "simple", 8, None), gag=GAG_PAPER, note=NOTE_ZIMAGE_TURBO,
        latent=("EmptySD3LatentImage", 1024, 1024), prefix="z_image_turbo"),
}
for _spec in WORKFLOWS.values():
    _spec.setdefault("comfyui", "0.3.64")

# Video workflows (build_video): CreateVideo's bit depth and SaveVideo's format are 0.33's.
VIDEO_WORKFLOWS = {
    "gag_wan22_t2v_lightning_4step": dict(
        comfyui="0.33.0",
        experts=[(WAN22_T2V_HIGH, WAN22_LIGHTNING_HIGH, "high-noise expert"),
                 (WAN22_T2V_LOW, WAN22_LIGHTNING_LOW, "low-noise expert")],
        shift=5.0, vae=WAN21_VAE, sampling=("euler", "simple", 4, 1.0),
        latent=("EmptyHunyuanLatentVideo", 832, 480, 81), note=NOTE_WAN22_T2V_LIGHTNING, fps=16.0,
        prefix="wan22_t2v"),
    "gag_wan22_ti2v_5b": dict(
        comfyui="0.33.0", experts=[(WAN22_TI2V, None, "Wan 2.2 TI2V 5B")], shift=8.0,
        vae=WAN22_VAE, sampling=("uni_pc", "simple", 20, 5.0),
        latent=("Wan22ImageToVideoLatent", 1280, 704, 121), note=NOTE_WAN22_TI2V, fps=24.0,
        prefix="wan22_ti2v"),
}


# --- thumbnails: a drawing of the graph itself (no sample images) ----------------------------

TYPE_COLORS = {"MODEL": (180, 160, 255), "CLIP": (255, 215, 0), "VAE": (255, 100, 100),
               "CONDITIONING": (255, 170, 60), "LATENT": (255, 150, 200), "IMAGE": (100, 180, 255),
               "NOISE": (200, 200, 200), "GUIDER": (120, 220, 160), "SAMPLER": (200, 200, 120),
               "SIGMAS": (150, 200, 220)}


def render(wf, title, path):
    from PIL import Image, ImageDraw, ImageFont
    W, H, margin, header = 1200, 720, 30, 110
    nodes = wf["nodes"]
    x0 = min(n["pos"][0] for n in nodes); y0 = min(n["pos"][1] for n in nodes)
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes)
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes)
    for g in wf["groups"]:
        gx, gy, gw, gh = g["bounding"]
        x0, y0, x1, y1 = min(x0, gx), min(y0, gy), max(x1, gx + gw), max(y1, gy + gh)
    s = min((W - 2 * margin) / (x1 - x0), (H - header - margin) / (y1 - y0))
    ox = margin + ((W - 2 * margin) - s * (x1 - x0)) / 2
    P = lambda x, y: (ox + (x - x0) * s, header + (y - y0) * s)
    img = Image.new("RGB", (W, H), (32, 32, 36))
    d = ImageDraw.Draw(img, "RGBA")
    font = lambda size, bold=False: ImageFont.truetype(
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf" if bold
        else "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", size)
    d.text((margin, 22), "GAG A/B: " + title, font=font(34, True), fill=(240, 240, 240))
    d.text((margin, 68), "Diagram of this workflow's graph (not a sample image). "
           "A = without GAG, B = with GAG; same seed.", font=font(18), fill=(190, 190, 190))
    for g in wf["groups"]:
        gx, gy, gw, gh = g["bounding"]
        a, b = P(gx, gy), P(gx + gw, gy + gh)
        rgb = tuple(int(g["color"][i:i + 2], 16) for i in (1, 3, 5)) if len(g["color"]) == 7 else \
            tuple(int(c * 2, 16) for c in g["color"][1:4])
        d.rectangle([a, b], fill=rgb + (45,), outline=rgb + (160,), width=2)
        d.text((a[0] + 6, a[1] + 4), g["title"], font=font(15, True), fill=(230, 230, 230))
    by_id = {n["id"]: n for n in nodes}
    for _, src, sslot, dst, dslot, kind in wf["links"]:
        a, b = by_id[src], by_id[dst]
        p = P(a["pos"][0] + a["size"][0], a["pos"][1] + 30 + 20 * sslot)
        q = P(b["pos"][0], b["pos"][1] + 30 + 20 * dslot)
        col = TYPE_COLORS.get(kind, (200, 200, 200))
        pts = []
        for i in range(21):  # cubic bezier like the editor draws links
            t = i / 20
            c1 = (p[0] + 60 * s, p[1]); c2 = (q[0] - 60 * s, q[1])
            pts.append(tuple((1 - t) ** 3 * p[k] + 3 * (1 - t) ** 2 * t * c1[k]
                             + 3 * (1 - t) * t ** 2 * c2[k] + t ** 3 * q[k] for k in (0, 1)))
        d.line(pts, fill=col + (200,), width=2)
    for n in nodes:
        a = P(*n["pos"]); b = P(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        is_gag = n["type"].startswith("GAG")
        fill = (60, 60, 110) if is_gag else (90, 70, 40) if n["type"] == "Note" else (53, 53, 58)
        d.rounded_rectangle([a, b], radius=6, fill=fill, outline=(150, 150, 220) if is_gag
                            else (110, 110, 110), width=2)
        label = n.get("title") or n["type"]
        f = font(13, True)
        maxw = b[0] - a[0] - 8
        while d.textlength(label, font=f) > maxw and len(label) > 4:
            label = label[:-2] + "…" if not label.endswith("…") else label[:-2] + "…"
        d.text((a[0] + 5, a[1] + 4), label, font=f, fill=(235, 235, 235))
        if n["type"] not in ("Note",) and n.get("title") and n["title"] != n["type"]:
            d.text((a[0] + 5, a[1] + 20), n["type"], font=font(11), fill=(170, 170, 170))
    img.save(path, "JPEG", quality=88)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object-info", action="append", required=True, metavar="VERSION=PATH",
                        help="a GET /object_info dump of ComfyUI VERSION (repeat per version)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "workflows")
    args = parser.parse_args(argv)
    dumps = dict(item.split("=", 1) for item in args.object_info)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, spec in list(WORKFLOWS.items()) + list(VIDEO_WORKFLOWS.items()):
        if spec["comfyui"] not in dumps:
            parser.error(f"{name} needs --object-info {spec['comfyui']}=<dump of that ComfyUI>")
        object_info = json.loads(Path(dumps[spec["comfyui"]]).read_text(encoding="utf-8"))
        wf = (build_video if name in VIDEO_WORKFLOWS else build)(name, object_info, **spec)
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(wf, indent=1, ensure_ascii=False) + "\n")
        render(wf, TITLES[name], args.out / f"{name}.jpg")
        print("wrote", path, "and its .jpg")


if __name__ == "__main__":
    main()
