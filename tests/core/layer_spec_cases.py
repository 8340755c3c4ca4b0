"""The shared layer-selection test vectors (layer_spec_cases.json) and the code that runs them.

One JSON file is the contract between gag_core/layer_spec.py and its JavaScript port
(web/js/gag_layer_spec.js, which draws the GAG Layers map and shows syntax errors before a
prompt is queued). Python checks it in tests/core/test_layer_spec_js_cases.py; the JS port runs
``RUN_CASES_JS`` on it under node (same test file) and in a real browser
(tests/comfy/test_frontend.py). Expected values are what gag_core returns, exact messages
included; ``python tests/core/layer_spec_cases.py --write`` rewrites them from gag_core after a
deliberate change (review the diff: every changed line is a change users see).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CASES_PATH = Path(__file__).resolve().with_name("layer_spec_cases.json")
JS_MODULE = REPO_ROOT / "web" / "js" / "gag_layer_spec.js"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def load_cases() -> dict:
    return json.loads(CASES_PATH.read_text(encoding="utf-8"))


def case_text(case: dict) -> str:
    if "build" in case:
        b = case["build"]
        return b["prefix"] + b["repeat"] * b["count"]
    return case["text"]


def layout_refs(layout: dict):
    """{group: block count (DiT: one attention per block, no index) | {block: transformers}} → refs."""
    from gag_core.layer_spec import LayerRef
    refs = []
    for group, blocks in layout.items():
        if isinstance(blocks, int):
            refs.extend(LayerRef(group, b) for b in range(blocks))
        else:
            for block, subs in blocks.items():
                refs.extend(LayerRef(group, int(block), s) for s in range(subs))
    return refs


def python_results(cases: dict) -> dict:
    """What gag_core.layer_spec returns for every case, in the JSON's result format."""
    from gag_core.layer_spec import describe_layers, parse_layer_spec, resolve_layers
    out = {"parse": [], "resolve": []}
    for case in cases["parse"]:
        try:
            patterns = parse_layer_spec(case_text(case))
            out["parse"].append({"patterns": [
                {"group": p.group, "blocks": list(p.blocks) if p.blocks else None,
                 "subs": list(p.subs) if p.subs else None, "text": p.text} for p in patterns]})
        except ValueError as e:
            out["parse"].append({"error": str(e)})
    for case in cases["resolve"]:
        try:
            refs = resolve_layers(parse_layer_spec(case_text(case)),
                                  layout_refs(cases["layouts"][case["layout"]]), case["model_name"])
            out["resolve"].append({"layers": [str(r) for r in refs],
                                   "description": describe_layers(refs)})
        except ValueError as e:
            out["resolve"].append({"error": str(e)})
    return out


def expected_results(cases: dict) -> dict:
    keys = {"parse": ("patterns", "error"), "resolve": ("layers", "description", "error")}
    return {kind: [{k: c[k] for k in keys[kind] if k in c} for c in cases[kind]]
            for kind in ("parse", "resolve")}


# A JS function (layer-spec module, cases) → results in the same format as python_results.
RUN_CASES_JS = r"""
(mod, cases) => {
  const text = (c) => c.build ? c.build.prefix + c.build.repeat.repeat(c.build.count) : c.text;
  const refs = (layout) => {
    const out = [];
    for (const [group, blocks] of Object.entries(layout))
      if (typeof blocks === "number")
        for (let b = 0; b < blocks; b++) out.push(mod.layerRef(group, b, null));
      else for (const [block, subs] of Object.entries(blocks))
        for (let s = 0; s < subs; s++) out.push(mod.layerRef(group, Number(block), s));
    return out;
  };
  const out = { parse: [], resolve: [] };
  for (const c of cases.parse) {
    try {
      out.parse.push({ patterns: mod.parseLayerSpec(text(c)).map((p) => ({
        group: p.group, blocks: p.blocks, subs: p.subs, text: p.text })) });
    } catch (e) {
      if (!(e instanceof mod.LayerSpecError)) throw e;
      out.parse.push({ error: e.message });
    }
  }
  for (const c of cases.resolve) {
    try {
      const chosen = mod.resolveLayers(mod.parseLayerSpec(text(c)), refs(cases.layouts[c.layout]),
                                       c.model_name);
      out.resolve.push({ layers: chosen.map(mod.refToString),
                         description: mod.describeLayers(chosen) });
    } catch (e) {
      if (!(e instanceof mod.LayerSpecError)) throw e;
      out.resolve.push({ error: e.message });
    }
  }
  return out;
}
"""


def mismatches(cases: dict, expected: dict, actual: dict) -> list[str]:
    """Readable differences between two result sets (empty when they agree)."""
    problems = []
    for kind in ("parse", "resolve"):
        if len(actual[kind]) != len(expected[kind]):
            problems.append(f"{kind}: {len(actual[kind])} results for {len(expected[kind])} cases")
            continue
        for case, want, got in zip(cases[kind], expected[kind], actual[kind]):
            if want != got:
                problems.append(f"{kind} case {case['name']!r}:\n  expected {want!r}\n  got      {got!r}")
    return problems


def dumps(cases: dict) -> str:
    """The cases as JSON with one line per layout and per case: a diff shows each changed case."""
    def lines(entries, open_, close):
        return open_ + "\n" + ",\n".join(f"  {e}" for e in entries) + "\n " + close
    one = json.dumps  # ASCII output: non-ASCII test text stays visible as \u escapes
    body = [f' "about": {one(cases["about"])}',
            ' "layouts": ' + lines([f"{one(k)}: {one(v)}" for k, v in cases["layouts"].items()],
                                   "{", "}")]
    body += [f' "{kind}": ' + lines([one(c) for c in cases[kind]], "[", "]")
             for kind in ("parse", "resolve")]
    return "{\n" + ",\n".join(body) + "\n}\n"


def write_expected() -> None:
    cases = load_cases()
    results = python_results(cases)
    for kind in ("parse", "resolve"):
        for case, result in zip(cases[kind], results[kind]):
            for key in ("patterns", "layers", "description", "error"):
                case.pop(key, None)
            case.update(result)
    CASES_PATH.write_text(dumps(cases), encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_expected()
        print(f"rewrote the expected results in {CASES_PATH} from gag_core.layer_spec")
    else:
        print(__doc__)
