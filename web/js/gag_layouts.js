// The layouts the GAG Layers map draws: the released full-size models of each model family, as
// the server's family table describes them.
//
// A family (FLUX.2, SD1.5 / SDXL UNet, …) is what the server recognises a model as; a layout is
// one released model of it (FLUX.2 dev, Klein 4B, Klein 9B; SDXL, SD1.5), with its block counts.
// The GAG Layers node has no model input, so the map cannot ask the model which attention layers
// it has; it draws a layout instead. Layouts, presets and modes live once, in
// nodes/adapters/families.py (front_end_table), and the pack serves them at /gag/families: this
// module only fetches and reads them. Each layout carries its family's id, display name, presets
// and modes. Without a server that answers (an older pack, a front end opened from disk) LAYOUTS
// is empty and the map says so.
// Pure module: no DOM, no ComfyUI imports.

import { layerRef } from "./gag_layer_spec.js";

export const LAYOUTS_ROUTE = "/gag/families";

async function fetchLayouts() {
  try {
    const base = (globalThis.location && globalThis.location.pathname || "/")
      .replace(/\/[^/]*$/, "");  // the front end may be served below the server's root
    const response = await fetch(`${base}/api${LAYOUTS_ROUTE}`, { cache: "no-store" });
    if (!response.ok) return [];
    const table = await response.json();
    return Array.isArray(table) ? table : [];
  } catch (_) {
    return [];
  }
}

export const LAYOUTS = Object.freeze(await fetchLayouts());

// What the map draws when it has no better guess: SDXL, the most used layout.
export const DEFAULT_LAYOUT = "sdxl";

export function layoutById(id) {
  return LAYOUTS.find((layout) => layout.id === id) ?? null;
}

// Every attention layer of a layout as layer refs, in the hooks' order.
export function layoutLayers(layout) {
  const refs = [];
  for (const group of layout.groups) {
    for (let block = 0; block < group.blocks; block++) {
      if (!Object.prototype.hasOwnProperty.call(group.attention, block)) continue;
      const subs = group.attention[block];
      if (subs === null) refs.push(layerRef(group.name, block, null));
      else for (let sub = 0; sub < subs; sub++) refs.push(layerRef(group.name, block, sub));
    }
  }
  return refs;
}

// Guess the layout from a model file name (the loader upstream of GAG Model Patch), with the
// table's hints in table order (most specific first). Only a hint for the map: the server
// checks the real model when the graph runs.
export function layoutFromFileName(name) {
  if (typeof name !== "string" || !name) return null;
  const base = name.split(/[\\/]/).pop();
  for (const layout of LAYOUTS) {
    if (layout.file_hint && new RegExp(layout.file_hint, "i").test(base)) return layout.id;
  }
  return null;
}
