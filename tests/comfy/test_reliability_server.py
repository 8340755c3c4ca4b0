"""A GAG workflow queued 50 times on a real ComfyUI server (API format, POST /prompt).

Each prompt changes the seed and GAG's scale, so ComfyUI re-runs GAG Model Patch on its cached
loader output and samples again — what a user re-queueing a graph while tuning λ does. Checked:
every prompt succeeds with a finite latent, the server's memory stays flat after warm-up, and the
last prompts are not slower than the first ones (patches piling up on the cached model would
make every run slower).

Shares the server of tests/comfy/test_workflows.py (same shared_server arguments).
"""

from __future__ import annotations

import os
import time

import pytest

from comfy_server import TEST_NODE_PACK, shared_server

RUNS = 50
WARM_UP = 5


@pytest.fixture(scope="session")
def workflow_server():
    with shared_server([TEST_NODE_PACK], frontend=True) as server:
        yield server


def gag_prompt(seed: int, scale: float) -> dict:
    return {
        "ckpt": {"class_type": "GAGTestTinyCheckpoint",
                 "inputs": {"ckpt_name": "tiny.safetensors", "family": "unet-sdxl"}},
        "gag": {"class_type": "GAGModelPatch",
                "inputs": {"model": ["ckpt", 0], "scale": scale, "eta": 15.0, "zeta": 0.0}},
        "pos": {"class_type": "GAGTestTinyTextEncode",
                "inputs": {"text": "a lighthouse at dusk", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "GAGTestTinyTextEncode",
                "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "sample": {"class_type": "KSampler",
                   "inputs": {"model": ["gag", 0], "seed": seed, "steps": 2, "cfg": 5.0,
                              "sampler_name": "euler", "scheduler": "normal",
                              "positive": ["pos", 0], "negative": ["neg", 0],
                              "latent_image": ["latent", 0], "denoise": 1.0}},
        "save": {"class_type": "SaveLatent",
                 "inputs": {"samples": ["sample", 0], "filename_prefix": f"reliability/{seed}"}},
    }


def server_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_gag_workflow_queued_fifty_times(workflow_server):
    from safetensors.torch import load_file
    if not os.path.exists(f"/proc/{workflow_server.pid}/statm"):
        pytest.skip("server memory needs /proc")
    durations = []
    rss_after_warm_up = None
    for i in range(WARM_UP + RUNS):
        started = time.perf_counter()
        history = workflow_server.run_prompt(gag_prompt(seed=i, scale=5.0 + 0.1 * i), timeout=120)
        durations.append(time.perf_counter() - started)
        if i == WARM_UP - 1:
            rss_after_warm_up = server_rss(workflow_server.pid)
        if i in (0, WARM_UP + RUNS - 1):
            (path,) = workflow_server.output_files(history, "save", "latents")
            latent = load_file(str(path))["latent_tensor"]
            assert latent.shape == (1, 4, 16, 16) and bool(latent.isfinite().all())
    growth = server_rss(workflow_server.pid) - rss_after_warm_up
    print(f"{RUNS} prompts: RSS {rss_after_warm_up / 2**20:.0f} MiB after warm-up, "
          f"{growth / 2**20:+.1f} MiB after; median s/prompt first 10 "
          f"{sorted(durations[WARM_UP:WARM_UP + 10])[5]:.3f}, last 10 {sorted(durations[-10:])[5]:.3f}")
    assert growth < 100 * 2**20, f"server RSS grew {growth / 2**20:.0f} MiB over {RUNS} prompts"
    first = sorted(durations[WARM_UP:WARM_UP + 10])[5]
    last = sorted(durations[-10:])[5]
    # Medians of ten; generous, since the CPU is shared. A chain of patches growing with every
    # prompt would make the last runs several times slower than the first.
    assert last < 3 * first + 0.5, (first, last)
