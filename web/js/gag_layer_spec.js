// The layer-selection grammar of gag_core/layer_spec.py, for the GAG Layers node's live map.
//
// This is a line-for-line port, not an approximation: the node must show exactly the error the
// server would raise, before the user queues anything. Python's string semantics are reproduced
// where they differ from JavaScript's (what counts as whitespace, Unicode decimal digits, repr()
// of strings in messages, the int() digit limit). tests/core/layer_spec_cases.json holds the
// shared test vectors: tests/core/test_layer_spec_js_cases.py checks them against the Python
// module and tests/comfy/test_frontend.py against this file, in a browser.
//
// Pure module: no DOM, no ComfyUI imports (the front end loads every .js under web/ as an
// extension, so it must be harmless to import on its own).

export const GROUP_ALIASES = Object.freeze({
  down: "input", in: "input", up: "output", out: "output", mid: "middle",
});
export const MAX_LENGTH = 10000;
// CPython refuses int() on strings longer than this (sys.int_info.default_max_str_digits).
const PY_INT_MAX_STR_DIGITS = 4300;

// str.split()/str.strip() whitespace in CPython (differs from JS \s: adds \x1c-\x1f and \x85,
// lacks \ufeff).
const PY_WS = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_WS_RUN = new RegExp(`[${PY_WS}]+`, "u");
const PY_STRIP = new RegExp(`^[${PY_WS}]+|[${PY_WS}]+$`, "gu");
// Python's re \d matches every Unicode decimal digit (category Nd), and int() accepts them.
const RANGE = /^(\p{Nd}+)(?:-(\p{Nd}+))?$/u;
const ND = /^\p{Nd}$/u;
const GROUP_NAME = /^[a-z_]+$/;
const NOT_PRINTABLE = /^[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]$/u;

export class LayerSpecError extends Error {
  constructor(message) {
    super(message);
    this.name = "LayerSpecError";
  }
}

function pyStrip(s) {
  return s.replace(PY_STRIP, "");
}

function pySplitWords(s) {
  return s.split(PY_WS_RUN).filter((w) => w.length > 0);
}

function codePointLength(s) {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

// repr() of a str, as CPython writes it: the messages quote the user's text this way.
export function pyRepr(s) {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const cp = ch.codePointAt(0);
    if (ch === quote || ch === "\\") out += "\\" + ch;
    else if (ch === "\t") out += "\\t";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (cp < 0x20 || cp === 0x7f) out += "\\x" + cp.toString(16).padStart(2, "0");
    else if (cp < 0x7f) out += ch;
    else if (NOT_PRINTABLE.test(ch)) {
      if (cp <= 0xff) out += "\\x" + cp.toString(16).padStart(2, "0");
      else if (cp <= 0xffff) out += "\\u" + cp.toString(16).padStart(4, "0");
      else out += "\\U" + cp.toString(16).padStart(8, "0");
    } else out += ch;
  }
  return out + quote;
}

// Value of one Unicode decimal digit. Nd characters are encoded in runs of ten, 0 to 9 (a
// Unicode stability guarantee), so a digit's value is its distance from the start of its run.
function digitValue(ch) {
  const cp = ch.codePointAt(0);
  let below = 0;
  while (below < cp && ND.test(String.fromCodePoint(cp - below - 1))) below++;
  return below % 10;
}

function pyInt(digits) {
  const length = codePointLength(digits);
  if (length > PY_INT_MAX_STR_DIGITS) {
    throw new LayerSpecError(
      `Exceeds the limit (${PY_INT_MAX_STR_DIGITS} digits) for integer string conversion: ` +
      `value has ${length} digits; use sys.set_int_max_str_digits() to increase the limit`);
  }
  let ascii = "";
  for (const ch of digits) ascii += ch <= "9" && ch >= "0" ? ch : String(digitValue(ch));
  const big = BigInt(ascii);
  return { big, number: Number(big) };
}

function parseRange(token, item) {
  const m = RANGE.exec(token);
  if (!m) {
    throw new LayerSpecError(`layer selection: ${pyRepr(token)} in ${pyRepr(item)} is not a ` +
                             `number or a range like 4-8`);
  }
  const lo = pyInt(m[1]);
  const hi = m[2] !== undefined ? pyInt(m[2]) : lo;
  if (hi.big < lo.big) {
    throw new LayerSpecError(`layer selection: range ${pyRepr(token)} in ${pyRepr(item)} runs ` +
                             `backwards; write ${hi.big}-${lo.big}`);
  }
  return [lo.number, hi.number];
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
  const items = text.split(/[,;\n]/).map(pyStrip).filter((item) => item.length > 0);
  if (!items.length) {
    throw new LayerSpecError("layer selection is empty; write e.g. 'input 4-8, output 0-5', " +
                             "'double 0-18' or 'all'");
  }
  const patterns = [];
  for (const item of items) {
    const words = pySplitWords(item.toLowerCase());
    const group = Object.prototype.hasOwnProperty.call(GROUP_ALIASES, words[0])
      ? GROUP_ALIASES[words[0]] : words[0];
    if (!GROUP_NAME.test(group)) {
      throw new LayerSpecError(`layer selection: item ${pyRepr(item)} must start with a block ` +
                               "group name such as input, middle, output, double, single, joint or all");
    }
    if (group === "all") {
      if (words.length > 1) {
        throw new LayerSpecError(`layer selection: 'all' takes no numbers; got ${pyRepr(item)}`);
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
                               `${pyRepr(p.group)}; its groups are ${groups.join(", ")}. ` +
                               `Valid layers: ${describeLayers(layers)}`);
    }
    const hits = layers.filter((ref) => patternMatches(p, ref));
    if (!hits.length) {
      throw new LayerSpecError(`layer selection: ${pyRepr(p.text)} matches no attention layer ` +
                               `of ${modelName}. Valid layers: ${describeLayers(layers)}`);
    }
    for (const ref of hits) chosen.add(refKey(ref));
  }
  return layers.filter((ref) => chosen.has(refKey(ref)));
}
