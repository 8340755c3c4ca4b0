"""The pack's front end in a real browser: help pages, the schedule preview, the layer map.

A real ComfyUI server (tests/comfy/comfy_server.py) serves its bundled front end
(comfyui_frontend_package) with this pack in custom_nodes; Debian's Chromium, driven headless by
Playwright, loads it. Every check leaves a screenshot in tests/artifacts/frontend/.

Needs: ComfyUI (skips without it, like every test in tests/comfy), and Chromium plus the
`playwright` Python package: those are test dependencies that .ci/run installs, so their absence
is a failure, not a skip. The browser is found at $GAG_CHROMIUM, /usr/bin/chromium, or on PATH.
Playwright's own browser download is never used.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "core"))  # the shared layer-spec vectors

from layer_spec_cases import RUN_CASES_JS, expected_results, load_cases, mismatches  # noqa: E402

ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "frontend"
NODE_IDS = ("GAGModelPatch", "GAGLayers", "GAGSparsity", "GAGSchedule")
EXTENSION_NAME = "gag.comfyui.previews"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}

def _chromium() -> str:
    for candidate in (os.environ.get("GAG_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("Chromium not found ($GAG_CHROMIUM, /usr/bin/chromium, PATH); .ci/run installs "
                "Debian's chromium package", pytrace=False)


def _shot(page, name: str, clip=None) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), clip=clip)
    return path


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    from comfy_server import find_comfyui, shared_server
    find_comfyui()  # skips the module when there is no ComfyUI checkout
    with shared_server(frontend=True) as info:
        # A first visit would open the template browser over the canvas.
        info.post_json("/settings", {"Comfy.TutorialCompleted": True,
                                     "Comfy.Canvas.SelectionToolbox": True})
        yield info


@pytest.fixture(scope="module")
def browser_page(server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the `playwright` package is missing: pip install -r tests/requirements.txt "
                    "(only the Python package; the browser is Debian's chromium)", pytrace=False)
    executable = _chromium()
    profile = tempfile.mkdtemp(prefix="gag-chromium-")
    console: list[dict] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport=VIEWPORT)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda m: console.append(
                {"type": m.type, "text": m.text, "url": (m.location or {}).get("url", "")}))
            page.on("pageerror", lambda e: console.append(
                {"type": "pageerror", "text": str(e), "url": "", "stack": e.stack or ""}))
            page.goto(server.url, wait_until="load")
            page.wait_for_function(
                f"() => window.app?.graph && window.LiteGraph && (window.app.extensions ?? [])"
                f".some((e) => e.name === {json.dumps(EXTENSION_NAME)})", timeout=90_000)
            page.evaluate(HELPERS_JS)
            page.gag_console = console
            page.gag_server = server
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def _pack_url_part(server) -> str:
    return f"/extensions/{server.pack_dir.name}/"


def _pack_problems(page) -> list[dict]:
    """Console errors and page errors caused by this pack, and the pack's own warnings."""
    pack = _pack_url_part(page.gag_server)
    problems = []
    for entry in page.gag_console:
        text, where = entry["text"], entry["url"] + entry.get("stack", "")
        ours = pack in where or pack in text or text.startswith("[GAG]")
        # The help panel asks for docs/<Node>/<locale>.md first and falls back to
        # docs/<Node>.md (the page this pack ships): that first 404 is the front end's lookup.
        expected_404 = "404" in text and "/docs/" in where and where.endswith("/en.md")
        if ours and not expected_404 and entry["type"] in ("error", "pageerror", "warning"):
            problems.append(entry)
    return problems


def _frames(page, n: int = 2) -> None:
    page.evaluate(f"() => new Promise((r) => {{ let k = {n}; const f = () => "
                  f"(--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def _redraw(page) -> None:
    page.evaluate("() => window.app.graph.setDirtyCanvas(true, true)")
    _frames(page, 3)


# JS helpers installed once per page: graph building, widget setting, coordinate conversion.
HELPERS_JS = r"""
() => {
  const app = window.app, LG = window.LiteGraph;
  window.gagTest = {
    clear() { app.graph.clear(); app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1; },
    add(type, x, y) {
      const n = LG.createNode(type); n.pos = [x, y]; app.graph.add(n); return n.id;
    },
    node(id) { return app.graph.getNodeById(id); },
    connect(a, slotA, b, slotB) { this.node(a).connect(slotA, this.node(b), slotB); },
    set(id, name, value) {
      const w = this.node(id).widgets.find((w) => w.name === name);
      w.value = value;
      w.callback?.(value, app.canvas, this.node(id));
      app.graph.setDirtyCanvas(true, true);
    },
    // Node-local canvas position → page (CSS) pixels.
    toPage(id, x, y) {
      const n = this.node(id), ds = app.canvas.ds, r = app.canvas.canvas.getBoundingClientRect();
      return [(n.pos[0] + x + ds.offset[0]) * ds.scale + r.left,
              (n.pos[1] + y + ds.offset[1]) * ds.scale + r.top];
    },
    box(id) {
      const n = this.node(id), t = LG.NODE_TITLE_HEIGHT;
      const [x, y] = this.toPage(id, -2, -t - 2);
      const s = app.canvas.ds.scale;
      return { x, y, width: (n.size[0] + 4) * s, height: (n.size[1] + t + 4) * s };
    },
    preview(id) {
      const p = this.node(id).gagPreview;
      if (!p) return null;
      const { selectedSet, ...plain } = p;
      return JSON.parse(JSON.stringify(plain));
    },
  };
}
"""


@pytest.fixture(scope="module")
def graph(browser_page):
    """The four GAG nodes wired as a user would, in a fresh graph."""
    page = browser_page
    ids = page.evaluate("""() => {
      const t = window.gagTest; t.clear();
      const ids = { schedule: t.add("GAGSchedule", 40, 110), layers: t.add("GAGLayers", 360, 110),
                    sparsity: t.add("GAGSparsity", 40, 520), patch: t.add("GAGModelPatch", 820, 110) };
      t.connect(ids.layers, 0, ids.patch, 1);
      t.connect(ids.sparsity, 0, ids.patch, 2);
      t.connect(ids.schedule, 0, ids.patch, 3);
      return ids;
    }""")
    _redraw(page)
    return ids


def _crop(page, box):
    from PIL import Image
    return Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB")


def _changed_fraction(a, b) -> float:
    from PIL import ImageChops
    assert a.size == b.size
    diff = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v > 24 else 0)
    return sum(diff.histogram()[255:]) / (a.size[0] * a.size[1])


# --- checks -----------------------------------------------------------------------------------

def test_app_loads_with_the_pack_and_no_errors_from_it(browser_page):
    page = browser_page
    server = page.gag_server
    scripts = server.get_json("/extensions")
    pack = _pack_url_part(server)
    assert f"{pack}js/gag_previews.js" in scripts
    info = server.get_json("/object_info")
    for node_id in NODE_IDS:
        assert info[node_id]["python_module"] == f"custom_nodes.{server.pack_dir.name}"
    _frames(page, 3)
    _shot(page, "01_app_loaded")
    assert not _pack_problems(page), _pack_problems(page)


def test_bundled_workflows_load(browser_page):
    page = browser_page
    workflows = []
    for path in sorted((REPO_ROOT / "workflows").glob("**/*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("nodes"), list):  # UI format only
            workflows.append((path, data))
    if not workflows:
        pytest.skip("workflows/ holds no UI-format workflow yet; the other checks build their "
                    "graph through the app's API")
    # file-name key -> family (first match wins: "flux2" before "flux")
    # workflow name part → the layout its loader's file name should pick (first match wins)
    families = {"flux2_klein": "flux2_klein_4b", "flux2": "flux2", "flux": "flux",
                "qwen": "qwen_image", "sdxl": "sdxl", "sd15": "sd15", "chroma": "chroma",
                "sd3": "sd3", "z_image": "zimage"}
    # Workflows for nodes an older supported ComfyUI lacks (its front end would open a
    # missing-nodes dialog over the canvas); test_workflows.py checks them where they exist.
    newer_comfyui_only = {"gag_flux2_klein_4step"}
    server_types = set(page.gag_server.get_json("/object_info"))
    crowded = []
    for path, data in workflows:
        unknown = {n["type"] for n in data["nodes"]} - server_types - {"Note", "MarkdownNote"}
        if unknown:
            assert path.stem in newer_comfyui_only, f"{path.name}: unknown node types {unknown}"
            continue
        gag_types = sorted({n["type"] for n in data["nodes"] if n.get("type") in NODE_IDS})
        page.evaluate("(data) => window.app.loadGraphData(data)", data)
        page.keyboard.press("Escape")  # a missing-models dialog, if the front end shows one
        _redraw(page)
        found = page.evaluate("""(types) => window.app.graph._nodes
            .filter((n) => types.includes(n.comfyClass ?? n.type))
            .map((n) => ({ type: n.comfyClass ?? n.type, id: n.id, preview: !!n.gagPreview }))""",
                              gag_types)
        assert sorted({n["type"] for n in found}) == gag_types, path.name
        for node in found:
            if node["type"] in ("GAGSchedule", "GAGLayers"):
                assert node["preview"], f"{path.name}: {node['type']} drew no preview"
            if node["type"] == "GAGLayers":
                state = page.evaluate("(id) => window.gagTest.preview(id)", node["id"])
                assert state["error"] is None, (path.name, state["error"])
                # The loader's file name names the family, and the map follows it.
                want = next((f for key, f in families.items() if key in path.stem), None)
                if want:
                    assert (state["layout"], state["layoutSource"]) == (want, "auto-file"), path.name
                layers_id = node["id"]
        # The previews make their nodes taller than a front end without them would; the
        # workflow must leave that room, or the map is drawn under the next node.
        overlaps = page.evaluate("""(types) => {
          const nodes = window.app.graph._nodes, out = [];
          const rect = (n) => { const t = window.LiteGraph.NODE_TITLE_HEIGHT;
            return [n.pos[0], n.pos[1] - t, n.pos[0] + n.size[0], n.pos[1] + n.size[1]]; };
          for (const a of nodes.filter((n) => ["GAGSchedule", "GAGLayers"].includes(n.comfyClass))) {
            const [ax0, ay0, ax1, ay1] = rect(a);
            for (const b of nodes) {
              if (b === a) continue;
              const [bx0, by0, bx1, by1] = rect(b);
              if (ax0 < bx1 && bx0 < ax1 && ay0 < by1 && by0 < ay1)
                out.push(`${a.comfyClass} (${a.size.map(Math.round)}) overlaps ${b.comfyClass ?? b.type}`);
            }
          }
          return out;
        }""", gag_types)
        crowded += [f"{path.name}: {o}" for o in overlaps]
        # Show the GAG nodes at full size (below ~60 % zoom the canvas drops text and detail).
        page.evaluate("""(id) => { const n = window.gagTest.node(id), ds = window.app.canvas.ds;
            ds.scale = 1; ds.offset = [700 - n.pos[0] - n.size[0] / 2, 330 - n.pos[1] - n.size[1] / 2];
            window.app.graph.setDirtyCanvas(true, true); }""", layers_id)
        _frames(page, 3)
        _shot(page, f"02_workflow_{path.stem}")
    assert not _pack_problems(page), _pack_problems(page)
    assert not crowded, ("bundled workflows leave no room for the previews (GAG Layers needs "
                         "~330 px height at 300 px width, GAG Schedule 242 px):\n"
                         + "\n".join(crowded))


def test_previews_do_not_change_what_is_saved_or_queued(browser_page, graph):
    page = browser_page
    result = page.evaluate("""async (ids) => {
      const graph = window.app.graph.serialize();
      const byId = Object.fromEntries(graph.nodes.map((n) => [n.id, n]));
      const prompt = (await window.app.graphToPrompt()).output;
      return { schedule: byId[ids.schedule].widgets_values, layers: byId[ids.layers].widgets_values,
               scheduleInputs: Object.keys(prompt[ids.schedule].inputs),
               layersInputs: Object.keys(prompt[ids.layers].inputs) };
    }""", graph)
    assert result["schedule"] == [0, 1, "constant"]
    assert result["layers"] == ["paper", "", "auto"]
    assert sorted(result["scheduleInputs"]) == ["end_percent", "ramp", "start_percent"]
    assert sorted(result["layersInputs"]) == ["custom", "mode", "preset"]


def test_schedule_preview_follows_the_widgets_and_matches_python(browser_page, graph):
    from gag_core.schedule import ramp_multiplier, window_position
    page = browser_page
    sid = graph["schedule"]
    box = page.evaluate("(id) => window.gagTest.box(id)", sid)
    before = page.evaluate("(id) => window.gagTest.preview(id)", sid)
    assert before["error"] is None and before["scale"] == 10
    assert all(m == 1 for _, m in before["samples"])  # default: on everywhere, constant
    image_before = _crop(page, box)
    _shot(page, "03_schedule_default", clip=box)

    for name, value in (("start_percent", 0.2), ("end_percent", 0.8), ("ramp", "cosine up")):
        page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [sid, name, value])
    _redraw(page)
    after = page.evaluate("(id) => window.gagTest.preview(id)", sid)
    image_after = _crop(page, box)
    _shot(page, "03_schedule_window_cosine_up", clip=box)

    assert (after["start"], after["end"], after["ramp"]) == (0.2, 0.8, "cosine up")
    # Same values as the Python schedule at every sampled point; off (None) outside the window.
    percents = [p for p, _ in after["samples"]]
    assert 0.2 in percents and 0.8 in percents and len(percents) > 200
    for p, m in after["samples"]:
        if p < 0.2 or p > 0.8:
            assert m is None, p
        else:
            assert m == pytest.approx(ramp_multiplier(window_position(p, 0.2, 0.8), "cosine up"),
                                      abs=1e-12), p
    assert _changed_fraction(image_before, image_after) > 0.02  # the drawing changed visibly

    # Off is drawn differently from "on at ×0": the hatched band is grey, the window is blue.
    page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [sid, "ramp", "linear up"])
    _redraw(page)
    image_ramp = _crop(page, box)
    assert _changed_fraction(image_after, image_ramp) > 0.002  # cosine → linear moves the curve
    _shot(page, "03_schedule_linear_up", clip=box)

    page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [sid, "start_percent", 0.9])
    _redraw(page)
    reversed_window = page.evaluate("(id) => window.gagTest.preview(id)", sid)
    assert reversed_window["samples"] is None
    assert "start_percent (0.9) must not be after end_percent (0.8)" in reversed_window["error"]
    _shot(page, "03_schedule_reversed_window_error", clip=box)
    for name, value in (("start_percent", 0.0), ("end_percent", 1.0), ("ramp", "constant")):
        page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [sid, name, value])
    assert not _pack_problems(page), _pack_problems(page)


def test_schedule_preview_draws_off_regions_distinctly(browser_page, graph):
    page = browser_page
    sid = graph["schedule"]
    for name, value in (("start_percent", 0.3), ("end_percent", 0.7), ("ramp", "linear down")):
        page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [sid, name, value])
    _redraw(page)
    plot = page.evaluate("(id) => window.gagTest.node(id).gagPreviewPlot", sid)
    assert plot, "the schedule preview exposes its plot rectangle"

    def pixel(percent, multiplier):
        x = plot["left"] + percent * (plot["right"] - plot["left"])
        y = plot["bottom"] - multiplier * (plot["bottom"] - plot["top"])
        px, py = page.evaluate("([id, x, y]) => window.gagTest.toPage(id, x, y)", [sid, x, y])
        from PIL import ImageStat
        image = _crop(page, {"x": px - 3, "y": py - 3, "width": 7, "height": 7})
        return tuple(ImageStat.Stat(image).mean)

    off = pixel(0.15, 0.5)
    on_under_curve = pixel(0.35, 0.3)   # inside the window, below the ramp (multiplier 0.875)
    on_above_curve = pixel(0.65, 0.6)   # inside the window, above the ramp (multiplier 0.125)
    blue = lambda c: c[2] - (c[0] + c[1]) / 2
    assert blue(on_under_curve) > blue(off) + 20, (on_under_curve, off)
    assert abs(off[0] - off[2]) < 25, off  # the off band is grey, not blue
    assert blue(on_under_curve) > blue(on_above_curve) + 10, (on_under_curve, on_above_curve)
    _shot(page, "04_schedule_off_regions", clip=page.evaluate("(id) => window.gagTest.box(id)", sid))
    for name, value in (("start_percent", 0.0), ("end_percent", 1.0), ("ramp", "constant")):
        page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [sid, name, value])


def _textarea(page, node_id):
    return page.evaluate_handle("""(id) => {
      const w = window.gagTest.node(id).widgets.find((w) => w.name === "custom");
      return w.inputEl ?? w.element;
    }""", node_id).as_element()


def _click_chip(page, node_id, family_id):
    x, y = page.evaluate("""([id, fam]) => {
      const w = window.gagTest.node(id).widgets.find((w) => w.name === "gag_layer_map");
      const { geometry, y } = w.lastGeometry;
      const chip = geometry.chips.find((c) => c.id === fam);
      return window.gagTest.toPage(id, chip.x + chip.w / 2, y + chip.y + chip.h / 2);
    }""", [node_id, family_id])
    page.mouse.click(x, y)
    _redraw(page)


def test_layer_map_shows_a_syntax_error_before_queueing(browser_page, graph):
    from gag_core.layer_spec import parse_layer_spec
    page = browser_page
    lid = graph["layers"]
    box = page.evaluate("(id) => window.gagTest.box(id)", lid)
    default = page.evaluate("(id) => window.gagTest.preview(id)", lid)
    assert (default["layout"], default["layoutSource"]) == ("sdxl", "auto-default")
    assert default["error"] is None and len(default["selected"]) == 60 and default["total"] == 70
    _shot(page, "05_layers_paper_sdxl", clip=box)

    page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [lid, "preset", "custom"])
    bad = "input 4-8 output 0-5"  # a missing comma: 'output' is read as a block number
    box_el = _textarea(page, lid)
    box_el.click()
    page.keyboard.type(bad)
    _frames(page, 3)  # no explicit repaint: the extension's input listener must trigger it
    state = page.evaluate("(id) => window.gagTest.preview(id)", lid)
    with pytest.raises(ValueError) as python_error:
        parse_layer_spec(bad)
    assert state["custom"] == bad
    assert state["errorKind"] == "syntax"
    assert state["error"] == str(python_error.value)  # the server's own words
    assert state["selected"] == []
    outline = box_el.evaluate("(el) => el.style.outline")
    assert "solid" in outline
    _shot(page, "05_layers_syntax_error", clip=page.evaluate("(id) => window.gagTest.box(id)", lid))

    # Fixing the text clears the error as the user types.
    box_el.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("input 4-8, output 0-5")
    _frames(page, 3)
    fixed = page.evaluate("(id) => window.gagTest.preview(id)", lid)
    assert fixed["error"] is None
    assert len(fixed["selected"]) == 2 * 2 + 2 * 10 + 3 * 10 + 3 * 2
    assert box_el.evaluate("(el) => el.style.outline") == ""
    _shot(page, "05_layers_custom_ok", clip=page.evaluate("(id) => window.gagTest.box(id)", lid))
    assert not _pack_problems(page), _pack_problems(page)


def test_layer_map_family_switch_and_inference(browser_page, graph):
    page = browser_page
    lid = graph["layers"]
    page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [lid, "preset", "custom"])
    page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)",
                  [lid, "custom", "double 0-18, single 0-37"])
    _redraw(page)
    on_sdxl = page.evaluate("(id) => window.gagTest.preview(id)", lid)
    assert on_sdxl["errorKind"] == "layers"  # valid text, but SDXL has no double blocks
    assert "has no block group 'double'" in on_sdxl["error"]

    _click_chip(page, lid, "flux")  # a real click on the map's FLUX.1 chip
    flux = page.evaluate("(id) => window.gagTest.preview(id)", lid)
    assert (flux["layout"], flux["layoutSource"]) == ("flux", "chosen")
    assert flux["error"] is None and len(flux["selected"]) == 19 + 38
    assert page.evaluate("(id) => window.gagTest.node(id).properties.gag_layout", lid) == "flux"
    _shot(page, "06_layers_flux_chosen", clip=page.evaluate("(id) => window.gagTest.box(id)", lid))

    # auto: follow GAG Model Patch's model input up to the loader and read its file name.
    _click_chip(page, lid, "auto")
    loader = page.evaluate("""(patch) => {
      const t = window.gagTest;
      const id = t.add("CheckpointLoaderSimple", 820, 420);
      t.node(id).widgets.find((w) => w.name === "ckpt_name").value = "sd_xl_base_1.0.safetensors";
      t.connect(id, 0, patch, 0);
      return id;
    }""", graph["patch"])
    page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [lid, "preset", "paper"])
    _redraw(page)
    inferred = page.evaluate("(id) => window.gagTest.preview(id)", lid)
    assert (inferred["layout"], inferred["layoutSource"]) == ("sdxl", "auto-file")
    page.evaluate("""(id) => { window.gagTest.node(id).widgets.find((w) => w.name === "ckpt_name")
      .value = "flux1-dev-fp8.safetensors"; }""", loader)
    _redraw(page)
    inferred = page.evaluate("(id) => window.gagTest.preview(id)", lid)
    assert (inferred["layout"], inferred["layoutSource"]) == ("flux", "auto-file")
    _shot(page, "06_layers_flux_inferred", clip=page.evaluate("(id) => window.gagTest.box(id)", lid))
    page.evaluate("(id) => window.app.graph.remove(window.gagTest.node(id))", loader)
    page.evaluate("([id, n, v]) => window.gagTest.set(id, n, v)", [lid, "custom", ""])
    assert not _pack_problems(page), _pack_problems(page)


def test_js_layer_spec_matches_the_shared_vectors_in_the_browser(browser_page):
    page = browser_page
    cases = load_cases()
    url = f"{_pack_url_part(page.gag_server)}js/gag_layer_spec.js"
    actual = page.evaluate(f"async ([url, cases]) => ({RUN_CASES_JS})(await import(url), cases)",
                           [url, cases])
    problems = mismatches(cases, expected_results(cases), actual)
    assert not problems, "web/js/gag_layer_spec.js differs from gag_core:\n" + "\n".join(problems)


def test_layer_map_draws_the_family_table_and_its_layouts_are_the_real_ones(browser_page,
                                                                            family_table):
    """The map reads the family table the server serves (not a copy), and each full-size
    layout in it is what the hook finds in the released architecture, built here at full size
    on the meta device (and the family that claims such a model is the layout's)."""
    page = browser_page
    url = f"{_pack_url_part(page.gag_server)}js/gag_layouts.js"
    families = page.evaluate("""async (url) => {
      const m = await import(url);
      return m.LAYOUTS.map((f) => ({ id: f.id, family: f.family, presets: f.presets,
        modes: f.modes, layers: m.layoutLayers(f).map((r) => [r.group, r.block, r.sub]) }));
    }""", url)
    table = family_table
    served = table.front_end_table()
    assert [(f["id"], f["family"], f["presets"], f["modes"]) for f in families] == [
        (f["id"], f["family"], f["presets"], f["modes"]) for f in served]
    assert {f["family"] for f in families} == {f.id for f in table.FAMILIES if f.layouts}
    by_id = {f["id"]: f for f in families}

    # Each layout's released model, built on the meta device by its family's recipe
    # (tests/comfy/tiny_families.py): UNets from ComfyUI's full-size structural configs, DiTs
    # through ComfyUI's own detection or at the released config, at the released block counts.
    import tiny_families as tf
    patchers, lacking = {}, set()
    for recipe in tf.RECIPES:
        if tf.unavailable(recipe.key(recipe.main)):
            lacking.update(recipe.released)  # e.g. FLUX.2 and the 2026 families on 0.3.64
            continue
        for layout_id, model in tf.released_models(recipe).items():
            patchers[layout_id] = types.SimpleNamespace(model=model)
    unchecked = set(by_id) - set(patchers)
    assert unchecked <= lacking, unchecked
    if tf.comfyui_version() >= (0, 33, 0):
        assert not unchecked, unchecked  # 0.33+: every layout in the table is checked
    for layout_id, patcher in patchers.items():
        family = table.find_family(patcher)
        assert family.id == by_id[layout_id]["family"], layout_id
        want = sorted((r.group, r.block, r.sub) for r in table.available_layers(family, patcher))
        assert sorted(map(tuple, by_id[layout_id]["layers"])) == want, layout_id


def test_help_pages_are_served_and_open_in_the_help_panel(browser_page, graph):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    page = browser_page
    server = page.gag_server
    pack = _pack_url_part(server)
    for node_id in NODE_IDS:
        served = server.get_bytes(f"{pack}docs/{node_id}.md").decode("utf-8")
        assert served == (REPO_ROOT / "web" / "docs" / f"{node_id}.md").read_text(encoding="utf-8")

    ids = dict(graph)
    for node_id, key in (("GAGSchedule", "schedule"), ("GAGLayers", "layers"),
                         ("GAGSparsity", "sparsity"), ("GAGModelPatch", "patch")):
        heading = (REPO_ROOT / "web" / "docs" / f"{node_id}.md").read_text(
            encoding="utf-8").splitlines()[0].lstrip("# ").strip()
        # Bring the node to the middle of the canvas: the open help panel covers the left side.
        page.evaluate("""(id) => { const n = window.gagTest.node(id), ds = window.app.canvas.ds;
            ds.scale = 1; ds.offset = [700 - n.pos[0], 250 - n.pos[1]];
            window.app.graph.setDirtyCanvas(true, true); }""", ids[key])
        _frames(page, 3)
        x, y = page.evaluate("(id) => window.gagTest.toPage(id, 60, -15)", ids[key])
        help_panel = page.locator(".node-help-content")
        # The selection toolbox fades in after a selection; a click in that moment can miss,
        # so a failed attempt is retried (the same real clicks) before it counts.
        for attempt in range(3):
            # Every node is panned to the same spot, and two clicks there within the
            # double-click interval open the title's rename box instead of selecting.
            if attempt:
                page.keyboard.press("Escape")
            page.wait_for_timeout(800)
            page.mouse.click(x, y)  # select the node by its title
            try:
                button = page.locator('[data-testid="info-button"]:visible').first
                button.wait_for(state="visible", timeout=5_000)
                button.click()  # the toolbox's "i": opens the node's help in the side panel
                page.wait_for_function(
                    """(h) => [...document.querySelectorAll('.node-help-content h1')]
                               .some((e) => e.textContent.trim() === h)""", arg=heading,
                    timeout=8_000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    _shot(page, f"07_help_{node_id}_FAILED")
                    raise
        text = help_panel.first.inner_text()
        assert "If the image looks" in text, node_id
        _shot(page, f"07_help_{node_id}")
    assert not _pack_problems(page), _pack_problems(page)


def test_extension_survives_missing_front_end_features(browser_page):
    """Older or stripped-down front ends: nodes without addCustomWidget, widgets or a graph
    must not make the extension throw."""
    page = browser_page
    outcome = page.evaluate("""() => {
      const ext = window.app.extensions.find((e) => e.name === "gag.comfyui.previews");
      const errors = [];
      const fakes = [
        { comfyClass: "GAGSchedule" },                                   // no addCustomWidget
        { comfyClass: "GAGLayers", widgets: null, addCustomWidget(w) { this.w = w; } },
        { comfyClass: "SomethingElse", addCustomWidget() { throw new Error("must not be called"); } },
        null,
      ];
      for (const fake of fakes) {
        try { ext.nodeCreated(fake); } catch (e) { errors.push(String(e)); }
      }
      // The layer map's draw and size must cope with a node that has no widgets or graph.
      const layers = fakes[1];
      try {
        layers.w.computeSize(300);
        const c = document.createElement("canvas").getContext("2d");
        layers.w.draw(c, layers, 300, 0, 20, false);
      } catch (e) { errors.push(String(e)); }
      return { errors, drewState: !!layers.gagPreview };
    }""")
    assert outcome["errors"] == []
    assert outcome["drewState"]
    # The guards report through console.warn("[GAG] …"): expected here, so forget them.
    warned = [e for e in page.gag_console if e["text"].startswith("[GAG]")]
    assert any("no addCustomWidget" in e["text"] for e in warned)
    page.gag_console[:] = [e for e in page.gag_console if e not in warned]

    # Vue-rendered nodes (a beta in this front end) skip canvas-only widgets: the GAG nodes
    # still render and work, without previews, and nothing from the pack errors.
    vue = page.evaluate("""async () => {
      const settings = window.app.extensionManager?.setting;
      if (!settings?.set) return null;
      const t = window.gagTest; t.clear();
      t.add("GAGLayers", 300, 150); t.add("GAGSchedule", 40, 150);
      const graph = window.app.graph.serialize();
      await settings.set("Comfy.VueNodes.Enabled", true);
      await window.app.loadGraphData(graph);
      await new Promise((r) => setTimeout(r, 1500));
      return [...document.querySelectorAll("[data-node-id]")].map((e) => e.textContent);
    }""")
    if vue is not None:
        assert any("GAG Layers" in text for text in vue), vue
        assert any("GAG Schedule" in text for text in vue), vue
        _shot(page, "08_vue_nodes_mode")
        page.evaluate("() => window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false)")
        assert not _pack_problems(page), _pack_problems(page)
