"""The strength readout on a real ComfyUI server: the log line after a /prompt run, and the
summary and per-step plot on the GAG Model Patch node in Chromium.

Shares the server of tests/comfy/test_workflows.py (same shared_server arguments). The browser
set-up is test_frontend.py's (Debian's Chromium through Playwright, never a downloaded browser).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time

import pytest

from comfy_server import TEST_NODE_PACK, shared_server
from test_frontend import (CHROMIUM_FLAGS, EXTENSION_NAME, HELPERS_JS, VIEWPORT, _chromium,
                           _frames, _pack_problems, _shot)
from test_reliability_server import gag_prompt

LINE = re.compile(r"GAG: attention gain ×[0-9.]+ median, ×[0-9.]+ p95, cap active on [0-9.<]+% "
                  r"of tokens \((\d+) layers?, (\d+) steps?[;)]")


@pytest.fixture(scope="module")
def server():
    with shared_server([TEST_NODE_PACK], frontend=True) as info:
        info.post_json("/settings", {"Comfy.TutorialCompleted": True})
        yield info


def readout_lines(server) -> list[str]:
    return [line for line in server.log().splitlines() if LINE.search(line)]


def new_readout_lines(server, before: int, timeout: float = 15.0) -> list[str]:
    """Readout lines logged after the first ``before`` ones, once at least one is there (the
    server's log reaches its file a moment after the prompt's messages reach the client)."""
    deadline = time.time() + timeout
    while True:
        lines = readout_lines(server)[before:]
        if lines or time.time() > deadline:
            return lines
        time.sleep(0.2)


def test_prompt_run_logs_one_readout_line(server):
    before = len(readout_lines(server))
    server.run_prompt(gag_prompt(seed=7, scale=4.0), timeout=120)
    lines = new_readout_lines(server, before)
    assert len(lines) == 1, server.log_tail()
    layers, steps = LINE.search(lines[0]).groups()
    assert int(steps) == 2 and int(layers) > 0  # gag_prompt samples 2 steps, paper layers


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright
    profile = tempfile.mkdtemp(prefix="gag-chromium-")
    console: list[dict] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS,
            viewport=VIEWPORT)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda m: console.append(
                {"type": m.type, "text": m.text, "url": (m.location or {}).get("url", "")}))
            page.on("pageerror", lambda e: console.append(
                {"type": "pageerror", "text": str(e), "url": "", "stack": e.stack or ""}))
            page.goto(server.url, wait_until="load")
            page.wait_for_function(
                f"() => window.app?.graph && (window.app.extensions ?? [])"
                f".some((e) => e.name === {json.dumps(EXTENSION_NAME)})", timeout=90_000)
            page.evaluate(HELPERS_JS)
            page.gag_console = console
            page.gag_server = server
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


# A tiny SDXL graph built through the app, as a user would wire it.
BUILD_GRAPH_JS = """(scale) => {
  const t = window.gagTest; t.clear();
  const ids = {
    ckpt: t.add("GAGTestTinyCheckpoint", 20, 40), gag: t.add("GAGModelPatch", 480, 40),
    pos: t.add("GAGTestTinyTextEncode", 20, 260), neg: t.add("GAGTestTinyTextEncode", 20, 480),
    latent: t.add("EmptyLatentImage", 480, 560), sampler: t.add("KSampler", 900, 40),
    save: t.add("SaveLatent", 1260, 40) };
  t.connect(ids.ckpt, 0, ids.gag, 0);
  t.connect(ids.ckpt, 1, ids.pos, 0);  // the encoders' only link input is clip
  t.connect(ids.ckpt, 1, ids.neg, 0);
  t.connect(ids.gag, 0, ids.sampler, 0);
  t.connect(ids.pos, 0, ids.sampler, 1);
  t.connect(ids.neg, 0, ids.sampler, 2);
  t.connect(ids.latent, 0, ids.sampler, 3);
  t.connect(ids.sampler, 0, ids.save, 0);
  t.set(ids.ckpt, "ckpt_name", "tiny.safetensors");
  t.set(ids.ckpt, "family", "unet-sdxl");
  t.set(ids.pos, "text", "a lighthouse at dusk");
  t.set(ids.neg, "text", "blurry");
  t.set(ids.gag, "scale", scale);
  t.set(ids.latent, "width", 128);
  t.set(ids.latent, "height", 128);
  t.set(ids.sampler, "steps", 3);
  t.set(ids.sampler, "cfg", 5.0);
  t.set(ids.save, "filename_prefix", "readout/browser");
  return ids;
}"""


def test_node_shows_the_readout_and_its_plot_in_chromium(page, server):
    ids = page.evaluate(BUILD_GRAPH_JS, 40.0)
    before = len(readout_lines(server))
    page.evaluate("async () => { await window.app.queuePrompt(0); }")
    page.wait_for_function("(id) => !!window.gagTest.node(id).gagReadout", arg=ids["gag"],
                           timeout=120_000)
    # The progress text arrives in the same server call; give the canvas a moment to show it.
    deadline = time.time() + 20
    shown = None
    while time.time() < deadline and not shown:
        shown = page.evaluate("""(id) => (window.gagTest.node(id).widgets ?? [])
            .map((w) => typeof w.value === "string" ? w.value : "")
            .find((v) => v.startsWith("GAG attention gain")) ?? null""", ids["gag"])
        time.sleep(0.2)
    data = page.evaluate("(id) => JSON.parse(JSON.stringify(window.gagTest.node(id).gagReadout))",
                         ids["gag"])
    lines = new_readout_lines(server, before)
    assert len(lines) == 1, server.log_tail()
    # The node shows what the log says, and the hint exactly when the median gain calls for
    # one (the test pack's random-weight model has flat text attention: a small gain even at
    # λ 40; tests/comfy/test_readout_runs.py checks the hint on a model that reaches it).
    assert shown is not None, "the GAG node shows no progress text"
    assert shown == data["text"] and data["line"] in lines[0], data
    gain = re.search(r"GAG: attention gain (×[0-9.]+) median, (×[0-9.]+) p95", lines[0]).groups()
    assert shown.startswith(f"GAG attention gain {gain[0]} median, {gain[1]} p95\n"), shown
    if data["overall"]["median"] >= data["hint_gain"]:
        assert data["hint"] and shown.splitlines()[-1] == data["hint"], data
    else:
        # gain, cap, layers/steps, and which backend computed the guided calls
        assert data["hint"] is None and len(shown.splitlines()) == 4, data
        assert shown.splitlines()[-1] == f"backend: {data['backend']}", data
    assert data["node"] == str(ids["gag"])
    assert [s["step"] for s in data["steps"]] == [0, 1, 2] and data["total_steps"] == 3
    assert data["overall"]["median"] > 1 and data["scale"] == 40.0
    # The plot is drawn: one point per guided step, inside the node.
    page.evaluate("""(id) => { const n = window.gagTest.node(id), ds = window.app.canvas.ds;
        ds.scale = 1; ds.offset = [600 - n.pos[0] - n.size[0] / 2, 380 - n.pos[1] - n.size[1] / 2];
        window.app.graph.setDirtyCanvas(true, true); }""", ids["gag"])
    _frames(page, 3)
    plot = page.evaluate("(id) => window.gagTest.node(id).gagReadoutPlot ?? null", ids["gag"])
    assert plot is not None and len(plot["points"]) == 3
    assert all(plot["top"] - 1 <= y <= plot["bottom"] + 1 for _, y in plot["points"])
    box = page.evaluate("(id) => window.gagTest.box(id)", ids["gag"])
    _shot(page, "readout_gag_node", clip=box)
    assert not _pack_problems(page), _pack_problems(page)
