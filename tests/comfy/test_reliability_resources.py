"""Resource hygiene of GAG-patched models over many runs in one process.

* 50 samplings of a GAG-patched tiny SDXL: the number of live tensors and Python-allocated memory
  (tracemalloc) stay flat after warm-up, RSS grows by no more than allocator noise.
* Patches do not outlive the models that hold them: once the patched clones are gone, GAG's
  runtime and patch objects are collected (weakrefs die); the model the node received keeps
  clean model_options throughout.
* Re-applying GAG to its own output 50 times (a graph re-queued with GAG on an already-patched
  model, or chained GAG nodes) keeps one layer of patches, not a growing chain of wrappers.
"""

from __future__ import annotations

import copy
import gc
import importlib
import os
import tracemalloc
import warnings
import weakref

import pytest
import torch

import tiny_models as tm

RUNS = 50
SIZE = 16


@pytest.fixture(scope="module")
def gag(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.api")


@pytest.fixture(scope="module")
def module_of(pack):
    return lambda name: importlib.import_module(f"{pack.__name__}.nodes.{name}")


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on some lazily deprecated torch objects warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        pytest.skip("RSS needs /proc")


def options_snapshot(patcher):
    return copy.deepcopy({k: v for k, v in patcher.model_options.items()})


def gag_objects(patched, module_of):
    """Every patch object GAG installed on this clone, and their runtimes."""
    unet = module_of("adapters.unet_hook")
    dit_hook = module_of("adapters.dit_hook")
    dit_replace = module_of("adapters.dit_replace")
    options = patched.model_options.get("transformer_options", {})
    found = []
    for group in options.get("patches_replace", {}).values():
        for patch in group.values():
            if isinstance(patch, unet.UNetCrossAttentionPatch):
                found += [patch, patch.runtime]
            elif isinstance(patch, dit_replace.DiTBlockPatch):
                found.append(patch)
    override = options.get("optimized_attention_override")
    if isinstance(override, dit_hook.JointAttentionOverride):
        found += [override, override.runtime]
    return found


def test_fifty_runs_neither_grow_memory_nor_leave_patches_behind(gag, module_of):
    model = tm.tiny_sdxl()
    pos, neg = tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2)
    clean = options_snapshot(model)
    noise = torch.randn(1, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(0))

    def one_run(seed):
        # What a re-queued graph does: patch the loader's model, sample, drop the clone.
        patched = gag.apply_gag(model, scale=8.0 + seed % 3)
        result = tm.sample(patched, pos, neg, steps=1, cfg=5.0, noise=noise, seed=seed)
        refs = [weakref.ref(obj) for obj in gag_objects(patched, module_of)]
        assert refs, "GAG installed nothing"
        return result, refs

    for seed in range(5):  # warm-up: allocator pools, lazily built ComfyUI state
        one_run(seed)
    tensors_before, rss_before = live_tensors(), rss_bytes()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    all_refs = []
    first = None
    for seed in range(5, 5 + RUNS):
        result, refs = one_run(seed)
        assert torch.isfinite(result).all()
        first = result if first is None else first
        all_refs += refs
    gc.collect()
    traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    tensors_after, rss_after = live_tensors(), rss_bytes()

    print(f"{RUNS} runs: live tensors {tensors_before} → {tensors_after}, Python allocations "
          f"{traced_growth / 2**10:+.0f} KiB, RSS {(rss_after - rss_before) / 2**20:+.1f} MiB")
    assert tensors_after - tensors_before <= 2, (tensors_before, tensors_after)  # `first`
    assert traced_growth < 2 * 2**20, f"Python allocations grew by {traced_growth / 2**20:.1f} MiB"
    assert rss_after - rss_before < 64 * 2**20, \
        f"RSS grew by {(rss_after - rss_before) / 2**20:.1f} MiB over {RUNS} runs"
    alive = [r() for r in all_refs if r() is not None]
    assert not alive, f"{len(alive)} GAG objects outlived their models: {alive[:3]}"
    assert options_snapshot(model).keys() == clean.keys()
    assert model.model_options.get("transformer_options", {}) == clean.get("transformer_options", {})
    # The unpatched model still samples as it did before any of this.
    assert torch.equal(tm.sample(model, pos, neg, steps=1, cfg=5.0, noise=noise, seed=5),
                       tm.sample(tm.tiny_sdxl(), pos, neg, steps=1, cfg=5.0, noise=noise, seed=5))


@pytest.mark.parametrize("family", ["unet-sdxl", "flux-dev"])  # tiny_families ids
def test_reapplying_gag_fifty_times_keeps_one_layer_of_patches(gag, module_of, family):
    model = tm.tiny_sdxl() if family == "unet-sdxl" else tm.tiny_flux()
    once = gag.apply_gag(model)
    chained = model
    for i in range(RUNS):
        chained = gag.apply_gag(chained, scale=10.0)
    objects_once = gag_objects(once, module_of)
    objects_chained = gag_objects(chained, module_of)
    assert len(objects_chained) == len(objects_once) > 0
    wrapping = [o for o in objects_chained if getattr(o, "previous", None) is not None]
    assert not wrapping, f"{wrapping[:2]!r} wrap earlier patches"
    if family == "unet-sdxl":
        pos, neg = tm.sdxl_conditioning(seed=1), tm.sdxl_conditioning(seed=2)
        run = lambda p: tm.sample(p, pos, neg, steps=1, cfg=5.0, size=SIZE)
    else:
        pos = tm.flux_conditioning(seed=1)
        run = lambda p: tm.sample_dit(p, pos, pos, steps=1, cfg=1.0, size=SIZE)
    assert torch.equal(run(chained), run(once))
    # The intermediate clones, and with them their GAG objects, are gone.
    refs = [weakref.ref(o) for o in objects_chained]
    del chained, objects_chained
    gc.collect()
    assert all(r() is None for r in refs)
