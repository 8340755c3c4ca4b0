// The model families the GAG Layers map draws, as the server's family table describes them.
//
// The GAG Layers node has no model input, so the map cannot ask the model which attention
// layers it has; it draws the layouts of the released full-size models instead. Those layouts,
// presets and modes live once, in nodes/adapters/families.py, and the pack serves them at
// /gag/families: this module only fetches and reads them. Without a server that answers (an
// older pack, a front end opened from disk) FAMILIES is empty and the map says so.
// Pure module: no DOM, no ComfyUI imports.

import { layerRef } from "./gag_layer_spec.js";

export const FAMILIES_ROUTE = "/gag/families";

async function fetchFamilies() {
  try {
    const base = (globalThis.location && globalThis.location.pathname || "/")
      .replace(/\/[^/]*$/, "");  // the front end may be served below the server's root
    const response = await fetch(`${base}/api${FAMILIES_ROUTE}`, { cache: "no-store" });
    if (!response.ok) return [];
    const table = await response.json();
    return Array.isArray(table) ? table : [];
  } catch (_) {
    return [];
  }
}

export const FAMILIES = Object.freeze(await fetchFamilies());

export const DEFAULT_FAMILY = "sdxl";

export function familyById(id) {
  return FAMILIES.find((f) => f.id === id) ?? null;
}

// Every attention layer of a layout as layer refs, in the hooks' order.
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

// Guess the layout from a model file name (the loader upstream of GAG Model Patch), with the
// table's hints in table order (most specific first). Only a hint for the map: the server
// checks the real model when the graph runs.
export function familyFromFileName(name) {
  if (typeof name !== "string" || !name) return null;
  const base = name.split(/[\\/]/).pop();
  for (const family of FAMILIES) {
    if (family.file_hint && new RegExp(family.file_hint, "i").test(base)) return family.id;
  }
  return null;
}
