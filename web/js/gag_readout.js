// The strength readout on GAG Model Patch: after each sampling run, a small plot of the median
// attention gain per step (nodes/gain_readout.py sends it as a "gag.readout" message).
//
// The text summary itself ("GAG: attention gain ×2.1 median, …" and the hint) arrives as
// ComfyUI's progress text, which the front end shows on the node without this file. The plot is
// a canvas widget that never serializes: saved workflows and queued prompts are unchanged.
// Every front-end API used is feature-checked; a front end without one loses the plot only.

import { guard, markDirty, nodeClass, registerOnce, warn } from "./gag_common.js";

const EXTENSION_NAME = "gag.comfyui.readout";
const MESSAGE_TYPE = "gag.readout";
const LOADED_FLAG = "__gagReadoutLoaded";
const PLOT_HEIGHT = 96;
const MIN_WIDTH = 330;  // the summary's longest line fits without wrapping
const TEXT_LINE = 20;   // px per line of progress text beyond the first

const COLORS = {
  panel: "rgba(0, 0, 0, 0.28)",
  grid: "rgba(255, 255, 255, 0.10)",
  text: "#c8c8c8",
  dim: "#8a8a8a",
  accent: "#4aa3ff",
  spread: "rgba(74, 163, 255, 0.22)",
  good: "rgba(90, 200, 120, 0.22)",
  warning: "#f0b44c",
};

const times = (g) => (g < 2 ? `×${g.toFixed(2)}` : `×${g.toFixed(1)}`);

function drawReadout(ctx, node, width, y, lowQuality) {
  const data = node.gagReadout;
  if (!data || !Array.isArray(data.steps)) return;
  const x0 = 10, w0 = Math.max(40, width - 20), y0 = y + 2, h0 = PLOT_HEIGHT - 6;
  ctx.save();
  ctx.beginPath();
  ctx.rect(x0, y0, w0, h0);
  ctx.fillStyle = COLORS.panel;
  ctx.fill();
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "middle";

  const left = x0 + 30, right = x0 + w0 - 8, top = y0 + 18, bottom = y0 + h0 - 14;
  const steps = data.steps;
  const total = Math.max(1, Number(data.total_steps) || steps.length);
  const hintGain = Number(data.hint_gain) || 3;
  const good = Array.isArray(data.good_gain) ? data.good_gain.map(Number) : [];
  const highest = Math.max(hintGain * 1.15, ...steps.map((s) => s.p95));
  const px = (i) => left + (total > 1 ? i / (total - 1) : 0.5) * (right - left);
  const py = (g) => bottom - Math.max(0, (g - 1) / (highest - 1)) * (bottom - top);
  node.gagReadoutPlot = { left, right, top, bottom, points: steps.map((s) => [px(s.step), py(s.median)]) };

  if (good.length === 2) {  // the gain range that worked best in the digits study
    ctx.fillStyle = COLORS.good;
    ctx.fillRect(left, py(good[1]), right - left, py(good[0]) - py(good[1]));
  }
  ctx.strokeStyle = COLORS.grid;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(left, py(1)); ctx.lineTo(right, py(1));
  ctx.stroke();
  ctx.save();
  ctx.setLineDash?.([4, 3]);
  ctx.strokeStyle = COLORS.warning;
  ctx.beginPath();
  ctx.moveTo(left, py(hintGain)); ctx.lineTo(right, py(hintGain));
  ctx.stroke();
  ctx.restore();

  // p95 as bars above the median, the median as a line with dots.
  ctx.strokeStyle = COLORS.spread;
  ctx.lineWidth = 3;
  ctx.beginPath();
  for (const s of steps) { ctx.moveTo(px(s.step), py(s.median)); ctx.lineTo(px(s.step), py(s.p95)); }
  ctx.stroke();
  ctx.strokeStyle = COLORS.accent;
  ctx.fillStyle = COLORS.accent;
  ctx.lineWidth = 2;
  ctx.beginPath();
  steps.forEach((s, i) => (i ? ctx.lineTo(px(s.step), py(s.median)) : ctx.moveTo(px(s.step), py(s.median))));
  ctx.stroke();
  for (const s of steps) {
    ctx.beginPath();
    ctx.arc(px(s.step), py(s.median), 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }

  if (!lowQuality) {
    const median = Number(data.overall?.median);
    ctx.textAlign = "left";
    ctx.fillStyle = median >= hintGain ? COLORS.warning : COLORS.text;
    ctx.fillText(`gain per step, median ${times(median)}`, x0 + 6, y0 + 9);
    ctx.fillStyle = COLORS.dim;
    ctx.textAlign = "right";
    ctx.fillText("×1", left - 4, py(1));
    ctx.fillText(times(hintGain), left - 4, py(hintGain));
    ctx.textAlign = "left";
    ctx.fillText("step 1", left, bottom + 8);
    ctx.textAlign = "right";
    if (total > 1) ctx.fillText(`${total}`, right, bottom + 8);
  }
  ctx.restore();
}

function addPlot(node) {
  const existing = (node.widgets ?? []).find((w) => w && w.name === "gag_readout_plot");
  if (existing) return existing;
  const widget = {
    name: "gag_readout_plot",
    type: "gag_readout",
    value: "",
    serialize: false,
    options: { serialize: false, canvasOnly: true },
    computeSize(width) {
      return [width ?? node.size?.[0] ?? 240, PLOT_HEIGHT];
    },
    draw: guard("readout plot", function (ctx, n, width, y, _H, lowQuality) {
      drawReadout(ctx, n, width, y, lowQuality);
    }, "the readout plot"),
  };
  node.addCustomWidget(widget);
  return widget;
}

function onReadout(app, detail) {
  if (!detail || detail.node === undefined) return;
  const graph = app?.graph;
  const node = graph?.getNodeById?.(detail.node) ?? graph?.getNodeById?.(Number(detail.node));
  if (!node || nodeClass(node) !== "GAGModelPatch") return;
  node.gagReadout = detail;  // read by tests/comfy/test_readout_server.py; not serialized
  if (typeof node.addCustomWidget !== "function") return;
  addPlot(node);
  try {
    // Grow (never shrink) to fit the plot and the progress text the front end added above it.
    const size = typeof node.computeSize === "function" ? node.computeSize() : null;
    if (size && node.size && typeof node.setSize === "function") {
      const width = Math.max(node.size[0], MIN_WIDTH);
      // The progress text box takes the height left over; its minimum shows about one line.
      const lines = String(node.gagReadout.text ?? "").split("\n").length;
      const height = Math.max(node.size[1], size[1] + TEXT_LINE * Math.max(0, lines - 1));
      if (width !== node.size[0] || height !== node.size[1]) node.setSize([width, height]);
    }
  } catch (_) { /* size is cosmetic */ }
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
