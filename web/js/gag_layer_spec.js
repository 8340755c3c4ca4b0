// The layer-selection grammar of gag_core/layer_spec.py, for the GAG Layers node's live map.
//
// This is a line-for-line port, not an approximation: the node must show exactly the error the
// server would raise, before the user queues anything. The grammar is ASCII-only and messages
// quote text plainly, so the two languages agree without emulating each other; the one
// difference left is that Python counts a text's length in code points. The shared test vectors
// in tests/core/layer_spec_cases.json are checked against the Python module and, under node, this
// file by tests/core/test_layer_spec_js_cases.py, and in a browser by tests/comfy/test_frontend.py.
//
// Pure module: no DOM, no ComfyUI imports (the front end loads every .js under web/ as an
// extension, so it must be harmless to import on its own).

export const GROUP_ALIASES = Object.freeze({
  down: "input", in: "input", up: "output", out: "output", mid: "middle",
});
export const MAX_LENGTH = 10000;
const MAX_DIGITS = 6;
const BLANKS = /^[ \t\r\f\v]+|[ \t\r\f\v]+$/g;
const NOT_ALLOWED = /[^A-Za-z0-9: \t\r\f\v-]/u;
const RANGE = /^([0-9]+)(?:-([0-9]+))?$/;
const ALLOWED = "a selection holds only ASCII letters, digits 0-9, '-', ':', spaces, tabs, " +
  "commas, semicolons and new lines";

export class LayerSpecError extends Error {
  constructor(message) {
    super(message);
    this.name = "LayerSpecError";
  }
}

function codePointLength(s) {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

// '.' for printable ASCII; 'ü' (U+00FC) otherwise, so invisible characters are named too.
function nameCharacter(ch) {
  if (ch >= "!" && ch <= "~") return `'${ch}'`;
  return `'${ch}' (U+${ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")})`;
}

function parseRange(token, item) {
  const m = RANGE.exec(token);
  if (!m) {
    throw new LayerSpecError(`layer selection: '${token}' in '${item}' is not a number or a ` +
                             "range like 4-8");
  }
  if (Math.max(m[1].length, (m[2] ?? "").length) > MAX_DIGITS) {
    throw new LayerSpecError(`layer selection: '${token}' in '${item}' has a number longer than ` +
                             `${MAX_DIGITS} digits; block and transformer numbers are far smaller`);
  }
  const lo = Number(m[1]);
  const hi = m[2] !== undefined ? Number(m[2]) : lo;
  if (hi < lo) {
    throw new LayerSpecError(`layer selection: range '${token}' in '${item}' runs backwards; ` +
                             `write ${hi}-${lo}`);
  }
  return [lo, hi];
}

function pattern(group, blocks, subs, text) {
  return { group, blocks, subs, text };
}

// parse_layer_spec: text → array of {group|null, blocks: [lo, hi]|null, subs: [lo, hi]|null,
// text}; throws LayerSpecError with the message Python raises.
export function parseLayerSpec(text, maxLength = MAX_LENGTH) {
  if (typeof text !== "string") {
    throw new LayerSpecError(`layer selection must be text; got ${text === null ? "NoneType" : typeof text}`);
  }
  const length = codePointLength(text);
  if (length > maxLength) {
    throw new LayerSpecError(`layer selection is ${length} characters long; at most ` +
                             `${maxLength} are accepted`);
  }
  const items = text.split(/[,;\n]/).map((item) => item.replace(BLANKS, ""))
    .filter((item) => item.length > 0);
  if (!items.length) {
    throw new LayerSpecError("layer selection is empty; write e.g. 'input 4-8, output 0-5', " +
                             "'double 0-18' or 'all'");
  }
  const patterns = [];
  for (const item of items) {
    const bad = NOT_ALLOWED.exec(item);
    if (bad) {
      throw new LayerSpecError(`layer selection: ${nameCharacter(bad[0])} in '${item}' is not ` +
                               `allowed; ${ALLOWED}`);
    }
    const words = item.toLowerCase().split(/[ \t\r\f\v]+/);
    const group = Object.prototype.hasOwnProperty.call(GROUP_ALIASES, words[0])
      ? GROUP_ALIASES[words[0]] : words[0];
    if (!/^[a-z]+$/.test(group)) {
      throw new LayerSpecError(`layer selection: item '${item}' must start with a block ` +
                               "group name such as input, middle, output, double, single, joint or all");
    }
    if (group === "all") {
      if (words.length > 1) {
        throw new LayerSpecError(`layer selection: 'all' takes no numbers; got '${item}'`);
      }
      patterns.push(pattern(null, null, null, item));
      continue;
    }
    if (words.length === 1) {
      patterns.push(pattern(group, null, null, item));
      continue;
    }
    for (const target of words.slice(1)) {
      const colon = target.indexOf(":");
      const blockPart = colon < 0 ? target : target.slice(0, colon);
      const subPart = colon < 0 ? "" : target.slice(colon + 1);
      const blocks = parseRange(blockPart, item);
      const subs = subPart ? parseRange(subPart, item) : null;
      patterns.push(pattern(group, blocks, subs, `${group} ${target}`));
    }
  }
  return patterns;
}

// A layer is {group, block, sub}; sub is the transformer index inside a UNet block, null for
// DiT blocks (one attention each).
export function layerRef(group, block, sub = null) {
  return { group, block, sub };
}

export function patternMatches(p, ref) {
  if (p.group !== null && ref.group !== p.group) return false;
  if (p.blocks !== null && !(p.blocks[0] <= ref.block && ref.block <= p.blocks[1])) return false;
  if (p.subs !== null) {
    if (ref.sub === null || !(p.subs[0] <= ref.sub && ref.sub <= p.subs[1])) return false;
  }
  return true;
}

export function refKey(ref) {
  return `${ref.group}\u0000${ref.block}\u0000${ref.sub === null ? "" : ref.sub}`;
}

export function refToString(ref) {
  return `${ref.group} ${ref.block}` + (ref.sub === null ? "" : `:${ref.sub}`);
}

function compareStrings(a, b) {
  // Python compares str by code point; group names are ASCII, where UTF-16 order agrees.
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareRefs(a, b) {
  return compareStrings(a.group, b.group) || a.block - b.block ||
    (a.sub === null ? -1 : a.sub) - (b.sub === null ? -1 : b.sub);
}

function uniqueSorted(refs) {
  const seen = new Map();
  for (const ref of refs) seen.set(refKey(ref), ref);
  return [...seen.values()].sort(compareRefs);
}

// [0, 1, 2, 5] → "0-2, 5"
function compress(numbers) {
  const nums = [...new Set(numbers)].sort((a, b) => a - b);
  const runs = [];
  let start = null;
  nums.forEach((n, i) => {
    if (start === null) start = n;
    if (i + 1 === nums.length || nums[i + 1] !== n + 1) {
      runs.push(start === n ? `${start}` : `${start}-${n}`);
      start = null;
    }
  });
  return runs.join(", ");
}

export function describeLayers(refs) {
  const byGroup = new Map();
  for (const ref of uniqueSorted(refs)) {
    if (!byGroup.has(ref.group)) byGroup.set(ref.group, new Map());
    const blocks = byGroup.get(ref.group);
    if (!blocks.has(ref.block)) blocks.set(ref.block, []);
    if (ref.sub !== null) blocks.get(ref.block).push(ref.sub);
  }
  const parts = [];
  for (const [group, blocks] of byGroup) {
    let text = `${group} ${compress([...blocks.keys()])}`;
    const subLists = [...blocks.values()];
    if (!subLists.every((s) => s.length === 0)) {
      text += ` (transformer indices ${compress(subLists.flat())})`;
    }
    parts.push(text);
  }
  return parts.join("; ");
}

// resolve_layers: the available layers the patterns select, in model order; throws
// LayerSpecError (same messages as Python) when a pattern selects nothing.
export function resolveLayers(patterns, available, modelName = "this model") {
  const layers = uniqueSorted(available);
  if (!layers.length) throw new LayerSpecError(`${modelName} has no attention layers GAG can patch`);
  const groups = [...new Set(layers.map((r) => r.group))].sort(compareStrings);
  const chosen = new Set();
  for (const p of patterns) {
    if (p.group !== null && !groups.includes(p.group)) {
      throw new LayerSpecError(`layer selection: ${modelName} has no block group ` +
                               `'${p.group}'; its groups are ${groups.join(", ")}. ` +
                               `Valid layers: ${describeLayers(layers)}`);
    }
    const hits = layers.filter((ref) => patternMatches(p, ref));
    if (!hits.length) {
      throw new LayerSpecError(`layer selection: '${p.text}' matches no attention layer ` +
                               `of ${modelName}. Valid layers: ${describeLayers(layers)}`);
    }
    for (const ref of hits) chosen.add(refKey(ref));
  }
  return layers.filter((ref) => chosen.has(refKey(ref)));
}
