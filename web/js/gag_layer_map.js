// The GAG Layers preview: a layer map of one layout (a released full-size model of a family,
// gag_layouts.js) with the selected attention layers in blue, and the selection's error (red:
// the server would refuse it; orange: this layout lacks the layers) before you queue.
//
// The node has no model input, so the layout is picked with the chips at the map's top, or
// guessed ("auto") from the file name of the loader upstream of GAG Model Patch. A canvas widget
// that draws from the node's current widget values on every repaint; it never serializes (the
// picked layout is a node property, kept in saved workflows only). Selections are parsed and
// resolved by gag_layer_spec.js (a port of gag_core/layer_spec.py). Registered by
// gag_previews.js.

import { parseLayerSpec, resolveLayers, describeLayers, refKey } from "./gag_layer_spec.js";
import { LAYOUTS, DEFAULT_LAYOUT, layoutById, layoutLayers, layoutFromFileName } from "./gag_layouts.js";
import {
  growToFit, markDirty, nodeClass, upstreamOf, downstreamNodes, warn, widgetByName, widgetValue,
} from "./gag_common.js";
import {
  COLORS, FONT, MARGIN, addCanvasWidget, label, measurer, panel, roundRect, textWidth, wrapText,
} from "./gag_draw.js";

const LAYOUT_PROPERTY = "gag_layout";         // node.properties key: "auto" or a layout id
const OLD_LAYOUT_PROPERTY = "gag_family";     // its name in workflows saved before 2026-12
const CHIP_H = 15, CHIP_GAP = 4, PAD = 8, LABEL_W = 44;
const UNAVAILABLE_HEIGHT = 28;

// Follow GAG Layers → GAG Model Patch → its model input upstream (through LoRA loaders,
// sampling patches, …) to the node that has no model input: the loader. Its file-name widgets
// hint at the layout.
function inferLayout(layersNode) {
  for (const patch of downstreamNodes(layersNode)) {
    if (nodeClass(patch) !== "GAGModelPatch") continue;
    let current = upstreamOf(patch, "model");
    const seen = new Set();
    while (current && !seen.has(current.id) && seen.size < 32) {
      seen.add(current.id);
      const next = upstreamOf(current, "model");
      if (!next) {
        for (const w of current.widgets ?? []) {
          const id = layoutFromFileName(typeof w?.value === "string" ? w.value : "");
          if (id) return { id, hint: w.value };
        }
        return null;
      }
      current = next;
    }
  }
  return null;
}

function pickedLayout(node) {
  const properties = node.properties ?? {};
  return properties[LAYOUT_PROPERTY] ?? properties[OLD_LAYOUT_PROPERTY] ?? "auto";
}

function chosenLayout(node) {
  const property = pickedLayout(node);
  if (property !== "auto" && layoutById(property)) {
    return { layout: layoutById(property), source: "chosen", hint: null, property };
  }
  const inferred = inferLayout(node);
  if (inferred && layoutById(inferred.id)) {
    return { layout: layoutById(inferred.id), source: "auto-file", hint: inferred.hint, property: "auto" };
  }
  return { layout: layoutById(DEFAULT_LAYOUT) ?? LAYOUTS[0], source: "auto-default", hint: null,
           property: "auto" };
}

function layerState(node) {
  const preset = String(widgetValue(node, "preset", "paper"));
  const custom = String(widgetValue(node, "custom", ""));
  const mode = String(widgetValue(node, "mode", "auto"));
  const choice = chosenLayout(node);
  const layout = choice.layout;
  const key = JSON.stringify([preset, custom, mode, layout.id, choice.source, choice.hint]);
  if (node.gagPreview && node.gagPreview.key === key) return node.gagPreview;

  const layers = layoutLayers(layout);
  const state = {
    key, preset, custom, mode, layout: layout.id, layoutLabel: layout.label,
    family: layout.family, familyName: layout.display_name,
    layoutSource: choice.source, layoutHint: choice.hint, layoutProperty: choice.property,
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
  } else if (layout.presets && Object.prototype.hasOwnProperty.call(layout.presets, preset)) {
    state.text = layout.presets[preset];
    patterns = parseLayerSpec(state.text);
  } else if (layout.presets) {
    state.error = `layer preset '${preset}' does not apply to ${layout.display_name} models; its ` +
      `presets are ${Object.keys(layout.presets).join(", ")}, or 'custom'`;
    state.errorKind = "preset";
  } else {
    state.error = `no presets known for ${layout.label} in this front end; use 'custom'`;
    state.errorKind = "preset";
  }
  if (patterns) {
    try {
      const chosen = resolveLayers(patterns, layers, `${layout.label} (full-size layout)`);
      state.selected = chosen.map(refKey);
      state.summary = `${chosen.length} of ${layers.length} attention layers: ${describeLayers(chosen)}`;
    } catch (e) {
      state.error = e.message;
      state.errorKind = "layers";  // depends on the model: a warning for this layout
    }
  }
  if (!state.error && mode !== "auto" && !layout.modes.includes(mode)) {
    state.error = `mode '${mode}' does not apply to ${layout.display_name} models; valid modes: auto, ` +
      layout.modes.join(", ");
    state.errorKind = "mode";
  }
  state.selectedSet = new Set(state.selected);
  node.gagPreview = state;  // read by tests/comfy/test_frontend.py; not serialized
  return state;
}

// Geometry of the map for a node width: used by the size (height) and the drawing (positions),
// so the widget always reserves exactly the room it paints.
function mapGeometry(state, width, ctx) {
  const m = ctx ?? measurer();
  if (m) m.font = FONT;
  const x0 = MARGIN, w0 = Math.max(60, width - 2 * MARGIN);
  const inner = w0 - 2 * PAD;
  let y = PAD + 12;  // title line
  const chips = [];
  let cx = 0;
  for (const id of ["auto", ...LAYOUTS.map((layout) => layout.id)]) {
    const text = id === "auto" ? "auto" : layoutById(id).label;
    const w = textWidth(m, text) + 12;
    if (cx > 0 && cx + w > inner) { cx = 0; y += CHIP_H + CHIP_GAP; }
    chips.push({ id, label: text, x: x0 + PAD + cx, y, w, h: CHIP_H });
    cx += w + CHIP_GAP;
  }
  y += CHIP_H + 8;

  const layout = layoutById(state.layout);
  const rows = [];
  const cellsWidth = inner - LABEL_W;
  // One cell width per layout, so a one-block group (the UNet middle) is one block wide.
  const widest = Math.max(...layout.groups.map((g) => g.blocks));
  for (const group of layout.groups) {
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

function drawUnavailable(ctx, width, y) {
  ctx.save();
  ctx.translate(0, y);
  panel(ctx, MARGIN, 2, Math.max(60, width - 2 * MARGIN), UNAVAILABLE_HEIGHT - 4);
  label(ctx, "layer map unavailable: the server sent no family table", MARGIN + PAD,
        UNAVAILABLE_HEIGHT / 2, { color: COLORS.dim });
  ctx.restore();
}

function title(state) {
  if (state.layoutSource === "auto-file") {
    const file = String(state.layoutHint).split(/[\\/]/).pop();
    return `Layer map: ${state.layoutLabel}, guessed from ${file.length > 34 ? file.slice(0, 33) + "…" : file}`;
  }
  if (state.layoutSource === "auto-default") return `Layer map: ${state.layoutLabel} (default; pick a model)`;
  return `Layer map: ${state.layoutLabel} (full-size layout)`;
}

function drawChips(ctx, chips, state, lowQuality) {
  for (const chip of chips) {
    const active = chip.id === state.layoutProperty;
    const shown = chip.id === state.layout;
    roundRect(ctx, chip.x, chip.y, chip.w, chip.h, 7);
    ctx.fillStyle = active ? COLORS.accent : COLORS.chip;
    ctx.fill();
    if (shown && !active) {
      ctx.strokeStyle = COLORS.accent;
      ctx.lineWidth = 1;
      ctx.stroke();
    }
    if (!lowQuality) {
      label(ctx, chip.label, chip.x + chip.w / 2, chip.y + chip.h / 2 + 0.5,
            { color: active ? COLORS.accentInk : COLORS.text, align: "center" });
    }
  }
}

function drawBlocks(ctx, geometry, state, lowQuality) {
  const selected = state.selectedSet ?? new Set();
  const dimAll = state.errorKind === "syntax" || state.errorKind === "preset";
  for (const row of geometry.rows) {
    if (!lowQuality && row.label) {
      label(ctx, row.label, geometry.x0 + PAD, row.y + row.h / 2, { color: COLORS.dim });
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
        label(ctx, String(block), bx + bw / 2, row.y + row.h + 6, { color: COLORS.dim, align: "center" });
      }
    }
  }
}

function drawLayerMap(ctx, node, width, y, lowQuality, widget) {
  if (!LAYOUTS.length) {
    drawUnavailable(ctx, width, y);
    return;
  }
  const state = layerState(node);
  const geometry = mapGeometry(state, width, ctx);
  widget.lastGeometry = { geometry, y };  // where the chips are, for clicks (and tests)
  ctx.save();
  ctx.translate(0, y);
  panel(ctx, geometry.x0, 2, geometry.w0, geometry.height - 4);
  if (!lowQuality) label(ctx, title(state), geometry.x0 + PAD, PAD + 4);
  drawChips(ctx, geometry.chips, state, lowQuality);
  drawBlocks(ctx, geometry, state, lowQuality);
  if (!lowQuality) {
    const color = state.errorKind === "syntax" || state.errorKind === "preset" || state.errorKind === "mode"
      ? COLORS.error : state.errorKind ? COLORS.warning : COLORS.text;
    geometry.lines.forEach((line, i) => label(ctx, line, geometry.x0 + PAD, geometry.textY + 6 + i * 12, { color }));
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

function pickLayout(node, id) {
  node.properties = node.properties ?? {};
  node.properties[LAYOUT_PROPERTY] = id;
  delete node.properties[OLD_LAYOUT_PROPERTY];
  node.gagPreview = null;
  growToFit(node);  // a layout with more rows needs a taller node
  markDirty(node);
}

export function addLayerMap(node) {
  const widget = addCanvasWidget(node, {
    name: "gag_layer_map",
    type: "gag_preview",
    size(width) {
      // LiteGraph asks with its minimum width; the map is drawn at the node's real width.
      const w = Math.max(width ?? 0, node.size?.[0] ?? 0) || 300;
      if (!LAYOUTS.length) return [w, UNAVAILABLE_HEIGHT];
      try {
        return [w, mapGeometry(layerState(node), w).height];
      } catch (e) {
        warn("layer map size failed:", e);
        return [w, 40];
      }
    },
    draw(ctx, n, width, y, lowQuality) {
      drawLayerMap(ctx, n, width, y, lowQuality, this);
    },
    // LiteGraph hands plain-object widgets the pointer events (node-relative position).
    mouse(event, pos, n) {
      const type = event?.type;
      if (type !== "pointerdown" && type !== "mousedown") return false;
      const last = this.lastGeometry;
      if (!last) return false;
      const [x, yy] = pos;
      for (const chip of last.geometry.chips) {
        const cy = last.y + chip.y;
        if (x >= chip.x && x <= chip.x + chip.w && yy >= cy && yy <= cy + chip.h) {
          pickLayout(n, chip.id);
          return true;
        }
      }
      return false;
    },
  });
  widget.lastGeometry = null;

  // Typing in the text box does not repaint the canvas by itself.
  const text = widgetByName(node, "custom");
  const el = text?.inputEl ?? text?.element;
  if (el && typeof el.addEventListener === "function") {
    el.addEventListener("input", () => markDirty(node));
  }
  return widget;
}
