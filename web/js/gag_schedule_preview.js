// The GAG Schedule preview: λ's multiplier over sampling progress (0–100 %), blue where GAG acts,
// hatched grey where it is off and the layers run plain attention.
//
// A canvas widget that draws from the node's current widget values on every repaint, so it
// follows every change without hooking each widget; it never serializes. The schedule math is
// gag_schedule.js (a port of gag_core/schedule.py). Registered by gag_previews.js.

import { sampleSchedule } from "./gag_schedule.js";
import { downstreamNodes, nodeClass, widgetValue } from "./gag_common.js";
import {
  COLORS, addCanvasWidget, curve, hatch, hlines, label, panel, panelBox, pathThrough, vlines,
  wrapText,
} from "./gag_draw.js";

const HEIGHT = 132;

function scheduleState(node) {
  const start = Number(widgetValue(node, "start_percent", 0));
  const end = Number(widgetValue(node, "end_percent", 1));
  const ramp = String(widgetValue(node, "ramp", "constant"));
  let scale = null;
  for (const target of downstreamNodes(node)) {
    if (nodeClass(target) === "GAGModelPatch") {
      const v = Number(widgetValue(target, "scale", NaN));
      if (Number.isFinite(v)) scale = v;
    }
  }
  const state = { start, end, ramp, scale, samples: null, error: null };
  try {
    state.samples = sampleSchedule(start, end, ramp);
  } catch (e) {
    state.error = e.message;
  }
  return state;
}

function drawSchedule(ctx, node, width, y, lowQuality) {
  const state = scheduleState(node);
  node.gagPreview = state;  // read by tests/comfy/test_frontend.py; not serialized
  const box = panelBox(width, y, HEIGHT);
  ctx.save();
  panel(ctx, box.x, box.y, box.w, box.h);

  const left = box.x + 26, right = box.x + box.w - 8, top = box.y + 18, bottom = box.y + box.h - 16;
  node.gagPreviewPlot = { left, right, top, bottom };  // node-local; for tests
  const px = (p) => left + p * (right - left);
  const py = (m) => bottom - m * (bottom - top);

  if (!lowQuality) {
    // λ comes from the GAG Model Patch this schedule feeds, when there is one.
    const title = state.scale === null ? "λ × ramp" : `λ = ${state.scale} × ramp`;
    label(ctx, title, box.x + 6, box.y + 9);
    state.titleWidth = ctx.measureText(title).width;
  }

  if (state.error) {
    const lines = wrapText(ctx, state.error, box.w - 12);
    lines.slice(0, 6).forEach((line, i) => label(ctx, line, box.x + 6, top + 6 + i * 13,
                                                 { color: COLORS.error }));
    ctx.restore();
    return;
  }

  const { start, end, ramp } = state;
  // Off regions first: hatched, so "off" never looks like "multiplier 0".
  if (start > 0) hatch(ctx, px(0), top, px(start) - px(0), bottom - top);
  if (end < 1) hatch(ctx, px(end), top, px(1) - px(end), bottom - top);
  ctx.fillStyle = COLORS.window;
  ctx.fillRect(px(start), top, Math.max(1, px(end) - px(start)), bottom - top);

  hlines(ctx, left, right, [0, 0.5, 1].map(py));
  vlines(ctx, top, bottom, [0, 0.25, 0.5, 0.75, 1].map(px));

  // The curve, only inside the window; a zero-length window is a single spike.
  const inside = state.samples.filter(([, m]) => m !== null).map(([p, m]) => [px(p), py(m)]);
  if (inside.length) {
    const [firstX] = inside[0], [lastX] = inside[inside.length - 1];
    pathThrough(ctx, [...inside, [lastX, py(0)], [firstX, py(0)]]);
    ctx.closePath();
    ctx.fillStyle = COLORS.accentFill;
    ctx.fill();
    curve(ctx, inside.length === 1 ? [...inside, [firstX, py(0)]] : inside);
  }

  if (!lowQuality) {
    label(ctx, "×1", left - 4, py(1), { color: COLORS.dim, align: "right" });
    label(ctx, "×0", left - 4, py(0), { color: COLORS.dim, align: "right" });
    for (const p of [0, 0.5, 1]) {
      label(ctx, `${Math.round(p * 100)}%`, px(p), bottom + 8, { color: COLORS.dim, align: "center" });
    }
    if (start > 0.06) label(ctx, "off", (px(0) + px(start)) / 2, top + 8, { align: "center" });
    if (end < 0.94) label(ctx, "off", (px(end) + px(1)) / 2, top + 8, { align: "center" });
    const range = `${Math.round(start * 1000) / 10}–${Math.round(end * 1000) / 10}%`;
    const room = box.w - 18 - (state.titleWidth ?? 0);
    const long = `on ${range}, ${ramp}`;
    label(ctx, ctx.measureText(long).width <= room ? long : `on ${range}`, box.x + box.w - 6,
          box.y + 9, { color: COLORS.dim, align: "right" });
  }
  ctx.restore();
}

export function addSchedulePreview(node) {
  return addCanvasWidget(node, {
    name: "gag_schedule_preview",
    type: "gag_preview",
    height: HEIGHT,
    draw(ctx, n, width, y, lowQuality) {
      drawSchedule(ctx, n, width, y, lowQuality);
    },
  });
}
