// What the GAG front-end extensions share: logging, a guard that keeps a failing preview from
// breaking the node, node helpers and the app lookup. Pure module: loading it registers nothing.

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
