// The extension that puts the live previews on their nodes: the λ schedule on GAG Schedule
// (gag_schedule_preview.js) and the layer map on GAG Layers (gag_layer_map.js).
//
// The previews are canvas widgets that draw from the node's current widget values on every
// repaint, so they follow every change (widget drags, combo picks, typing, workflow loads,
// undo) without hooking each widget. They never serialize: saved workflows and queued prompts
// are the same with or without them. Every front-end API used is feature-checked and every hook
// is wrapped, so a front end that lacks one (older, newer, Vue-rendered nodes) loses the
// preview, never the node. Nothing runs for graphs without GAG nodes.

import { addLayerMap } from "./gag_layer_map.js";
import { addSchedulePreview } from "./gag_schedule_preview.js";
import { growToFit, guard, nodeClass, registerOnce, warn } from "./gag_common.js";

const EXTENSION_NAME = "gag.comfyui.previews";
const LOADED_FLAG = "__gagPreviewsLoaded";

// node class → the preview it gets
const PREVIEWS = {
  GAGSchedule: addSchedulePreview,
  GAGLayers: addLayerMap,
};

function onNodeCreated(node) {
  const addPreview = PREVIEWS[nodeClass(node)];
  if (!addPreview) return;
  if (typeof node.addCustomWidget !== "function") {
    warn("this front end has no addCustomWidget; previews are off");
    return;
  }
  if ((node.widgets ?? []).some((w) => w && w.type === "gag_preview")) return;
  addPreview(node);
  growToFit(node);
}

async function register() {
  await registerOnce(LOADED_FLAG, () => ({
    name: EXTENSION_NAME,
    nodeCreated: guard("nodeCreated", onNodeCreated),
  }), "GAG previews are");
}

// Top-level await: the front end waits for this module before it sets the app up, so the
// extension is registered in time for the first graph.
try {
  await register();
} catch (e) {
  warn("registration failed:", e);
}
