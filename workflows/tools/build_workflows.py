"""Build the bundled A/B workflows (UI format, as ComfyUI 0.3.64 + frontend 1.27.10 save them)
from a live /object_info dump, and render a diagram thumbnail of each graph.

usage: python workflows/tools/build_workflows.py OBJECT_INFO.json workflows/

OBJECT_INFO.json is a dump of GET /object_info from a ComfyUI server with this pack installed
(e.g. one started by tests/comfy/comfy_server.py). The bundled JSON files and thumbnails were
made with it; edit this script rather than the JSON by hand, then re-run the workflow tests.
"""
import json
import sys
import tomllib
import uuid
from pathlib import Path

OBJECT_INFO = json.load(open(sys.argv[1]))
OUT = Path(sys.argv[2])
PACK_VERSION = tomllib.load(open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb"))["project"]["version"]
GAG_TYPES = {"GAGModelPatch", "GAGLayers", "GAGSparsity", "GAGSchedule"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def is_widget(spec):
    kind = "COMBO" if isinstance(spec[0], list) else spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return kind in WIDGET_TYPES and not opts.get("forceInput")


class Workflow:
    def __init__(self, name):
        self.name = name
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
            d = OBJECT_INFO[kind]
            for section in ("required", "optional"):
                for name in d["input_order"].get(section, []):
                    spec = d["input"][section][name]
                    if not is_widget(spec):
                        node["inputs"].append({"name": name, "type": spec[0], "link": None})
            for i, (t, n) in enumerate(zip(d["output"], d["output_name"])):
                node["outputs"].append({"name": n, "type": t, "links": []})
            props = {"Node name for S&R": kind}
            if kind in GAG_TYPES:
                props.update({"cnr_id": "comfyui-gag", "ver": PACK_VERSION})
            else:
                props.update({"cnr_id": "comfy-core", "ver": "0.3.64"})
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
HF = "https://huggingface.co/"


def model(name, repo_path, directory):
    return {"name": name, "url": HF + repo_path, "directory": directory}


SDXL_CKPT = model("sd_xl_base_1.0.safetensors",
                  "stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
                  "checkpoints")
PROMPT_SDXL = ("a red fox sitting on a moss-covered stone in a misty pine forest at dawn, "
               "three mushrooms in front of it, soft golden light, detailed fur, photograph")
NEGATIVE_SDXL = "blurry, lowres, watermark, text, deformed"


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


def build(name, *, loaders, text, sampling, gag, note, latent, prefix):
    """loaders(wf) -> dict(model=(id, slot), clip=(id, slot), vae=(id, slot));
    text(wf, clip) -> dict(positive=(id, slot), negative=(id, slot) or None)
    sampling = (sampler_name, scheduler, steps, cfg or None)"""
    wf = Workflow(name)
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
    sched = wf.node("BasicScheduler", (880, 190), (300, 106), [scheduler, steps, 1.0],
                    title="Steps and schedule (shared)")
    wf.link(*src["model"], sched, "model")

    layers = wf.node("GAGLayers", (880, 560), (300, 340), ["paper", "", gag.get("mode", "auto")],
                     color=GAG)
    sparsity = wf.node("GAGSparsity", (880, 950), (300, 58), [gag.get("alpha", 1.5)], color=GAG)
    schedule = wf.node("GAGSchedule", (880, 1058), (300, 250), [0.0, 1.0, "constant"], color=GAG)
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
    wf.group("B: with GAG (same seed, prompt and sampler)", [860, 480, 1480, 878], "#8A8")
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


GAG_PAPER = {"scale": 10.0, "eta": 15.0, "zeta": 0.0}

COMMON_GAG_TEXT = """\
GAG Model Patch: scale (λ) 10, eta (η) 15, zeta (ζ) 0 — the paper's defaults. GAG Layers
'paper' = cross-attention of the UNet's input and output blocks (middle skipped); GAG Sparsity
α 1.5 and GAG Schedule 0→1 constant are the defaults too (same result as leaving them
unconnected)."""

NOTE_SDXL = f"""GAG A/B — SDXL base 1.0 with CFG

A (top) samples plain SDXL; B (bottom) samples the same model through GAG Model Patch. Both share
the seed (RandomNoise), sampler, steps/schedule, prompts and latent, so any difference between the
two images comes from GAG alone. Outputs: output/GAG/sdxl_A_… and output/GAG/sdxl_B_….

MODEL FILES
• models/checkpoints/sd_xl_base_1.0.safetensors
  (stabilityai/stable-diffusion-xl-base-1.0 on Hugging Face; holds UNet, both text encoders, VAE)

SETTINGS AND WHY
• 1024×1024: SDXL's native resolution.
• 30 steps, euler, normal schedule: the SDXL base's reference sampler (Euler); by 30 steps the
  image has settled.
• CFG 6 in both CFG nodes: SDXL base works best at CFG 5–7. GAG works inside the attention layers
  and adds no extra model pass, so it stacks on top of CFG.
• {COMMON_GAG_TEXT}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated or over-sharpened; raise it
   (12–15) if A and B look almost the same.
2. GAG Schedule → end_percent 0.6–0.8 lets the last, detail-forming steps run unguided.
3. The prompt, and the seed in "Seed (shared by A and B)".
4. CFG: change BOTH CFG nodes together, or the A/B comparison is no longer fair.

WHAT TO LOOK FOR
B should follow the prompt more closely (objects, counts, attributes) and show crisper structure
than A. If B has blown-out colours or grainy artefacts, λ is too high for this model."""

NOTE_HYPER = f"""GAG A/B — Hyper-SDXL (8-step LoRA on SDXL base), no CFG

A (top) samples plain Hyper-SDXL; B (bottom) the same model through GAG Model Patch. Both share
seed, sampler, steps/schedule, prompt and latent. Outputs: output/GAG/hyper_sdxl_A_… and …_B_….

MODEL FILES
• models/checkpoints/sd_xl_base_1.0.safetensors (stabilityai/stable-diffusion-xl-base-1.0)
• models/loras/Hyper-SDXL-8steps-lora.safetensors (ByteDance/Hyper-SD)

SETTINGS AND WHY
• 8 steps with the 8-step LoRA at strength 1.0: Hyper-SD's official recipe (LoRA fused at full
  strength, DDIM with "trailing" timesteps, guidance scale 0 = no CFG).
• sampler ddim + scheduler sgm_uniform: ComfyUI's equivalent of that recipe; sgm_uniform with
  8 steps samples at timesteps 999, 874, …, 125, DDIM's "trailing" ones (999, 874, …, 124) to
  within one.
• No CFG (Basic Guider, i.e. CFG 1, no negative prompt): the distilled model is meant to run
  without CFG, and CFG would double the cost. This is where GAG helps most: it adds guidance
  without a second model pass.
• {COMMON_GAG_TEXT} The paper uses the same
  defaults for CFG-free distilled models.

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: 5–8 if B looks oversaturated, up to 15 if the effect is too weak.
2. LoRA strength 0.7–1.0 when you swap sd_xl_base_1.0 for a fine-tuned SDXL checkpoint.
3. Prompt and seed.
For negative prompts, Hyper-SD also ships CFG-preserving LoRAs (e.g.
Hyper-SDXL-8steps-CFG-lora.safetensors, CFG 5–8): replace both Basic Guider nodes with CFG Guider
nodes set to the same CFG.

WHAT TO LOOK FOR
Few-step distilled models often lose prompt details (counts, attributes, small objects) and look
flat; B should recover some of them at the same 8 steps."""

NOTE_DMD2 = f"""GAG A/B — DMD2 (SDXL, 4 steps), no CFG

A (top) samples plain DMD2; B (bottom) the same model through GAG Model Patch. Both share seed,
sampler, steps/schedule, prompt and latent. Outputs: output/GAG/dmd2_A_… and …_B_….

MODEL FILES
• models/checkpoints/sd_xl_base_1.0.safetensors (stabilityai/stable-diffusion-xl-base-1.0)
• models/loras/dmd2_sdxl_4step_lora_fp16.safetensors (tianweiy/DMD2)
• Or, instead of the LoRA: the distilled UNet dmd2_sdxl_4step_unet_fp16.bin in
  models/diffusion_models, loaded with "Load Diffusion Model" in place of the LoRA node (keep the
  checkpoint's CLIP and VAE).

SETTINGS AND WHY
• 4 steps, LoRA strength 1.0, sampler lcm: DMD2's official recipe (LCM scheduler, guidance
  scale 0 = no CFG, LoRA fused at 1.0).
• scheduler sgm_uniform: with 4 steps it samples at timesteps 999, 749, 500, 250 — the ones
  DMD2 was trained on (999, 749, 499, 249) to within one.
• No CFG (Basic Guider, i.e. CFG 1, no negative prompt): DMD2 was distilled to run without CFG.
  GAG adds guidance without a second model pass.
• {COMMON_GAG_TEXT} The paper uses the same
  defaults for CFG-free distilled models.

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: 5–8 if B looks oversaturated, up to 15 if the effect is too weak.
2. Prompt and seed.
3. LoRA strength 0.7–1.0 on fine-tuned SDXL checkpoints.

WHAT TO LOOK FOR
B should keep more of the prompt's details and structure than A at the same 4 steps."""

HYPER_LORA = model("Hyper-SDXL-8steps-lora.safetensors",
                   "ByteDance/Hyper-SD/resolve/main/Hyper-SDXL-8steps-lora.safetensors", "loras")
DMD2_LORA = model("dmd2_sdxl_4step_lora_fp16.safetensors",
                  "tianweiy/DMD2/resolve/main/dmd2_sdxl_4step_lora_fp16.safetensors", "loras")

# --- DiTs -----------------------------------------------------------------------------------

FLUX_VAE = model("ae.safetensors", "black-forest-labs/FLUX.1-schnell/resolve/main/ae.safetensors",
                 "vae")
CLIP_L = model("clip_l.safetensors",
               "comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "text_encoders")
T5XXL = model("t5xxl_fp16.safetensors",
              "comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
              "text_encoders")
FLUX_DEV = model("flux1-dev.safetensors",
                 "black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
                 "diffusion_models")
FLUX_SCHNELL = model("flux1-schnell.safetensors",
                     "black-forest-labs/FLUX.1-schnell/resolve/main/flux1-schnell.safetensors",
                     "diffusion_models")
QWEN_REPO = "Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/"
QWEN_MODEL = model("qwen_image_fp8_e4m3fn.safetensors",
                   QWEN_REPO + "diffusion_models/qwen_image_fp8_e4m3fn.safetensors",
                   "diffusion_models")
QWEN_TE = model("qwen_2.5_vl_7b_fp8_scaled.safetensors",
                QWEN_REPO + "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors", "text_encoders")
QWEN_VAE = model("qwen_image_vae.safetensors", QWEN_REPO + "vae/qwen_image_vae.safetensors", "vae")

PROMPT_DIT = ("a red fox sitting on a moss-covered stone in a misty pine forest at dawn, three "
              "mushrooms in front of it, a wooden sign that reads \"GAG\" leaning on the stone, "
              "soft golden light, detailed fur, photograph")


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


ZIMAGE_MODEL = model("z_image_turbo_bf16.safetensors",
                     "Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/"
                     "z_image_turbo_bf16.safetensors", "diffusion_models")
ZIMAGE_TE = model("qwen_3_4b.safetensors",
                  "Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/"
                  "qwen_3_4b.safetensors", "text_encoders")
ZIMAGE_VAE = model("ae.safetensors",
                   "Comfy-Org/z_image_turbo/resolve/main/split_files/vae/ae.safetensors", "vae")


def zimage_loaders(wf):
    m = wf.node("UNETLoader", (0, -40), (330, 82), [ZIMAGE_MODEL["name"], "default"],
                models=[ZIMAGE_MODEL])
    shift = wf.node("ModelSamplingAuraFlow", (0, 90), (330, 58), [3], title="Flow shift")
    wf.link(m, 0, shift, "model")
    c = wf.node("CLIPLoader", (0, 190), (330, 106), [ZIMAGE_TE["name"], "lumina2", "default"],
                models=[ZIMAGE_TE])
    v = wf.node("VAELoader", (0, 340), (330, 58), [ZIMAGE_VAE["name"]], models=[ZIMAGE_VAE])
    return {"model": (shift, 0), "clip": (c, 0), "vae": (v, 0)}


DIT_GAG_TEXT = """\
GAG Model Patch: scale (λ) 10, eta (η) 15, zeta (ζ) 0 — the paper's defaults. GAG Layers
'paper' + mode 'auto' = {layers}, guiding how image tokens retrieve text tokens inside each
joint attention (text mode); mode 'joint' guides the whole joint attention instead. GAG Sparsity
α 1.5 and GAG Schedule 0→1 constant are the defaults (same as leaving them unconnected)."""

FLUX_FILES = """\
• models/text_encoders/clip_l.safetensors and t5xxl_fp16.safetensors
  (comfyanonymous/flux_text_encoders; t5xxl_fp8_e4m3fn.safetensors also works, with less memory)
• models/vae/ae.safetensors (the FLUX.1 autoencoder, in black-forest-labs/FLUX.1-schnell or -dev)"""

NOTE_FLUX_DEV = f"""GAG A/B — FLUX.1-dev (guidance-distilled, no CFG)

A (top) samples plain FLUX.1-dev; B (bottom) the same model through GAG Model Patch. Both share
seed, sampler, steps/schedule, prompt and latent. Outputs: output/GAG/flux1_dev_A_… and …_B_….

MODEL FILES
• models/diffusion_models/flux1-dev.safetensors (black-forest-labs/FLUX.1-dev; gated: accept the
  licence on Hugging Face first)
{FLUX_FILES}

SETTINGS AND WHY
• 20 steps, euler, simple schedule, 1024×1024: the reference settings for FLUX.1-dev in ComfyUI.
• FluxGuidance 3.5: FLUX.1-dev is guidance-distilled; the guidance strength is an input of the
  model, not CFG. So both branches use a Basic Guider (CFG 1, no negative prompt, one model pass
  per step), and GAG adds its guidance inside the attention without a second pass.
• {DIT_GAG_TEXT.format(layers="every double- and single-stream block")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated or artefacty, raise it if
   A and B look the same.
2. GAG Layers → mode 'joint' for a stronger, broader effect; preset 'double' to guide only the
   19 double-stream blocks.
3. FluxGuidance (2.5–4) and the prompt/seed.

WHAT TO LOOK FOR
B should follow the prompt more closely (the three mushrooms, the sign's text) and show crisper
structure; GAG costs no extra model pass."""

NOTE_FLUX_SCHNELL = f"""GAG A/B — FLUX.1-schnell (4-step distilled, no CFG)

A (top) samples plain FLUX.1-schnell; B (bottom) the same model through GAG Model Patch. Both
share seed, sampler, steps/schedule, prompt and latent. Outputs: output/GAG/flux1_schnell_A_…
and …_B_….

MODEL FILES
• models/diffusion_models/flux1-schnell.safetensors (black-forest-labs/FLUX.1-schnell)
{FLUX_FILES}

SETTINGS AND WHY
• 4 steps, euler, simple schedule, 1024×1024: FLUX.1-schnell is timestep-distilled for 1–4 steps.
• No CFG and no FluxGuidance: schnell has no guidance input and runs at CFG 1 (Basic Guider).
  GAG is the only guidance here, and it adds no model pass.
• {DIT_GAG_TEXT.format(layers="every double- and single-stream block")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: 5–8 if B looks oversaturated, up to 15 if the effect is too weak.
2. GAG Layers → mode 'joint' for a broader effect.
3. Prompt and seed.

WHAT TO LOOK FOR
Few-step models tend to drop prompt details; B should keep more of them (the three mushrooms,
the sign's text) at the same 4 steps."""

NOTE_QWEN = f"""GAG A/B — Qwen-Image with CFG

A (top) samples plain Qwen-Image; B (bottom) the same model through GAG Model Patch. Both share
seed, sampler, steps/schedule, prompts and latent. Outputs: output/GAG/qwen_image_A_… and …_B_….

MODEL FILES (ComfyUI's repackaging of Qwen/Qwen-Image: Comfy-Org/Qwen-Image_ComfyUI)
• models/diffusion_models/qwen_image_fp8_e4m3fn.safetensors (or qwen_image_bf16.safetensors)
• models/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors
• models/vae/qwen_image_vae.safetensors

SETTINGS AND WHY
• 1328×1328: Qwen-Image's native square resolution.
• Flow shift 3.1 (ModelSamplingAuraFlow), 20 steps, euler, simple, CFG 2.5 in both CFG nodes:
  ComfyUI's reference settings for Qwen-Image (the Qwen team uses 50 steps and CFG 4).
• {DIT_GAG_TEXT.format(layers="all 60 transformer blocks")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated, raise it if A and B look
   the same.
2. GAG Layers → mode 'joint' for a broader effect.
3. CFG: change BOTH CFG nodes together; with a Qwen-Image-Lightning LoRA use CFG 1 (or Basic
   Guider nodes) and its step count.

WHAT TO LOOK FOR
B should follow the prompt more closely (the three mushrooms, the sign's text) with crisper
structure than A."""

NOTE_ZIMAGE_TURBO = f"""GAG A/B — Z-Image Turbo (8 steps, CFG 1)

A (top) samples plain Z-Image Turbo; B (bottom) the same model through GAG Model Patch. Both
share seed, sampler, steps/schedule, prompt and latent. Outputs: output/GAG/z_image_turbo_A_…
and …_B_…. Needs ComfyUI 0.33 or newer (Z-Image support; GAG tested there).

MODEL FILES (Comfy-Org/z_image_turbo, split_files/…)
• models/diffusion_models/z_image_turbo_bf16.safetensors
• models/text_encoders/qwen_3_4b.safetensors (Qwen3-4B; CLIP type lumina2)
• models/vae/ae.safetensors (the FLUX.1 autoencoder)

SETTINGS AND WHY
• 8 steps, res_multistep, simple schedule, flow shift 3 (ModelSamplingAuraFlow), 1024×1024:
  ComfyUI's reference settings for Z-Image Turbo.
• CFG 1: Turbo is distilled to run without CFG (ComfyUI's template feeds KSampler a zeroed
  negative at CFG 1, which is one model pass: the Basic Guider here does the same). No second
  pass is available to guide with, so GAG is the guidance, and it adds no model pass.
• {DIT_GAG_TEXT.format(layers="all 30 main transformer layers")}

WHAT TO CHANGE FIRST
1. GAG Model Patch → scale: lower it (5–8) if B looks oversaturated or artefacty, raise it if
   A and B look the same.
2. GAG Layers → mode 'joint' for a stronger, broader effect.
3. Prompt and seed.

WHAT TO LOOK FOR
Few-step distilled models tend to drop prompt details; B should keep more of them (the three
mushrooms, the sign's text) at the same 8 steps."""

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
    "gag_z_image_turbo": dict(
        loaders=zimage_loaders, text=flux_text(None), sampling=("res_multistep", "simple", 8, None),
        gag=GAG_PAPER, note=NOTE_ZIMAGE_TURBO, latent=("EmptySD3LatentImage", 1024, 1024),
        prefix="z_image_turbo"),
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, spec in WORKFLOWS.items():
        wf = build(name, **spec)
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(wf, indent=1, ensure_ascii=False) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()


# --- thumbnails: a drawing of the graph itself (no sample images) ----------------------------

TITLES = {
    "gag_sdxl_base_cfg": "SDXL base 1.0 · CFG 6 · 30 steps",
    "gag_hyper_sdxl_8step": "Hyper-SDXL 8-step LoRA · no CFG",
    "gag_dmd2_sdxl_4step": "DMD2 SDXL 4-step · no CFG",
    "gag_flux1_dev": "FLUX.1-dev · guidance 3.5 · 20 steps",
    "gag_flux1_schnell": "FLUX.1-schnell · 4 steps",
    "gag_qwen_image": "Qwen-Image · CFG 2.5 · 20 steps",
    "gag_z_image_turbo": "Z-Image Turbo · 8 steps · CFG 1",
}
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


def thumbnails():
    for name in WORKFLOWS:
        wf = json.load(open(OUT / f"{name}.json"))
        render(wf, TITLES[name], OUT / f"{name}.jpg")
        print("drew", OUT / f"{name}.jpg")


if __name__ == "__main__":
    thumbnails()
