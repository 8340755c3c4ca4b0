// What the GAG front-end extensions share besides drawing (that is gag_draw.js): logging, a
// guard that keeps a failing preview from breaking the node, node and widget lookups, walking
// the graph, resizing a node to fit its previews, and registering an extension once.
// Pure module: loading it registers nothing.

export function warn(...args) {
  try { console.warn("[GAG]", ...args); } catch (_) { /* console itself missing */ }
}

// fn, but a throw is logged and swallowed: a front end that lacks an API loses the drawing,
// never the node.
export function guard(label, fn, what = "the preview") {
  return function guarded(...args) {
    try {
      return fn.apply(this, args);
    } catch (e) {
      warn(`${label} failed; ${what} is skipped:`, e);
      return undefined;
    }
  };
}

export function nodeClass(node) {
  return node?.comfyClass ?? node?.type ?? "";
}

export function markDirty(node) {
  try {
    if (typeof node?.setDirtyCanvas === "function") node.setDirtyCanvas(true, true);
    else node?.graph?.setDirtyCanvas?.(true, true);
  } catch (_) { /* a detached node has nothing to repaint */ }
}

export function widgetByName(node, name) {
  return Array.isArray(node?.widgets) ? node.widgets.find((w) => w && w.name === name) : undefined;
}

export function widgetValue(node, name, fallback) {
  const w = widgetByName(node, name);
  return w === undefined || w.value === undefined ? fallback : w.value;
}

// Grow the node (never shrink it) to what it computes for itself, at least minWidth wide and
// extraHeight taller. Size is cosmetic: a front end without these methods keeps its size.
export function growToFit(node, { minWidth = 0, extraHeight = 0 } = {}) {
  try {
    const size = typeof node?.computeSize === "function" ? node.computeSize() : null;
    if (!size || !node.size || typeof node.setSize !== "function") return;
    const width = Math.max(node.size[0], size[0], minWidth);
    const height = Math.max(node.size[1], size[1] + extraHeight);
    if (width !== node.size[0] || height !== node.size[1]) node.setSize([width, height]);
  } catch (_) { /* size is cosmetic */ }
}

// --- walking the graph (LiteGraph's link storage changed from object to Map over versions) ----

function getLink(graph, id) {
  if (!graph || id === null || id === undefined) return null;
  try {
    if (typeof graph.getLink === "function") return graph.getLink(id) ?? null;
    const links = graph.links;
    if (!links) return null;
    return typeof links.get === "function" ? links.get(id) ?? null : links[id] ?? null;
  } catch (_) {
    return null;
  }
}

export function nodeById(graph, id) {
  try {
    return typeof graph?.getNodeById === "function" ? graph.getNodeById(id) : null;
  } catch (_) {
    return null;
  }
}

// The nodes this node's outputs feed.
export function downstreamNodes(node) {
  const out = [];
  for (const output of node?.outputs ?? []) {
    for (const id of output?.links ?? []) {
      const link = getLink(node.graph, id);
      const target = link ? nodeById(node.graph, link.target_id) : null;
      if (target) out.push(target);
    }
  }
  return out;
}

// The node that feeds this node's input of that name, or null.
export function upstreamOf(node, inputName) {
  const input = (node?.inputs ?? []).find((i) => i && i.name === inputName);
  const link = input ? getLink(node.graph, input.link) : null;
  return link ? nodeById(node.graph, link.origin_id) : null;
}

// --- registering ------------------------------------------------------------------------------

async function findApp() {
  try {
    const module = await import("../../../scripts/app.js");
    if (module?.app) return module.app;
  } catch (_) { /* fall through: newer front ends may drop the shim */ }
  return globalThis.comfyAPI?.app?.app ?? globalThis.app ?? null;
}

// Register a front-end extension once, whatever the number of copies of this pack's web folder
// the front end loads (it rejects duplicate extension names with an error). `extension` is
// built from the app: (app) => ({ name, … }). Returns the app, or null where there is none.
export async function registerOnce(flag, makeExtension, whatIsOff) {
  if (globalThis[flag]) return null;
  globalThis[flag] = true;
  const app = await findApp();
  if (!app || typeof app.registerExtension !== "function") {
    warn(`ComfyUI app API not found; ${whatIsOff} off`);
    return null;
  }
  app.registerExtension(makeExtension(app));
  return app;
}
