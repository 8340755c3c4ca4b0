// The strength readout on GAG Model Patch: after each sampling run, a small plot of the median
// attention gain per step (nodes/gain_readout.py sends it as a "gag.readout" message).
//
// The text summary itself ("GAG: attention gain ×2.1 median, …" and the hint) arrives as
// ComfyUI's progress text, which the front end shows on the node without this file. The plot is
// a canvas widget that never serializes: saved workflows and queued prompts are unchanged.
// Every front-end API used is feature-checked; a front end without one loses the plot only.

import { growToFit, guard, markDirty, nodeClass, registerOnce, warn } from "./gag_common.js";
import { COLORS, addCanvasWidget, curve, dots, hlines, label, panel, panelBox } from "./gag_draw.js";

const EXTENSION_NAME = "gag.comfyui.readout";
const MESSAGE_TYPE = "gag.readout";
const LOADED_FLAG = "__gagReadoutLoaded";
const PLOT_HEIGHT = 96;
const MIN_WIDTH = 330;  // the summary's longest line fits without wrapping
const TEXT_LINE = 20;   // px per line of progress text beyond the first

const times = (g) => (g < 2 ? `×${g.toFixed(2)}` : `×${g.toFixed(1)}`);

function drawReadout(ctx, node, width, y, lowQuality) {
  const data = node.gagReadout;
  if (!data || !Array.isArray(data.steps)) return;
  const box = panelBox(width, y, PLOT_HEIGHT);
  ctx.save();
  panel(ctx, box.x, box.y, box.w, box.h);

  const left = box.x + 30, right = box.x + box.w - 8, top = box.y + 18, bottom = box.y + box.h - 14;
  const steps = data.steps;
  const total = Math.max(1, Number(data.total_steps) || steps.length);
  const hintGain = Number(data.hint_gain) || 3;
  const good = Array.isArray(data.good_gain) ? data.good_gain.map(Number) : [];
  const highest = Math.max(hintGain * 1.15, ...steps.map((s) => s.p95));
  const px = (i) => left + (total > 1 ? i / (total - 1) : 0.5) * (right - left);
  const py = (g) => bottom - Math.max(0, (g - 1) / (highest - 1)) * (bottom - top);
  const medians = steps.map((s) => [px(s.step), py(s.median)]);
  node.gagReadoutPlot = { left, right, top, bottom, points: medians };

  if (good.length === 2) {  // the gain range that worked best in the digits study
    ctx.fillStyle = COLORS.good;
    ctx.fillRect(left, py(good[1]), right - left, py(good[0]) - py(good[1]));
  }
  hlines(ctx, left, right, [py(1)]);
  hlines(ctx, left, right, [py(hintGain)], { color: COLORS.warning, dash: [4, 3] });

  // p95 as bars above the median, the median as a line with dots.
  ctx.strokeStyle = COLORS.spread;
  ctx.lineWidth = 3;
  ctx.beginPath();
  for (const s of steps) { ctx.moveTo(px(s.step), py(s.median)); ctx.lineTo(px(s.step), py(s.p95)); }
  ctx.stroke();
  curve(ctx, medians);
  dots(ctx, medians);

  if (!lowQuality) {
    const median = Number(data.overall?.median);
    label(ctx, `gain per step, median ${times(median)}`, box.x + 6, box.y + 9,
          { color: median >= hintGain ? COLORS.warning : COLORS.text });
    label(ctx, "×1", left - 4, py(1), { color: COLORS.dim, align: "right" });
    label(ctx, times(hintGain), left - 4, py(hintGain), { color: COLORS.dim, align: "right" });
    label(ctx, "step 1", left, bottom + 8, { color: COLORS.dim });
    if (total > 1) label(ctx, `${total}`, right, bottom + 8, { color: COLORS.dim, align: "right" });
  }
  ctx.restore();
}

function addPlot(node) {
  const existing = (node.widgets ?? []).find((w) => w && w.name === "gag_readout_plot");
  if (existing) return existing;
  return addCanvasWidget(node, {
    name: "gag_readout_plot",
    type: "gag_readout",
    height: PLOT_HEIGHT,
    draw(ctx, n, width, y, lowQuality) {
      drawReadout(ctx, n, width, y, lowQuality);
    },
    what: "the readout plot",
  });
}

function onReadout(app, detail) {
  if (!detail || detail.node === undefined) return;
  const graph = app?.graph;
  const node = graph?.getNodeById?.(detail.node) ?? graph?.getNodeById?.(Number(detail.node));
  if (!node || nodeClass(node) !== "GAGModelPatch") return;
  node.gagReadout = detail;  // read by tests/comfy/test_readout_server.py; not serialized
  if (typeof node.addCustomWidget !== "function") return;
  addPlot(node);
  // Fit the plot and the progress text the front end added above it; that text box takes the
  // height left over, and its minimum shows about one line.
  const lines = String(node.gagReadout.text ?? "").split("\n").length;
  growToFit(node, { minWidth: MIN_WIDTH, extraHeight: TEXT_LINE * Math.max(0, lines - 1) });
  markDirty(node);
}

async function findApi(app) {
  try {
    const module = await import("../../../scripts/api.js");
    if (module?.api) return module.api;
  } catch (_) { /* fall through */ }
  return globalThis.comfyAPI?.api?.api ?? app?.api ?? null;
}

async function register() {
  await registerOnce(LOADED_FLAG, (app) => ({
    name: EXTENSION_NAME,
    async setup() {
      try {
        const api = await findApi(app);
        if (!api || typeof api.addEventListener !== "function") {
          warn("ComfyUI api events not found; the GAG readout plot is off");
          return;
        }
        api.addEventListener(MESSAGE_TYPE,
                             guard("readout message", (event) => onReadout(app, event?.detail),
                                   "the readout plot"));
      } catch (e) {
        warn("readout setup failed; the plot is off:", e);
      }
    },
  }), "the GAG readout plot is");
}

try {
  await register();
} catch (e) {
  warn("readout registration failed:", e);
}
