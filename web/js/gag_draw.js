// Canvas drawing shared by the GAG previews (gag_schedule_preview.js, gag_layer_map.js) and the
// readout plot (gag_readout.js): one palette, the panel they draw on, text, lines and curves,
// and the canvas-only widget that holds a drawing.
// Pure module: loading it registers nothing.

import { guard } from "./gag_common.js";

export const COLORS = Object.freeze({
  panel: "rgba(0, 0, 0, 0.28)",
  grid: "rgba(255, 255, 255, 0.10)",
  text: "#c8c8c8",
  dim: "#8a8a8a",
  accent: "#4aa3ff",
  accentFill: "rgba(74, 163, 255, 0.28)",
  accentInk: "#0d1a26",                    // text on an accent fill
  chip: "rgba(255, 255, 255, 0.06)",
  spread: "rgba(74, 163, 255, 0.22)",
  window: "rgba(74, 163, 255, 0.08)",
  good: "rgba(90, 200, 120, 0.22)",
  off: "rgba(160, 160, 160, 0.16)",
  offHatch: "rgba(160, 160, 160, 0.35)",
  layerOff: "#3a3d42",
  layerNone: "rgba(255, 255, 255, 0.12)",
  error: "#ff6b6b",
  warning: "#f0b44c",
});

export const FONT = "10px sans-serif";
export const MARGIN = 10;  // px between the node's edge and a panel

export function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  if (typeof ctx.roundRect === "function") ctx.roundRect(x, y, w, h, r);
  else ctx.rect(x, y, w, h);
}

// The dark rounded panel every drawing sits on; leaves the font and baseline set for labels.
export function panel(ctx, x, y, w, h) {
  roundRect(ctx, x, y, w, h, 4);
  ctx.fillStyle = COLORS.panel;
  ctx.fill();
  ctx.font = FONT;
  ctx.textBaseline = "middle";
}

// The panel's box inside a widget of this width whose top is at y (the same for every drawing).
export function panelBox(width, y, height, minWidth = 40) {
  return { x: MARGIN, y: y + 2, w: Math.max(minWidth, width - 2 * MARGIN), h: height - 6 };
}

export function label(ctx, text, x, y, { color = COLORS.text, align = "left" } = {}) {
  ctx.fillStyle = color;
  ctx.textAlign = align;
  ctx.fillText(text, x, y);
}

// A context for measuring text outside a draw call (a widget's size is asked before it draws).
let measureCtx = null;
export function measurer() {
  if (!measureCtx) {
    try { measureCtx = document.createElement("canvas").getContext("2d"); } catch (_) { measureCtx = null; }
  }
  if (measureCtx) measureCtx.font = FONT;
  return measureCtx;
}

export function textWidth(ctx, text) {
  return ctx ? ctx.measureText(text).width : text.length * 6;
}

// Lines of at most maxWidth px (by ctx's font; about 6 px a character without a context).
export function wrapText(ctx, text, maxWidth) {
  const lines = [];
  for (const paragraph of String(text).split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const candidate = line ? `${line} ${word}` : word;
      if (!line || textWidth(ctx, candidate) <= maxWidth) {
        line = candidate;
      } else {
        lines.push(line);
        line = word;
      }
    }
    lines.push(line);
  }
  return lines;
}

// Horizontal lines across [left, right] at each y.
export function hlines(ctx, left, right, ys, { color = COLORS.grid, width = 1, dash = null } = {}) {
  ctx.save();
  if (dash) ctx.setLineDash?.(dash);
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.beginPath();
  for (const y of ys) { ctx.moveTo(left, y); ctx.lineTo(right, y); }
  ctx.stroke();
  ctx.restore();
}

// Vertical lines across [top, bottom] at each x.
export function vlines(ctx, top, bottom, xs, { color = COLORS.grid, width = 1 } = {}) {
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.beginPath();
  for (const x of xs) { ctx.moveTo(x, top); ctx.lineTo(x, bottom); }
  ctx.stroke();
  ctx.restore();
}

// Starts a path through the points ([x, y] pairs); the caller strokes or fills it.
export function pathThrough(ctx, points) {
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
}

export function curve(ctx, points, { color = COLORS.accent, width = 2 } = {}) {
  pathThrough(ctx, points);
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.stroke();
}

export function dots(ctx, points, { color = COLORS.accent, radius = 2.5 } = {}) {
  ctx.fillStyle = color;
  for (const [x, y] of points) {
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    ctx.fill();
  }
}

// A grey hatched box: "off", drawn so that it never looks like a value of 0.
export function hatch(ctx, x, y, w, h) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(x, y, w, h);
  ctx.clip();
  ctx.fillStyle = COLORS.off;
  ctx.fillRect(x, y, w, h);
  ctx.strokeStyle = COLORS.offHatch;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let d = -h; d < w; d += 7) {
    ctx.moveTo(x + d, y + h);
    ctx.lineTo(x + d + h, y);
  }
  ctx.stroke();
  ctx.restore();
}

// Add a widget that only draws: never serialized, never sent with a prompt, and canvasOnly, so
// a Vue-rendered node skips it instead of guessing. height: a number, or (width) => number;
// or size: (width) => [width, height] where the widget decides its width too.
// draw(ctx, node, width, y, lowQuality) runs guarded (a throw loses the drawing, not the node);
// `this` is the widget. mouse, when given, gets LiteGraph's pointer events (guarded too).
export function addCanvasWidget(node, { name, type, height, size, draw, mouse, what = "the preview" }) {
  const widget = {
    name,
    type,
    value: "",
    serialize: false,
    options: { serialize: false, canvasOnly: true },
    computeSize(width) {
      if (size) return size(width);
      const w = width ?? node.size?.[0] ?? 240;
      return [w, typeof height === "function" ? height(w) : height];
    },
    draw: guard(name, function (ctx, n, width, y, _H, lowQuality) {
      draw.call(this, ctx, n, width, y, lowQuality);
    }, what),
  };
  if (mouse) widget.mouse = guard(`${name} click`, mouse, what);
  node.addCustomWidget(widget);
  return widget;
}
