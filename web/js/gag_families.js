// Full-size block layouts of the model families GAG supports, for the GAG Layers node's map.
//
// The GAG Layers node has no model input, so the map cannot ask the model which attention
// layers it has; these are the layouts of the released full-size checkpoints, written out as
// static data. They name layers exactly as the Python adapters do (nodes/adapters/*.py:
// group, block number, transformer index), and the presets and modes mirror the adapters'
// class attributes; tests/comfy/test_frontend.py checks both against the adapters.
// Pure module: no DOM, no ComfyUI imports.

import { layerRef } from "./gag_layer_spec.js";

// nodes/adapters/unet.py: UNetAdapter.presets / .modes
const UNET_PRESETS = Object.freeze({
  paper: "input, output",
  all: "all",
  input: "input",
  output: "output",
  middle: "middle",
});

// nodes/adapters/flux.py: FLUX_PRESETS (FLUX.1, FLUX.2, Chroma)
const FLUX_PRESETS = Object.freeze({
  paper: "double, single",
  all: "all",
  double: "double",
  single: "single",
});

// nodes/adapters/sd3.py and qwen_image.py: one "joint" group
const JOINT_PRESETS = Object.freeze({
  paper: "joint",
  all: "all",
  joint: "joint",
});

// nodes/adapters/dit_common.py families: the first mode is what "auto" picks
const DIT_MODES = Object.freeze(["text", "joint"]);

// A group: `blocks` is how many blocks the model has in it (blocks without attention are drawn
// dimmed, so block numbers read as the model counts them); `attention` maps a block number to
// its number of transformers (UNet: cross-attention per transformer, indices 0..n-1), or to
// null when the block is one DiT attention (no transformer index).
function dit(name, count) {
  const attention = {};
  for (let i = 0; i < count; i++) attention[i] = null;
  return { name, blocks: count, attention };
}

export const FAMILIES = Object.freeze([
  {
    id: "sdxl",
    label: "SDXL",
    adapter: "unet",
    models: "SDXL, Pony, Illustrious, Hyper-SDXL, DMD2",
    groups: [
      { name: "input", blocks: 9, attention: { 4: 2, 5: 2, 7: 10, 8: 10 } },
      { name: "middle", blocks: 1, attention: { 0: 10 } },
      { name: "output", blocks: 9, attention: { 0: 10, 1: 10, 2: 10, 3: 2, 4: 2, 5: 2 } },
    ],
    presets: UNET_PRESETS,
    modes: ["text"],
  },
  {
    id: "sd15",
    label: "SD1.5",
    adapter: "unet",
    models: "SD1.5, SD2.x",
    groups: [
      { name: "input", blocks: 12, attention: { 1: 1, 2: 1, 4: 1, 5: 1, 7: 1, 8: 1 } },
      { name: "middle", blocks: 1, attention: { 0: 1 } },
      { name: "output", blocks: 12,
        attention: { 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1 } },
    ],
    presets: UNET_PRESETS,
    modes: ["text"],
  },
  {
    id: "flux",
    label: "FLUX.1",
    adapter: "flux",
    models: "FLUX.1 dev / schnell / Kontext / Krea",
    groups: [dit("double", 19), dit("single", 38)],
    presets: FLUX_PRESETS,
    modes: DIT_MODES,
  },
  {
    id: "flux2",
    label: "FLUX.2",
    adapter: "flux2",
    models: "FLUX.2 dev (klein models have fewer blocks)",
    groups: [dit("double", 8), dit("single", 48)],
    presets: FLUX_PRESETS,
    modes: DIT_MODES,
  },
  {
    id: "chroma",
    label: "Chroma",
    adapter: "chroma",
    models: "Chroma",
    groups: [dit("double", 19), dit("single", 38)],
    presets: FLUX_PRESETS,
    modes: DIT_MODES,
  },
  {
    id: "sd3",
    label: "SD3",
    adapter: "sd3",
    models: "SD3 medium, SD3.5 medium (SD3.5 large has 38 blocks)",
    groups: [dit("joint", 24)],
    presets: JOINT_PRESETS,
    modes: DIT_MODES,
  },
  {
    id: "sd35_large",
    label: "SD3.5 L",
    adapter: "sd3",
    models: "SD3.5 large, large turbo",
    groups: [dit("joint", 38)],
    presets: JOINT_PRESETS,
    modes: DIT_MODES,
  },
  {
    id: "qwen_image",
    label: "Qwen-Image",
    adapter: "qwen_image",
    models: "Qwen-Image, Qwen-Image-Edit",
    groups: [dit("joint", 60)],
    presets: JOINT_PRESETS,
    modes: DIT_MODES,
  },
]);

export const DEFAULT_FAMILY = "sdxl";

export function familyById(id) {
  return FAMILIES.find((f) => f.id === id) ?? null;
}

// Every attention layer of a family as layer refs, in the adapters' order.
export function familyLayers(family) {
  const refs = [];
  for (const group of family.groups) {
    for (let block = 0; block < group.blocks; block++) {
      if (!Object.prototype.hasOwnProperty.call(group.attention, block)) continue;
      const subs = group.attention[block];
      if (subs === null) refs.push(layerRef(group.name, block, null));
      else for (let sub = 0; sub < subs; sub++) refs.push(layerRef(group.name, block, sub));
    }
  }
  return refs;
}

// Guess the family from a model file name (the loader upstream of GAG Model Patch). Only a
// hint for the map: the server checks the real model when the graph runs.
const NAME_HINTS = [
  [/chroma/i, "chroma"],
  [/qwen/i, "qwen_image"],
  [/flux[-_. ]?2/i, "flux2"],
  [/flux|krea|kontext/i, "flux"],
  [/(sd|stable[-_ ]?diffusion)[-_ ]?3[-_.]?5[-_ ]?large/i, "sd35_large"],
  [/sd3|sd_3|stable[-_ ]?diffusion[-_ ]?3/i, "sd3"],
  [/xl|pony|illustrious|noob|dmd2|playground/i, "sdxl"],
  [/v1[-_.]?5|sd[-_]?1[-_.]?5|sd15|v2[-_.]?[01]|sd[-_]?2[-_.]?[01]|sd2/i, "sd15"],
];

export function familyFromFileName(name) {
  if (typeof name !== "string" || !name) return null;
  const base = name.split(/[\\/]/).pop();
  for (const [re, id] of NAME_HINTS) if (re.test(base)) return id;
  return null;
}
