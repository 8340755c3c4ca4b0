"""The shared layer-selection vectors (layer_spec_cases.json) hold for both implementations.

gag_core/layer_spec.py must give exactly the recorded results (patterns, layers, descriptions
and error messages); so must its JavaScript port, web/js/gag_layer_spec.js, which the GAG Layers
node uses to show errors before a prompt is queued. The JS half runs here under node when node
is installed (a fast check without ComfyUI), and always in a real browser in
tests/comfy/test_frontend.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from layer_spec_cases import (CASES_PATH, JS_MODULE, RUN_CASES_JS, case_text, expected_results,
                              load_cases, mismatches, python_results)

CASES = load_cases()


def test_cases_file_is_well_formed():
    names = [c["name"] for kind in ("parse", "resolve") for c in CASES[kind]]
    assert len(names) == len(set(names)), "case names must be unique (they name failures)"
    for kind, outcome in (("parse", "patterns"), ("resolve", "layers")):
        for case in CASES[kind]:
            assert ("error" in case) != (outcome in case), case["name"]
    # Every error the grammar can raise for text is recorded, and the edges of the character set.
    errors = [c["error"] for kind in ("parse", "resolve") for c in CASES[kind] if "error" in c]
    for branch in ("is empty", "characters long", r"^layer selection: '[!-~]' in .* not allowed",
                   r"\(U\+[0-9A-F]{4,}\) in .* not allowed", "must start with a", "takes no numbers",
                   "is not a number", "runs backwards", "longer than 6 digits", "has no block group",
                   "matches no attention layer", "no attention layers GAG"):
        assert any(re.search(branch, e) for e in errors), f"no case reaches the error {branch!r}"
    texts = [case_text(c) for c in CASES["parse"]]
    assert any(ord(ch) > 0xFFFF for t in texts for ch in t)  # JS sees it as two UTF-16 units
    assert any(len(t) == 10_000 for t in texts) and any(len(t) > 10_000 for t in texts)


def test_python_matches_recorded_results():
    problems = mismatches(CASES, expected_results(CASES), python_results(CASES))
    assert not problems, ("gag_core.layer_spec no longer gives the recorded results; if the "
                          "change is deliberate, port it to web/js/gag_layer_spec.js and run "
                          "`python tests/core/layer_spec_cases.py --write`:\n" + "\n".join(problems))


def test_recorded_results_detect_a_changed_message():
    # The comparison must be able to fail: one changed character in one message is reported.
    tampered = json.loads(json.dumps(expected_results(CASES)))
    first_error = next(r for r in tampered["parse"] if "error" in r)
    first_error["error"] = first_error["error"].replace("layer selection", "layer  selection", 1)
    assert len(mismatches(CASES, tampered, python_results(CASES))) == 1


@pytest.mark.skipif(shutil.which("node") is None,
                    reason="node is not installed; the JS port is checked in a browser by "
                           "tests/comfy/test_frontend.py instead")
def test_js_port_matches_recorded_results_under_node():
    script = (f"const mod = await import({json.dumps(JS_MODULE.as_uri())});\n"
              f"const fs = await import('node:fs');\n"
              f"const cases = JSON.parse(fs.readFileSync({json.dumps(str(CASES_PATH))}, 'utf8'));\n"
              f"const run = {RUN_CASES_JS};\n"
              f"process.stdout.write(JSON.stringify(run(mod, cases)));\n")
    done = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    problems = mismatches(CASES, expected_results(CASES), json.loads(done.stdout))
    assert not problems, "web/js/gag_layer_spec.js differs from gag_core:\n" + "\n".join(problems)
