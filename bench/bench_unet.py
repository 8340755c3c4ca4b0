"""GAG on SDXL: what one denoiser step costs at full size, next to PAG's and CFG's extra passes.

    python bench/bench_unet.py              # full-size SDXL UNet, random weights, fp16, CUDA;
                                            # markdown table appended to bench/results_unet_step.md
    python bench/bench_unet.py --smoke      # the same code path on CPU with the tiny SDXL of
                                            # tests/comfy/tiny_models.py (fp32, tiny latent,
                                            # 2 repeats); prints the table, writes a file only
                                            # with --out

Needs ComfyUI ($COMFYUI_PATH, the folder two levels above this pack, or ~/ComfyUI).

The model is comfy.supported_models.SDXL built from its own unet_config (model_channels 320,
transformer depths [0, 0, 2, 2, 10, 10], context 2048, adm 2816) plus the structure every SDXL
checkpoint has, with random weights: timings are the real model's, outputs are noise. Inputs are
what ComfyUI's sampler hands the model for a 1024² image: latent 4×128×128 per image, context
77 tokens × 2048, y = pooled 1280 + six 256-d size embeddings (SDXL's encode_adm), built with
ComfyUI's own process_conds / get_area_and_mult / cond_cat, and the transformer_options that
comfy/samplers.py _calc_cond_batch builds from the patched model's model_options.

Cases (batch = images in one model call; 2 by default):

    plain            one plain forward, batch B
    gag-<preset>     one forward with GAG on the preset's cross-attention layers (paper, all,
                     input, output; λ 10, η 15, ζ 0, α 1.5, every step)
    gag-paper-nochk  gag-paper with the repeated-key check (nodes/adapters/prompt_repeats.py key_periods) short-
                     circuited: a diagnostic of what that check costs (its host syncs and small
                     kernels) and of GAG's GPU time in a CUDA graph; the inputs have no repeated
                     keys, so the output is gag-paper's (checked)
    plain-sampler    plain through comfy.samplers.calc_cond_batch (the baseline of the next row)
    pag-pass         the extra pass of ComfyUI's own PerturbedAttentionGuidance node: its
                     post-CFG function, run as the sampler runs it (calc_cond_batch on the cond,
                     attn1 of the middle block replaced by identity)
    plain-cfg        cond + uncond in ONE call of batch 2B, as ComfyUI batches them when memory
                     allows; CFG's second pass costs this minus plain. When ComfyUI runs them as
                     two calls (low memory) the second pass is exactly one more plain row.
    gag-paper-cfg    GAG paper on that batch-2B call: GAG's cost inside a CFG step

Per case: eager wall time between CUDA events (median of --reps after --warmup), GPU busy time
(sum of kernel and copy durations from torch.profiler, per step), CUDA-graph replay time where
capture works, peak memory above what was allocated before the step, and the counts that show
the patches ran (GAG calls, repeated-key checks, host syncs per step).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_env import add_comfyui_option, comfyui_path, import_api  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK = "comfyui_gag"
DEFAULT_OUT = REPO_ROOT / "bench" / "results_unet_step.md"

# What sm.SDXL.unet_config leaves to checkpoint detection: the structure every SDXL base
# checkpoint has (ComfyUI reads it from the state dict; with no state dict it is given here).
SDXL_STRUCTURE = dict(in_channels=4, out_channels=4, num_res_blocks=[2, 2, 2],
                      channel_mult=[1, 2, 4], transformer_depth_middle=10,
                      transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                      use_spatial_transformer=True, legacy=False, num_classes="sequential",
                      image_size=32, use_temporal_resblock=False, use_checkpoint=False)
POOLED_DIM = 1280  # CLIP-G pooled output, SDXL's and the tiny model's (adm 2816 = 1280 + 6·256)
GAG_PRESETS = ("paper", "all", "input", "output")
GAG_SETTINGS = dict(scale=10.0, eta=15.0, zeta=0.0, alpha=1.5)
PAG_SCALE = 3.0  # the node's default; the pass costs the same at any non-zero scale


# --------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------

def build_sdxl(device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A ModelPatcher around the full-size SDXL UNet with random weights: weights N(0, 1/fan_in)
    so activations keep their scale through the blocks (attention scores of order 1, no fp16
    overflow), biases 0, norm gains 1."""
    import comfy.model_patcher
    import comfy.supported_models as sm
    config = dict(sm.SDXL.unet_config)
    config.update(SDXL_STRUCTURE)
    model_config = sm.SDXL(config)
    if not sm.SDXL.matches(model_config.unet_config):
        raise RuntimeError("the config built here no longer matches comfy.supported_models.SDXL")
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device=device)
    model.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for module in model.diffusion_model.modules():
            is_norm = "norm" in type(module).__name__.lower()
            for name, p in module.named_parameters(recurse=False):
                if is_norm or name == "bias" or p.dim() < 2:
                    p.fill_(1.0 if is_norm and name == "weight" else 0.0)
                else:
                    std = (p[0].numel()) ** -0.5
                    p.copy_(torch.randn(p.shape, generator=generator, device=device,
                                        dtype=torch.float32).mul_(std).to(p.dtype))
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def build_tiny_sdxl():
    sys.path.insert(0, str(REPO_ROOT / "tests" / "comfy"))
    import tiny_models
    return tiny_models.tiny_sdxl(0)


def conditioning(context_dim: int, tokens: int, pixels: int, seed: int, device):
    """A prompt as CLIPTextEncodeSDXL outputs it (batch 1; ComfyUI repeats it to the latent
    batch), with the size fields SDXL's encode_adm embeds."""
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(1, tokens, context_dim, generator=g).to(device)
    pooled = torch.randn(1, POOLED_DIM, generator=g).to(device)
    return [[context, {"pooled_output": pooled, "width": pixels, "height": pixels, "crop_w": 0,
                       "crop_h": 0, "target_width": pixels, "target_height": pixels}]]


def sampler_conds(model, positive, negative, noise: torch.Tensor, device):
    """Conditionings as the sampler holds them after CFGGuider's set-up (convert_cond,
    process_conds), with every model-input tensor on ``device``.

    ComfyUI leaves SDXL's y on the CPU (encode_adm builds it there) and copies it to the GPU in
    every call. That pageable host→device copy is tiny but cannot be captured in a CUDA graph,
    so it is done once here (ComfyUI's --gpu-only keeps the context on the GPU likewise).
    """
    import comfy.sampler_helpers
    import comfy.samplers
    conds = {"positive": comfy.sampler_helpers.convert_cond(positive),
             "negative": comfy.sampler_helpers.convert_cond(negative)}
    conds = comfy.samplers.process_conds(model, noise, conds, device,
                                         latent_image=torch.zeros_like(noise), seed=0)
    for entries in conds.values():
        for entry in entries:
            entry["model_conds"] = {name: _cond_on(c, device)
                                    for name, c in entry["model_conds"].items()}
    return conds["positive"], conds["negative"]


def _cond_on(cond, device):
    tensor = getattr(cond, "cond", None)
    if torch.is_tensor(tensor) and tensor.device != device:
        return cond._copy_with(tensor.to(device))
    return cond


# --------------------------------------------------------------------------------------------
# The model call, as comfy/samplers.py makes it
# --------------------------------------------------------------------------------------------

def direct_step(patcher, cond_lists, x: torch.Tensor,
                sigma: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One model call batching ``cond_lists`` (one conditioning entry each) the way
    _calc_cond_batch does: get_area_and_mult per entry, inputs and conds concatenated, σ
    repeated, and transformer_options = hooks' options merged with the patched model's
    model_options["transformer_options"], plus cond_or_uncond, uuids and sigmas."""
    import comfy.patcher_extension
    import comfy.samplers
    parts = []
    for index, entries in enumerate(cond_lists):
        if len(entries) != 1:
            raise ValueError(f"direct_step batches one conditioning entry per list; list {index} "
                             f"has {len(entries)}")
        parts.append((comfy.samplers.get_area_and_mult(entries[0], x, sigma), index))
    input_x = torch.cat([p.input_x for p, _ in parts])
    c = comfy.samplers.cond_cat([p.conditioning for p, _ in parts])
    timestep = torch.cat([sigma] * len(parts))
    cond_or_uncond = [index for _, index in parts]
    uuids = [p.uuid for p, _ in parts]
    model = patcher.model

    def step():
        options = patcher.apply_hooks(hooks=None)
        if "transformer_options" in patcher.model_options:
            options = comfy.patcher_extension.merge_nested_dicts(
                options, patcher.model_options["transformer_options"], copy_dict1=False)
        options["cond_or_uncond"] = cond_or_uncond[:]
        options["uuids"] = uuids[:]
        options["sigmas"] = sigma
        return model.apply_model(input_x, timestep, **c, transformer_options=options)
    return step


def sampler_step(patcher, cond_lists, x, sigma) -> Callable[[], torch.Tensor]:
    """The same call through comfy.samplers.calc_cond_batch itself (first output)."""
    import comfy.samplers
    return lambda: comfy.samplers.calc_cond_batch(patcher.model, cond_lists, x, sigma,
                                                  patcher.model_options)[0]


def pag_pass(plain_patcher, positive, x, sigma) -> tuple[Callable[[], torch.Tensor], object]:
    """The extra pass of ComfyUI's PerturbedAttentionGuidance node: its own post-CFG function,
    called with the arguments cfg_function gives it. Returns (step, patched model)."""
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance
    result = PerturbedAttentionGuidance.execute(plain_patcher, PAG_SCALE)
    pag_patcher = result.result[0] if hasattr(result, "result") else result[0]
    post_cfg = pag_patcher.model_options["sampler_post_cfg_function"][-1]
    zeros = torch.zeros_like(x)
    args = {"model": pag_patcher.model, "cond": positive, "uncond": None, "cond_scale": 1.0,
            "cond_denoised": zeros, "uncond_denoised": zeros, "denoised": zeros, "sigma": sigma,
            "model_options": pag_patcher.model_options, "input": x}
    # cfg_result + (cond_pred − pag)·scale with zeros: −scale × the perturbed prediction.
    return (lambda: post_cfg(args)), pag_patcher


# --------------------------------------------------------------------------------------------
# Counting what runs
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def patched_attr(owner, name: str, replacement):
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield original
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def call_counts(pack):
    """Counts, while active: GAG attention calls (GuidanceRuntime.attention/correction), the
    repeated-key checks, GAG calls the fused kernel took, and calls of replaces installed with
    set_model_options_patch_replace (PAG's identity on attn1)."""
    import comfy.model_patcher
    guidance = importlib.import_module(f"{pack}.nodes.guidance")
    repeats = importlib.import_module(f"{pack}.nodes.adapters.prompt_repeats")
    attention = importlib.import_module(f"{pack}.gag_core.attention")
    counts = {"gag": 0, "key_checks": 0, "fused": 0, "replace_calls": 0}

    def counting(original, key, test=None):
        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            if test is None or test(out):
                counts[key] += 1
            return out
        return wrapper

    def counting_replace(original):
        def wrapper(model_options, patch, *args, **kwargs):
            return original(model_options, counting(patch, "replace_calls"), *args, **kwargs)
        return wrapper

    runtime = guidance.GuidanceRuntime
    with contextlib.ExitStack() as stack:
        for name in ("attention", "correction"):
            original = runtime.__dict__[name]
            stack.enter_context(patched_attr(runtime, name, counting(original, "gag")))
        stack.enter_context(patched_attr(repeats, "key_periods",
                                         counting(repeats.key_periods, "key_checks")))
        stack.enter_context(patched_attr(attention, "select_backend",
                                         counting(attention.select_backend, "fused",
                                                  lambda out: out is not None)))
        stack.enter_context(patched_attr(comfy.model_patcher, "set_model_options_patch_replace",
                                         counting_replace(
                                             comfy.model_patcher.set_model_options_patch_replace)))
        yield counts


@contextlib.contextmanager
def without_key_check(pack):
    """key_periods answering "no repeats" without looking: what GAG would cost if the check
    needed no host reads. Only valid for inputs without repeated keys (checked by the caller)."""
    repeats = importlib.import_module(f"{pack}.nodes.adapters.prompt_repeats")
    with patched_attr(repeats, "key_periods", lambda k, v: None):
        yield


def count_host_syncs(fn) -> tuple[int, str]:
    """(synchronizing CUDA calls in one fn(), file:line of the first) via torch's sync debug
    mode: every device→host read (.tolist(), .item(), .cpu()) and every blocking copy, either
    direction (torch.tensor(list, device="cuda") included), is one."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return len(syncs), (f"{Path(syncs[0].filename).name}:{syncs[0].lineno}" if syncs else "")


def attn2_patch_count(patcher) -> int:
    replaces = (patcher.model_options.get("transformer_options", {})
                .get("patches_replace", {}).get("attn2", {}))
    return sum(type(p).__name__ == "UNetCrossAttentionPatch" for p in replaces.values())


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    batch: int
    step: Callable[[], torch.Tensor]
    baseline: str                 # the case this one's ratios are taken against
    note: str = ""
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    expect_gag: int = 0           # GAG-patched attn2 layers (each runs once per call)
    expect_replace: int = 0       # PAG: transformers in the middle block
    patcher: object = None        # the (patched) model the case calls
    # Maps the step's output to a denoised prediction, for the Δ column (PAG's post-CFG
    # function returns cfg_result + scale·(cond − perturbed), not a prediction).
    prediction: Callable[[torch.Tensor], torch.Tensor] = lambda out: out
    result: dict = field(default_factory=dict)

    def __call__(self):
        with self.context():
            return self.step()


def time_eager(case: Case, reps: int, warmup: int, cuda: bool) -> list[float]:
    for _ in range(warmup):
        case()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            case()
            end.record()
            torch.cuda.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            start = time.perf_counter()
            case()
            times.append((time.perf_counter() - start) * 1e3)
    return times


def busy_ms(case: Case, steps: int, cuda: bool) -> float:
    """Per step: on CUDA the summed durations of all GPU activity (kernels, copies, memsets) in
    torch.profiler, which leaves out the gaps launch overhead and host syncs open; on CPU the
    summed self time of the ops (the same code path, a different quantity)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            case()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    if cuda:
        total_us = sum(e.time_range.elapsed_us() for e in events
                       if e.device_type == DeviceType.CUDA)
        if total_us == 0:
            raise RuntimeError("torch.profiler recorded no CUDA activity (CUPTI unavailable?)")
    else:
        total_us = sum(e.self_cpu_time_total for e in events)
    return total_us / 1e3 / steps


def graph_replay_ms(case: Case, reps: int) -> float:
    """Capture one step in a CUDA graph (after warm-up on a side stream, as capture requires) and
    time replays between CUDA events; median."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            case()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            case()
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            times.append(begin.elapsed_time(end))
        return statistics.median(times)
    finally:
        del graph
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def peak_memory(case: Case) -> tuple[float, float]:
    """(peak allocated during one step, the part of it above what was allocated before), GiB."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = case()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return peak / 2**30, (peak - base) / 2**30


def verify(case: Case, pack: str, cuda: bool) -> dict:
    """Run the case once with counters on; fail loudly if the patches it is about did not run."""
    with call_counts(pack) as counts:
        out = case()
    info = {"gag_calls": counts["gag"], "key_checks": counts["key_checks"],
            "fused_calls": counts["fused"], "replace_calls": counts["replace_calls"],
            "finite": bool(torch.isfinite(out).all())}
    if case.expect_gag and counts["gag"] != case.expect_gag:
        raise RuntimeError(f"{case.name}: expected {case.expect_gag} GAG calls per step (one per "
                           f"patched attn2), counted {counts['gag']}: the patches did not all run")
    if not case.expect_gag and counts["gag"]:
        raise RuntimeError(f"{case.name}: {counts['gag']} GAG calls in a case without GAG")
    if case.expect_replace and counts["replace_calls"] != case.expect_replace:
        raise RuntimeError(f"{case.name}: expected {case.expect_replace} calls of PAG's attn1 "
                           f"replace, counted {counts['replace_calls']}")
    if cuda:
        info["host_syncs"], info["first_sync"] = count_host_syncs(case)
    return info


def measure(cases: list[Case], pack: str, *, reps: int, warmup: int, profile_steps: int,
            cuda: bool, graphs: bool) -> dict[str, torch.Tensor]:
    outputs = {}
    with torch.inference_mode():
        for case in cases:
            print(f"  {case.name} ...", file=sys.stderr, flush=True)
            r = case.result
            r.update(verify(case, pack, cuda))
            times = time_eager(case, reps, warmup, cuda)
            r["eager_ms"], r["eager_min_ms"] = statistics.median(times), min(times)
            try:
                r["busy_ms"] = busy_ms(case, profile_steps, cuda)
            except Exception as exc:  # a profiler without CUPTI: keep the other numbers
                r["busy_ms"] = None
                r["busy_note"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            if cuda:
                r["peak_GiB"], r["peak_extra_GiB"] = peak_memory(case)
                if not graphs:
                    r["graph_note"] = "not attempted (--no-graphs)"
                elif r["host_syncs"]:
                    r["graph_note"] = (f"not capturable: {r['host_syncs']} host syncs per step "
                                       f"(first at {r['first_sync']})")
                else:
                    try:
                        r["graph_ms"] = graph_replay_ms(case, reps)
                    except Exception as exc:  # report why capture failed, keep the other numbers
                        r["graph_note"] = f"capture failed: {type(exc).__name__}: " \
                                          f"{str(exc).splitlines()[0][:160]}"
                        with contextlib.suppress(Exception):
                            torch.cuda.synchronize()
                        torch.cuda.empty_cache()
            outputs[case.name] = case.prediction(case().float())
            print(f"    eager {r['eager_ms']:.2f} ms, busy {r['busy_ms'] or float('nan'):.2f} ms, "
                  f"GAG calls {r['gag_calls']} ({r['fused_calls']} fused), "
                  f"key checks {r['key_checks']}, host syncs {r.get('host_syncs', '—')}",
                  file=sys.stderr, flush=True)
            if cuda and r["gag_calls"] and r["fused_calls"] != r["gag_calls"]:
                print(f"    warning: only {r['fused_calls']} of {r['gag_calls']} GAG calls took "
                      f"the fused kernel (GAG_BACKEND={os.environ.get('GAG_BACKEND', '')!r})",
                      file=sys.stderr, flush=True)
    for case in cases:
        base = outputs[case.baseline]
        if case.name != case.baseline and base.shape == outputs[case.name].shape:
            case.result["rel_change"] = float((outputs[case.name] - base).norm()
                                              / base.norm().clamp(min=1e-30))
    return outputs


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------

def build_cases(api, patcher, positive, negative, x, sigma, pack: str) -> list[Case]:
    batch = x.shape[0]
    cases = [Case("plain", batch, direct_step(patcher, [positive], x, sigma), "plain",
                  "one plain forward", patcher=patcher)]
    gag = {}
    for preset in GAG_PRESETS:
        gag[preset] = api.apply_gag(patcher, layers=preset, **GAG_SETTINGS)
        cases.append(Case(f"gag-{preset}", batch, direct_step(gag[preset], [positive], x, sigma),
                          "plain", f"GAG on the '{preset}' preset's attn2 layers",
                          expect_gag=attn2_patch_count(gag[preset]), patcher=gag[preset]))
    cases.append(Case("gag-paper-nochk", batch, direct_step(gag["paper"], [positive], x, sigma),
                      "plain", "diagnostic: gag-paper with key_periods short-circuited",
                      context=lambda: without_key_check(pack),
                      expect_gag=attn2_patch_count(gag["paper"]), patcher=gag["paper"]))
    cases.append(Case("plain-sampler", batch, sampler_step(patcher, [positive], x, sigma), "plain",
                      "plain via comfy.samplers.calc_cond_batch", patcher=patcher))
    pag_step, pag_patcher = pag_pass(patcher, positive, x, sigma)
    middle = patcher.model.diffusion_model.middle_block
    middle_transformers = sum(len(m.transformer_blocks) for m in middle.modules()
                              if hasattr(m, "transformer_blocks"))
    cases.append(Case("pag-pass", batch, pag_step, "plain-sampler",
                      "PerturbedAttentionGuidance node's extra pass (its post-CFG function)",
                      expect_replace=middle_transformers, patcher=pag_patcher,
                      prediction=lambda out: out / -PAG_SCALE))
    cases.append(Case("plain-cfg", 2 * batch, direct_step(patcher, [positive, negative], x, sigma),
                      "plain", "cond + uncond batched in one call", patcher=patcher))
    cases.append(Case("gag-paper-cfg", 2 * batch,
                      direct_step(gag["paper"], [positive, negative], x, sigma), "plain-cfg",
                      "GAG paper on the batched cond + uncond call",
                      expect_gag=attn2_patch_count(gag["paper"]), patcher=gag["paper"]))
    return cases


def check_no_repeated_keys(pack: str, conds) -> None:
    """gag-paper-nochk is only gag-paper if no conditioning repeats along its tokens."""
    repeats = importlib.import_module(f"{pack}.nodes.adapters.prompt_repeats")
    for entries in conds:
        for entry in entries:
            context = entry["model_conds"]["c_crossattn"].cond[:, None]  # (B, 1, L, C)
            if repeats.key_periods(context, context) is not None:
                raise RuntimeError("the benchmark's context repeats along its tokens; the "
                                   "gag-paper-nochk diagnostic would not match gag-paper")


def check_sampler_fidelity(patcher, gag_patcher, positive, x, sigma, pack: str) -> dict:
    """The direct call must give what calc_cond_batch gives, and GAG must run inside
    calc_cond_batch too (counted), or the benchmark would time something the sampler never runs."""
    report = {}
    with torch.inference_mode():
        for name, p in (("plain", patcher), ("gag-paper", gag_patcher)):
            direct = direct_step(p, [positive], x, sigma)().float()
            with call_counts(pack) as counts:
                via_sampler = sampler_step(p, [positive], x, sigma)().float()
            diff = float((direct - via_sampler).norm() / via_sampler.norm().clamp(min=1e-30))
            if diff > 1e-3:
                raise RuntimeError(f"{name}: the direct model call differs from calc_cond_batch "
                                   f"(rel. {diff:.2e}); the benchmark does not call the model as "
                                   f"the sampler does")
            report[name] = {"rel_diff_vs_calc_cond_batch": diff,
                            "gag_calls_in_sampler": counts["gag"]}
    if report["gag-paper"]["gag_calls_in_sampler"] != attn2_patch_count(gag_patcher):
        raise RuntimeError(f"GAG ran {report['gag-paper']['gag_calls_in_sampler']} times inside "
                           f"calc_cond_batch; expected {attn2_patch_count(gag_patcher)}")
    return report


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def environment(comfy_root: Path, device: torch.device) -> dict:
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "python": platform.python_version(), "torch": torch.__version__,
           "comfyui": _comfyui_version(comfy_root)}
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception as exc:  # report, do not fail: the PyTorch GAG path runs without triton
        env["triton"] = f"unavailable ({type(exc).__name__})"
    if device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
        env["cuda_runtime"] = torch.version.cuda
        env["driver"] = _nvidia_driver()
    else:
        env["device"] = f"CPU ({platform.processor() or platform.machine()}, " \
                        f"{torch.get_num_threads()} thread(s))"
    env["pack_commit"] = _git_commit()
    from comfy.ldm.modules import attention as comfy_attention
    env["comfy_attention"] = getattr(comfy_attention.optimized_attention, "__name__", "?")
    env["gag_backend_env"] = os.environ.get("GAG_BACKEND", "") or "auto (unset)"
    return env


def _comfyui_version(comfy_root: Path) -> str:
    path = comfy_root / "comfyui_version.py"
    if not path.is_file():
        return f"unknown (no comfyui_version.py in {comfy_root})"
    # A generated file holding `__version__ = "x.y.z"`: read it, don't execute it.
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", path.read_text())
    return found.group(1) if found else "unknown"


def _nvidia_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
        return "unknown"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown (nvidia-smi not available)"


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=20).stdout.strip()
        return (head or "unknown") + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _ratio(value: Optional[float], base: Optional[float]) -> str:
    return f" ({value / base:.2f}×)" if value is not None and base else ""


def _cell(value: Optional[float], base: Optional[float]) -> str:
    return "✗" if value is None else f"{value:.2f}{_ratio(value, base)}"


def markdown(cases: list[Case], env: dict, setup: dict, fidelity: dict, smoke: bool) -> str:
    by_name = {c.name: c for c in cases}
    cuda = not smoke
    title = "tiny SDXL smoke test" if smoke else "SDXL UNet, one denoiser step"
    lines = [f"## {title} — run on {env['device']}, {env['date']}", "",
             f"- Environment: torch {env['torch']}"
             + (f" (CUDA {env['cuda_runtime']}), driver {env['driver']}" if cuda else "")
             + f", triton {env['triton']}, ComfyUI {env['comfyui']}, Python {env['python']}, "
               f"pack {env['pack_commit']}; ComfyUI attention: {env['comfy_attention']}; "
               f"GAG_BACKEND {env['gag_backend_env']}.",
             f"- Model: {setup['model']}; {setup['params'] / 1e9:.3f} B parameters, random weights, "
             f"{setup['dtype']}.",
             f"- Inputs: batch {setup['batch']}, latent {setup['latent']}, context {setup['context']}, "
             f"y {setup['y']}, σ = {setup['sigma']:.3f}. GAG: λ {GAG_SETTINGS['scale']:g}, "
             f"η {GAG_SETTINGS['eta']:g}, ζ {GAG_SETTINGS['zeta']:g}, α {GAG_SETTINGS['alpha']:g}, "
             "every step.",
             "- Timing: " + (f"eager = CUDA events around one step, median of {setup['reps']} after "
                             f"{setup['warmup']} warm-up (GPU synchronised between steps); GPU busy = "
                             f"sum of kernel/copy durations in torch.profiler, mean of "
                             f"{setup['profile_steps']} steps; graph = CUDA-graph replay, median; "
                             "peak = max_memory_allocated during one step, above what was allocated "
                             "before it (weights, inputs)."
                             if cuda else
                             f"CPU wall time, median of {setup['reps']} after {setup['warmup']} "
                             f"warm-up; 'op time' = summed self time of the ops in torch.profiler."),
             "- Ratios in parentheses are against the row named in 'vs' (same run).",
             f"- Sampler fidelity: the direct apply_model call equals calc_cond_batch to "
             f"{max(fidelity[k]['rel_diff_vs_calc_cond_batch'] for k in ('plain', 'gag-paper')):.1e}"
             " (rel.); "
             f"GAG ran {fidelity['gag-paper']['gag_calls_in_sampler']}× per call inside "
             f"calc_cond_batch. gag-paper-nochk differs from gag-paper by "
             f"{fidelity['nochk_vs_paper']:.1e} (rel.).",
             "- Δ denoised: relative L2 change of the denoised prediction against the 'vs' row "
             "(for pag-pass: the node's perturbed prediction). Random weights: only non-zero "
             "matters.", ""]
    busy_head = "GPU busy ms" if cuda else "op time ms"
    head = (f"| case | batch | vs | GAG calls | key checks | fused | host syncs | eager ms | "
            f"{busy_head} | graph ms | peak extra GiB | Δ denoised vs 'vs' |")
    lines += [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for case in cases:
        r, base = case.result, by_name[case.baseline].result
        same = case.name == case.baseline
        syncs = str(r["host_syncs"]) if "host_syncs" in r else "—"
        base_of = (lambda key: None) if same else base.get
        graph = (_cell(r["graph_ms"], base_of("graph_ms")) if "graph_ms" in r
                 else ("—" if smoke else "✗"))
        peak = (_cell(r["peak_extra_GiB"], base_of("peak_extra_GiB")) if "peak_extra_GiB" in r
                else "—")
        change = "—" if same or "rel_change" not in r else f"{r['rel_change']:.2e}"
        if not r.get("finite", True):
            change += " (non-finite!)"
        lines.append(
            f"| {case.name} | {case.batch} | {'' if same else case.baseline} | {r['gag_calls']} | "
            f"{r['key_checks']} | {r['fused_calls']} | {syncs} | "
            f"{r['eager_ms']:.2f}{'' if same else _ratio(r['eager_ms'], base['eager_ms'])} | "
            f"{_cell(r['busy_ms'], None if same else base['busy_ms'])} | "
            f"{graph} | {peak} | {change} |")
    lines.append("")
    lines.append("Cases: " + "; ".join(f"`{c.name}` {c.note}" for c in cases) + ".")
    notes = [f"`{c.name}`: {c.result['graph_note']}" for c in cases if "graph_note" in c.result]
    if notes:
        lines += ["", "CUDA graphs: " + "; ".join(notes) + "."]
    notes = [f"`{c.name}`: {c.result['busy_note']}" for c in cases if "busy_note" in c.result]
    if notes:
        lines += ["", f"{busy_head} unavailable: " + "; ".join(notes) + "."]
    lines += ["", cfg_summary(by_name, "eager_ms", "eager")]
    if all(c.result.get("busy_ms") for c in cases):
        lines += ["", cfg_summary(by_name, "busy_ms", busy_head)]
    lines.append("")
    return "\n".join(lines) + "\n"


def cfg_summary(by_name: dict[str, Case], key: str, label: str) -> str:
    """Per sampler step with CFG (cond + uncond batched), from the rows above."""
    plain, cfg = by_name["plain"].result[key], by_name["plain-cfg"].result[key]
    gag_cfg, pag = by_name["gag-paper-cfg"].result[key], by_name["pag-pass"].result[key]
    sampler = by_name["plain-sampler"].result[key]
    return (f"Per CFG step ({label}): CFG's second pass adds {cfg / plain - 1:.2f}× of a plain "
            f"batch-{by_name['plain'].batch} call when batched (+1.00× as two calls); plain CFG "
            f"step {cfg:.2f} ms; + GAG paper {gag_cfg:.2f} ms ({gag_cfg / cfg:.2f}×); + PAG "
            f"{cfg + pag:.2f} ms ({(cfg + pag) / cfg:.2f}×; its pass is {pag / sampler:.2f}× "
            f"a plain sampler call).")


def write_markdown(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", encoding="utf-8") as f:
        if new:
            f.write("# GAG on SDXL: one denoiser step (bench/bench_unet.py)\n\n"
                    "Each run appends a section. Compare ratios within a section only.\n\n")
        else:
            f.write("\n")
        f.write(text)


# --------------------------------------------------------------------------------------------

def policy_markdown(cases: list[Case], batch: int, size: int, tokens: int, reps: int,
                    warmup: int, cuda: bool) -> str:
    """gag-paper's eager step under each attention path — the PyTorch path's GPU policy, its old
    CPU policy (GAG_TORCH_POLICY=gpu / cpu with GAG_BACKEND=torch) and auto (the self-checked
    fused kernel) — next to bench/cost_model.py's estimate of what GAG adds per model call."""
    import cost_model
    from gag_core.kernels import backend_summary
    by_name = {c.name: c for c in cases}
    plain, paper = by_name["plain"], by_name["gag-paper"]
    roofline = cost_model.roofline_for(torch.cuda.get_device_name() if cuda else "H100")
    calls = cost_model.sdxl_paper_calls(batch, size, tokens, torch.float16)
    with torch.inference_mode():
        plain_ms = statistics.median(time_eager(plain, reps, warmup, cuda))
        scope = "" if cuda else ", for the full-size SDXL at this batch and size"
        lines = ["", f"### gag-paper by attention path (eager ms per step; estimate: cost model "
                     f"on the {roofline.name} roofline{scope})",
                 "", "| path | step ms | GAG adds ms | estimated adds ms |",
                 "| --- | --- | --- | --- |", f"| plain | {plain_ms:.2f} | — | — |"]
        paths = (("PyTorch, GPU policy", dict(torch_policy="gpu", backend="torch"), "gpu"),
                 ("PyTorch, old CPU policy", dict(torch_policy="cpu", backend="torch"), "cpu"),
                 ("auto (self-checked kernel)", dict(torch_policy="auto", backend="auto"), "fused"))
        for label, env, path in paths:
            with cost_model.gag_env(**env):
                step = statistics.median(time_eager(paper, reps, warmup, cuda))
            estimate = cost_model.model_call_estimate(calls, path, roofline) * 1e3
            lines.append(f"| {label} | {step:.2f} | {step - plain_ms:.2f} | {estimate:.2f} |")
    lines += ["", "Backend decisions: " + backend_summary().replace("\n", "; "), ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="See the module docstring for the cases.")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny SDXL on CPU, fp32, tiny latent, 2 repeats")
    parser.add_argument("--batch", type=int, default=2, help="images per model call (default 2)")
    parser.add_argument("--size", type=int, default=1024,
                        help="image side in pixels (default 1024)")
    parser.add_argument("--tokens", type=int, default=77, help="context tokens (default 77)")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed steps per case (default 20 on CUDA, 2 with --smoke; >= 10 "
                             "on CUDA)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default 3; 1 with --smoke)")
    parser.add_argument("--profile-steps", type=int, default=None,
                        help="steps under torch.profiler (default 5; 1)")
    parser.add_argument("--no-graphs", action="store_true", help="skip CUDA-graph capture")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown file to append to (default "
                             f"{DEFAULT_OUT.relative_to(REPO_ROOT)} on CUDA, none with --smoke)")
    add_comfyui_option(parser)
    args = parser.parse_args(argv)

    cuda = not args.smoke
    if cuda and not torch.cuda.is_available():
        sys.exit("bench_unet.py: the full-size run needs a CUDA GPU (torch.cuda.is_available() is "
                 "False); use --smoke for the tiny CPU run")
    reps = args.reps if args.reps is not None else (20 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    profile_steps = args.profile_steps if args.profile_steps is not None else (5 if cuda else 1)
    for name, value, low in (("--reps", reps, 10 if cuda else 1), ("--warmup", warmup, 0),
                             ("--profile-steps", profile_steps, 1), ("--batch", args.batch, 1),
                             ("--tokens", args.tokens, 1)):
        if value < low:
            parser.error(f"{name} must be >= {low}; got {value}")
    size = 256 if args.smoke else args.size
    if size % 64:
        parser.error(f"--size must be a multiple of 64 (SDXL's latent is size/8 and the UNet "
                     f"halves it three times); got {size}")
    out_path = args.out if args.out is not None else (DEFAULT_OUT if cuda else None)

    comfy_root = comfyui_path(args.comfyui)
    api = import_api(cpu=not cuda, path=comfy_root)
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(1)  # tiny tensors: threads cost more than they save
    dtype = torch.float16 if cuda else torch.float32
    patcher = build_sdxl(device, dtype) if cuda else build_tiny_sdxl()
    patcher.pre_run()  # what the sampler does first: the model's current_patcher is set
    model = patcher.model
    context_dim = model.model_config.unet_config["context_dim"]

    latent = size // 8
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 4, latent, latent, generator=g).to(device)
    sigma_value = float(model.model_sampling.percent_to_sigma(0.5))
    sigma = torch.full((args.batch,), sigma_value, device=device)
    positive = conditioning(context_dim, args.tokens, size, 10, device)
    negative = conditioning(context_dim, args.tokens, size, 20, device)
    positive, negative = sampler_conds(model, positive, negative, x, device)

    cases = build_cases(api, patcher, positive, negative, x, sigma, PACK)
    gag_paper = next(c for c in cases if c.name == "gag-paper")
    fidelity = check_sampler_fidelity(patcher, gag_paper.patcher, positive, x, sigma, PACK)
    check_no_repeated_keys(PACK, [positive, negative])
    outputs = measure(cases, PACK, reps=reps, warmup=warmup, profile_steps=profile_steps,
                      cuda=cuda, graphs=not args.no_graphs)
    nochk, paper = outputs["gag-paper-nochk"], outputs["gag-paper"]
    fidelity["nochk_vs_paper"] = float((nochk - paper).norm() / paper.norm().clamp(min=1e-30))

    y_dim = model.model_config.unet_config["adm_in_channels"]
    setup = {"model": ("comfy.supported_models.SDXL (its unet_config + SDXL structure)" if cuda else
                       "tiny SDXL (tests/comfy/tiny_models.py tiny_sdxl)"),
             "params": sum(p.numel() for p in model.diffusion_model.parameters()),
             "dtype": str(dtype).replace("torch.", ""), "batch": args.batch,
             "latent": f"4×{latent}×{latent} ({size}²)",
             "context": f"{args.tokens}×{context_dim}",
             "y": f"{y_dim} (pooled {POOLED_DIM} + {(y_dim - POOLED_DIM) // 256}×256 size "
                  "embeddings)",
             "sigma": sigma_value, "reps": reps, "warmup": warmup, "profile_steps": profile_steps}
    text = markdown(cases, environment(comfy_root, device), setup, fidelity, smoke=not cuda)
    text += policy_markdown(cases, args.batch, size, args.tokens, reps, warmup, cuda)
    print(text)
    if out_path is not None:
        write_markdown(text, out_path)
        print(f"appended to {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
