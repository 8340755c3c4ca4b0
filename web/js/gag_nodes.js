// Live previews on the GAG nodes: the λ schedule on GAG Schedule, the layer map on GAG Layers.
//
// Both are canvas widgets that draw from the node's current widget values on every repaint, so
// they follow every change (widget drags, combo picks, typing, workflow loads, undo) without
// hooking each widget. They never serialize: saved workflows and queued prompts are the same
// with or without this file.
//
// Robustness: every front-end API used here is feature-checked and every hook is wrapped, so a
// front end that lacks one (older, newer, Vue-rendered nodes) loses the preview, never the node.
// Nothing runs for graphs without GAG nodes.

import { parseLayerSpec, resolveLayers, describeLayers, refKey } from "./gag_layer_spec.js";
import { sampleSchedule } from "./gag_schedule.js";
import { FAMILIES, DEFAULT_FAMILY, familyById, familyLayers, familyFromFileName } from "./gag_families.js";
import { guard, markDirty, nodeClass, registerOnce, warn } from "./gag_common.js";

const EXTENSION_NAME = "gag.comfyui.previews";
const FAMILY_PROPERTY = "gag_family";  // node.properties key: "auto" or a family id
const LOADED_FLAG = "__gagPreviewsLoaded";

const COLORS = {
  panel: "rgba(0, 0, 0, 0.28)",
  grid: "rgba(255, 255, 255, 0.10)",
  text: "#c8c8c8",
  dim: "#8a8a8a",
  accent: "#4aa3ff",
  accentFill: "rgba(74, 163, 255, 0.28)",
  window: "rgba(74, 163, 255, 0.08)",
  off: "rgba(160, 160, 160, 0.16)",
  offHatch: "rgba(160, 160, 160, 0.35)",
  layerOff: "#3a3d42",
  layerNone: "rgba(255, 255, 255, 0.12)",
  error: "#ff6b6b",
  warning: "#f0b44c",
};

function widgetByName(node, name) {
  return Array.isArray(node?.widgets) ? node.widgets.find((w) => w && w.name === name) : undefined;
}

function widgetValue(node, name, fallback) {
  const w = widgetByName(node, name);
  return w === undefined || w.value === undefined ? fallback : w.value;
}

// --- graph walking (LiteGraph's link storage changed from object to Map over versions) -----

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

function getNode(graph, id) {
  try {
    return typeof graph?.getNodeById === "function" ? graph.getNodeById(id) : null;
  } catch (_) {
    return null;
  }
}

function downstreamNodes(node) {
  const out = [];
  for (const output of node?.outputs ?? []) {
    for (const id of output?.links ?? []) {
      const link = getLink(node.graph, id);
      const target = link ? getNode(node.graph, link.target_id) : null;
      if (target) out.push(target);
    }
  }
  return out;
}

function upstreamOf(node, inputName) {
  const input = (node?.inputs ?? []).find((i) => i && i.name === inputName);
  const link = input ? getLink(node.graph, input.link) : null;
  return link ? getNode(node.graph, link.origin_id) : null;
}

// Follow GAG Layers → GAG Model Patch → its model input upstream (through LoRA loaders,
// sampling patches, …) to the node that has no model input: the loader. Its file-name widgets
// hint at the family.
function inferFamily(layersNode) {
  for (const patch of downstreamNodes(layersNode)) {
    if (nodeClass(patch) !== "GAGModelPatch") continue;
    let current = upstreamOf(patch, "model");
    const seen = new Set();
    while (current && !seen.has(current.id) && seen.size < 32) {
      seen.add(current.id);
      const next = upstreamOf(current, "model");
      if (!next) {
        for (const w of current.widgets ?? []) {
          const id = familyFromFileName(typeof w?.value === "string" ? w.value : "");
          if (id) return { id, hint: w.value };
        }
        return null;
      }
      current = next;
    }
  }
  return null;
}

// --- drawing helpers ----------------------------------------------------------------------

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  if (typeof ctx.roundRect === "function") ctx.roundRect(x, y, w, h, r);
  else ctx.rect(x, y, w, h);
}

let measureCtx = null;
function measurer() {
  if (!measureCtx) {
    try { measureCtx = document.createElement("canvas").getContext("2d"); } catch (_) { measureCtx = null; }
  }
  return measureCtx;
}

function wrapText(ctx, text, maxWidth) {
  const lines = [];
  for (const paragraph of String(text).split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const candidate = line ? `${line} ${word}` : word;
      if (!line || (ctx ? ctx.measureText(candidate).width : candidate.length * 6) <= maxWidth) {
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

function hatch(ctx, x, y, w, h) {
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

// --- GAG Schedule: λ multiplier over sampling progress ------------------------------------

const SCHEDULE_HEIGHT = 132;

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

function drawSchedule(ctx, node, width, y, height, lowQuality) {
  const state = scheduleState(node);
  node.gagPreview = state;  // read by tests/comfy/test_frontend.py; not serialized
  const x0 = 10, w0 = Math.max(40, width - 20), y0 = y + 2, h0 = height - 6;
  ctx.save();
  roundRect(ctx, x0, y0, w0, h0, 4);
  ctx.fillStyle = COLORS.panel;
  ctx.fill();
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "middle";

  const left = x0 + 26, right = x0 + w0 - 8, top = y0 + 18, bottom = y0 + h0 - 16;
  node.gagPreviewPlot = { left, right, top, bottom };  // node-local; for tests
  const px = (p) => left + p * (right - left);
  const py = (m) => bottom - m * (bottom - top);

  if (!lowQuality) {
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = "left";
    // λ comes from the GAG Model Patch this schedule feeds, when there is one.
    const title = state.scale === null ? "λ × ramp" : `λ = ${state.scale} × ramp`;
    ctx.fillText(title, x0 + 6, y0 + 9);
    state.titleWidth = ctx.measureText(title).width;
  }

  if (state.error) {
    ctx.fillStyle = COLORS.error;
    ctx.textAlign = "left";
    const lines = wrapText(ctx, state.error, w0 - 12);
    lines.slice(0, 6).forEach((line, i) => ctx.fillText(line, x0 + 6, top + 6 + i * 13));
    ctx.restore();
    return;
  }

  const { start, end, ramp } = state;
  // Off regions first: hatched, so "off" never looks like "multiplier 0".
  if (start > 0) hatch(ctx, px(0), top, px(start) - px(0), bottom - top);
  if (end < 1) hatch(ctx, px(end), top, px(1) - px(end), bottom - top);
  ctx.fillStyle = COLORS.window;
  ctx.fillRect(px(start), top, Math.max(1, px(end) - px(start)), bottom - top);

  ctx.strokeStyle = COLORS.grid;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const m of [0, 0.5, 1]) { ctx.moveTo(left, py(m)); ctx.lineTo(right, py(m)); }
  for (const p of [0, 0.25, 0.5, 0.75, 1]) { ctx.moveTo(px(p), top); ctx.lineTo(px(p), bottom); }
  ctx.stroke();

  // The curve, only inside the window; a zero-length window is a single spike.
  const inside = state.samples.filter(([, m]) => m !== null);
  ctx.beginPath();
  inside.forEach(([p, m], i) => (i ? ctx.lineTo(px(p), py(m)) : ctx.moveTo(px(p), py(m))));
  if (inside.length) {
    ctx.save();
    ctx.lineTo(px(inside[inside.length - 1][0]), py(0));
    ctx.lineTo(px(inside[0][0]), py(0));
    ctx.closePath();
    ctx.fillStyle = COLORS.accentFill;
    ctx.fill();
    ctx.restore();
    ctx.beginPath();
    inside.forEach(([p, m], i) => (i ? ctx.lineTo(px(p), py(m)) : ctx.moveTo(px(p), py(m))));
    if (inside.length === 1) ctx.lineTo(px(inside[0][0]), py(0));
    ctx.strokeStyle = COLORS.accent;
    ctx.lineWidth = 2;
    ctx.stroke();
  }

  if (!lowQuality) {
    ctx.fillStyle = COLORS.dim;
    ctx.textAlign = "right";
    ctx.fillText("×1", left - 4, py(1));
    ctx.fillText("×0", left - 4, py(0));
    ctx.textAlign = "center";
    for (const p of [0, 0.5, 1]) ctx.fillText(`${Math.round(p * 100)}%`, px(p), bottom + 8);
    ctx.fillStyle = COLORS.text;
    if (start > 0.06) ctx.fillText("off", (px(0) + px(start)) / 2, top + 8);
    if (end < 0.94) ctx.fillText("off", (px(end) + px(1)) / 2, top + 8);
    ctx.textAlign = "right";
    ctx.fillStyle = COLORS.dim;
    const range = `${Math.round(start * 1000) / 10}–${Math.round(end * 1000) / 10}%`;
    const room = w0 - 18 - (state.titleWidth ?? 0);
    const long = `on ${range}, ${ramp}`;
    ctx.fillText(ctx.measureText(long).width <= room ? long : `on ${range}`, x0 + w0 - 6, y0 + 9);
  }
  ctx.restore();
}

function addSchedulePreview(node) {
  const widget = {
    name: "gag_schedule_preview",
    type: "gag_preview",
    value: "",
    serialize: false,
    // Not sent to the server; canvasOnly: a Vue-rendered node skips it instead of guessing.
    options: { serialize: false, canvasOnly: true },
    computeSize(width) {
      return [width ?? node.size?.[0] ?? 240, SCHEDULE_HEIGHT];
    },
    draw: guard("schedule preview", function (ctx, n, width, y, _H, lowQuality) {
      drawSchedule(ctx, n, width, y, SCHEDULE_HEIGHT, lowQuality);
    }),
  };
  node.addCustomWidget(widget);
}

// --- GAG Layers: the chosen family's blocks, selected ones highlighted --------------------

function chosenFamily(node) {
  const property = node.properties?.[FAMILY_PROPERTY] ?? "auto";
  if (property !== "auto" && familyById(property)) {
    return { family: familyById(property), source: "chosen", hint: null, property };
  }
  const inferred = inferFamily(node);
  if (inferred && familyById(inferred.id)) {
    return { family: familyById(inferred.id), source: "auto-file", hint: inferred.hint, property: "auto" };
  }
  return { family: familyById(DEFAULT_FAMILY), source: "auto-default", hint: null, property: "auto" };
}

function layerState(node) {
  const preset = String(widgetValue(node, "preset", "paper"));
  const custom = String(widgetValue(node, "custom", ""));
  const mode = String(widgetValue(node, "mode", "auto"));
  const choice = chosenFamily(node);
  const family = choice.family;
  const key = JSON.stringify([preset, custom, mode, family.id, choice.source, choice.hint]);
  if (node.gagPreview && node.gagPreview.key === key) return node.gagPreview;

  const layers = familyLayers(family);
  const state = {
    key, preset, custom, mode, family: family.id, familyLabel: family.label,
    familySource: choice.source, familyHint: choice.hint, familyProperty: choice.property,
    text: null, selected: [], total: layers.length, summary: "", error: null, errorKind: null,
  };
  let patterns = null;
  if (preset === "custom") {
    state.text = custom;
    try {
      patterns = parseLayerSpec(custom);
    } catch (e) {
      state.error = e.message;
      state.errorKind = "syntax";  // the server refuses this text whatever the model
    }
  } else if (family.presets && Object.prototype.hasOwnProperty.call(family.presets, preset)) {
    state.text = family.presets[preset];
    patterns = parseLayerSpec(state.text);
  } else if (family.presets) {
    state.error = `layer preset '${preset}' does not apply to ${family.display_name} models; its ` +
      `presets are ${Object.keys(family.presets).join(", ")}, or 'custom'`;
    state.errorKind = "preset";
  } else {
    state.error = `no presets known for ${family.label} in this front end; use 'custom'`;
    state.errorKind = "preset";
  }
  if (patterns) {
    try {
      const chosen = resolveLayers(patterns, layers, `${family.label} (full-size layout)`);
      state.selected = chosen.map(refKey);
      state.summary = `${chosen.length} of ${layers.length} attention layers: ${describeLayers(chosen)}`;
    } catch (e) {
      state.error = e.message;
      state.errorKind = "layers";  // depends on the model family: a warning for this layout
    }
  }
  if (!state.error && mode !== "auto" && !family.modes.includes(mode)) {
    state.error = `mode '${mode}' does not apply to ${family.display_name} models; valid modes: auto, ` +
      family.modes.join(", ");
    state.errorKind = "mode";
  }
  state.selectedSet = new Set(state.selected);
  node.gagPreview = state;  // read by tests/comfy/test_frontend.py; not serialized
  return state;
}

const CHIP_H = 15, CHIP_GAP = 4, PAD = 8, LABEL_W = 44;

// Geometry of the map for a node width: used by computeSize (height) and draw (positions), so
// the widget always reserves exactly the room it paints.
function layerLayout(state, width, ctx) {
  const m = ctx ?? measurer();
  if (m) m.font = "10px sans-serif";
  const textWidth = (s) => (m ? m.measureText(s).width : s.length * 6);
  const x0 = 10, w0 = Math.max(60, width - 20);
  const inner = w0 - 2 * PAD;
  let y = PAD + 12;  // title line
  const chips = [];
  let cx = 0;
  for (const id of ["auto", ...FAMILIES.map((f) => f.id)]) {
    const label = id === "auto" ? "auto" : familyById(id).label;
    const w = textWidth(label) + 12;
    if (cx > 0 && cx + w > inner) { cx = 0; y += CHIP_H + CHIP_GAP; }
    chips.push({ id, label, x: x0 + PAD + cx, y, w, h: CHIP_H });
    cx += w + CHIP_GAP;
  }
  y += CHIP_H + 8;

  const family = familyById(state.family);
  const rows = [];
  const cellsWidth = inner - LABEL_W;
  // One cell width per family, so a one-block group (the UNet middle) is one block wide.
  const widest = Math.max(...family.groups.map((g) => g.blocks));
  for (const group of family.groups) {
    const isDiT = Object.values(group.attention).every((v) => v === null);
    const minCell = isDiT ? 7 : 12;
    const perRow = Math.max(1, Math.min(widest, Math.floor(cellsWidth / minCell)));
    const cell = cellsWidth / perRow;
    const rowH = isDiT ? 12 : 16;
    for (let first = 0; first < group.blocks; first += perRow) {
      const count = Math.min(perRow, group.blocks - first);
      rows.push({ group, first, count, cell, x: x0 + PAD + LABEL_W, y, h: rowH, label: first === 0 ? group.name : "" });
      y += rowH + (cell >= 14 ? 12 : 11);
    }
    y += 2;
  }
  const message = state.error ?? state.summary;
  const lines = message ? wrapText(m, message, inner) : [];
  const textY = y + 2;
  y += lines.length * 12 + PAD;
  return { x0, w0, chips, rows, lines, textY, height: y };
}

const UNAVAILABLE_HEIGHT = 28;

function drawUnavailable(ctx, width, y) {
  ctx.save();
  ctx.translate(0, y);
  roundRect(ctx, 10, 2, Math.max(60, width - 20), UNAVAILABLE_HEIGHT - 4, 4);
  ctx.fillStyle = COLORS.panel;
  ctx.fill();
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillStyle = COLORS.dim;
  ctx.fillText("layer map unavailable: the server sent no family table", 10 + PAD,
               UNAVAILABLE_HEIGHT / 2);
  ctx.restore();
}

function drawLayerMap(ctx, node, width, y, lowQuality, widget) {
  if (!FAMILIES.length) {
    drawUnavailable(ctx, width, y);
    return;
  }
  const state = layerState(node);
  const layout = layerLayout(state, width, ctx);
  widget.lastLayout = { layout, y };
  ctx.save();
  ctx.translate(0, y);
  roundRect(ctx, layout.x0, 2, layout.w0, layout.height - 4, 4);
  ctx.fillStyle = COLORS.panel;
  ctx.fill();
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "middle";

  if (!lowQuality) {
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = "left";
    let title = `Layer map: ${state.familyLabel} (full-size layout)`;
    if (state.familySource === "auto-file") {
      const file = String(state.familyHint).split(/[\\/]/).pop();
      title = `Layer map: ${state.familyLabel}, guessed from ${file.length > 34 ? file.slice(0, 33) + "…" : file}`;
    }
    if (state.familySource === "auto-default") title = `Layer map: ${state.familyLabel} (default; pick a family)`;
    ctx.fillText(title, layout.x0 + PAD, PAD + 4);
  }

  for (const chip of layout.chips) {
    const active = chip.id === state.familyProperty;
    const shown = chip.id === state.family;
    roundRect(ctx, chip.x, chip.y, chip.w, chip.h, 7);
    ctx.fillStyle = active ? COLORS.accent : "rgba(255,255,255,0.06)";
    ctx.fill();
    if (shown && !active) {
      ctx.strokeStyle = COLORS.accent;
      ctx.lineWidth = 1;
      ctx.stroke();
    }
    if (!lowQuality) {
      ctx.fillStyle = active ? "#0d1a26" : COLORS.text;
      ctx.textAlign = "center";
      ctx.fillText(chip.label, chip.x + chip.w / 2, chip.y + chip.h / 2 + 0.5);
    }
  }

  const selected = state.selectedSet ?? new Set();
  const dimAll = state.errorKind === "syntax" || state.errorKind === "preset";
  for (const row of layout.rows) {
    if (!lowQuality && row.label) {
      ctx.fillStyle = COLORS.dim;
      ctx.textAlign = "left";
      ctx.fillText(row.label, layout.x0 + PAD, row.y + row.h / 2);
    }
    for (let i = 0; i < row.count; i++) {
      const block = row.first + i;
      const bx = row.x + i * row.cell, bw = Math.max(1, row.cell - 2);
      const has = Object.prototype.hasOwnProperty.call(row.group.attention, block);
      if (!has) {
        ctx.strokeStyle = COLORS.layerNone;
        ctx.lineWidth = 1;
        ctx.strokeRect(bx + 0.5, row.y + 0.5, bw - 1, row.h - 1);
      } else {
        const subs = row.group.attention[block];
        const n = subs === null ? 1 : subs;
        for (let s = 0; s < n; s++) {
          const key = refKey({ group: row.group.name, block, sub: subs === null ? null : s });
          const on = !dimAll && selected.has(key);
          const sx = bx + (s * bw) / n, sw = Math.max(0.6, bw / n - (n > 1 ? 0.6 : 0));
          ctx.fillStyle = on ? COLORS.accent : COLORS.layerOff;
          ctx.fillRect(sx, row.y, sw, row.h);
        }
      }
      if (!lowQuality && (row.cell >= 14 || block % 5 === 0 || i === row.count - 1)) {
        ctx.fillStyle = COLORS.dim;
        ctx.textAlign = "center";
        ctx.fillText(String(block), bx + bw / 2, row.y + row.h + 6);
      }
    }
  }

  if (!lowQuality) {
    ctx.textAlign = "left";
    ctx.fillStyle = state.errorKind === "syntax" || state.errorKind === "preset" || state.errorKind === "mode"
      ? COLORS.error : state.errorKind ? COLORS.warning : COLORS.text;
    layout.lines.forEach((line, i) => ctx.fillText(line, layout.x0 + PAD, layout.textY + 6 + i * 12));
  }
  ctx.restore();

  styleTextBox(node, state);
}

// The text box shows a syntax error where the user is typing, and reads as unused while a
// preset is chosen. Only what this file set is ever reset.
function styleTextBox(node, state) {
  const text = widgetByName(node, "custom");
  const el = text?.inputEl ?? text?.element;
  if (!el || !el.style) return;
  const bad = state.errorKind === "syntax";
  const unused = state.preset !== "custom";
  const wanted = `${bad}|${unused}|${bad ? state.error : ""}`;
  if (el.dataset?.gagStyle === wanted) return;
  el.style.outline = bad ? `2px solid ${COLORS.error}` : "";
  el.style.opacity = unused ? "0.45" : "";
  el.title = bad ? state.error : unused ? "Used only when preset is 'custom'" : "";
  if (el.dataset) el.dataset.gagStyle = wanted;
}

function addLayerMap(node) {
  const widget = {
    name: "gag_layer_map",
    type: "gag_preview",
    value: "",
    serialize: false,
    // Not sent to the server; canvasOnly: a Vue-rendered node skips it instead of guessing.
    options: { serialize: false, canvasOnly: true },
    lastLayout: null,
    computeSize(width) {
      // LiteGraph asks with its minimum width; the map is drawn at the node's real width.
      const w = Math.max(width ?? 0, node.size?.[0] ?? 0) || 300;
      if (!FAMILIES.length) return [w, UNAVAILABLE_HEIGHT];
      try {
        return [w, layerLayout(layerState(node), w).height];
      } catch (e) {
        warn("layer map size failed:", e);
        return [w, 40];
      }
    },
    draw: guard("layer map", function (ctx, n, width, y, _H, lowQuality) {
      drawLayerMap(ctx, n, width, y, lowQuality, this);
    }),
    // LiteGraph hands plain-object widgets the pointer events (node-relative position).
    mouse: guard("layer map click", function (event, pos, n) {
      const type = event?.type;
      if (type !== "pointerdown" && type !== "mousedown") return false;
      const last = this.lastLayout;
      if (!last) return false;
      const [x, yy] = pos;
      for (const chip of last.layout.chips) {
        const cy = last.y + chip.y;
        if (x >= chip.x && x <= chip.x + chip.w && yy >= cy && yy <= cy + chip.h) {
          setFamily(n, chip.id);
          return true;
        }
      }
      return false;
    }),
  };
  node.addCustomWidget(widget);

  // Typing in the text box does not repaint the canvas by itself.
  const text = widgetByName(node, "custom");
  const el = text?.inputEl ?? text?.element;
  if (el && typeof el.addEventListener === "function") {
    el.addEventListener("input", () => markDirty(node));
  }
}

function setFamily(node, id) {
  node.properties = node.properties ?? {};
  node.properties[FAMILY_PROPERTY] = id;
  node.gagPreview = null;
  try {
    // Re-fit: a family with more rows needs a taller node.
    const size = typeof node.computeSize === "function" ? node.computeSize() : null;
    if (size && node.size && size[1] > node.size[1] && typeof node.setSize === "function") {
      node.setSize([node.size[0], size[1]]);
    }
  } catch (_) { /* size is cosmetic */ }
  markDirty(node);
}

// --- registration ---------------------------------------------------------------------------

const SETUP = {
  GAGSchedule: addSchedulePreview,
  GAGLayers: addLayerMap,
};

function onNodeCreated(node) {
  const setup = SETUP[nodeClass(node)];
  if (!setup) return;
  if (typeof node.addCustomWidget !== "function") {
    warn("this front end has no addCustomWidget; previews are off");
    return;
  }
  if ((node.widgets ?? []).some((w) => w && w.type === "gag_preview")) return;
  setup(node);
  try {
    const size = typeof node.computeSize === "function" ? node.computeSize() : null;
    if (size && node.size && size[1] > node.size[1] && typeof node.setSize === "function") {
      node.setSize([Math.max(node.size[0], size[0]), size[1]]);
    }
  } catch (_) { /* cosmetic */ }
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
