"""GAG on joint-attention DiTs: cost at full size (GPU) and effect on tiny models (CPU).

    python bench/bench_dit.py                 # full-size FLUX.1-dev, random weights, CUDA:
                                              # one denoiser step plain / GAG text / GAG joint,
                                              # time and peak memory
    python bench/bench_dit.py --smoke         # the same measurement on a tiny FLUX on CPU
    python bench/bench_dit.py --effect        # tiny models of every family on CPU: how much
                                              # each mode and preset changes the attention
                                              # outputs and the sampled latent

Needs ComfyUI ($COMFYUI_PATH or ~/ComfyUI). The full-size model is FLUX.1-dev's real
architecture (comfy.supported_models.Flux; hidden 3072, 24 heads, 19 double + 38 single blocks,
T5 context 4096, pooled 768) with random weights in bfloat16: timings are those of the real
model, its outputs are noise. 1024² is 4096 image tokens + 512 text tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_env import add_comfyui_option, import_api  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK = "comfyui_gag"

FLUX_DEV = dict(image_model="flux", guidance_embed=True, in_channels=16, out_channels=16,
                vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
                num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
                theta=10000, patch_size=2, qkv_bias=True)
FLUX_TINY = dict(FLUX_DEV, vec_in_dim=32, context_in_dim=48, hidden_size=64, mlp_ratio=2.0,
                 num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6])


def flux_model_config(config: dict):
    """ComfyUI's model config for a FLUX.1-dev architecture of ``config``'s sizes. ComfyUI's own
    detection, run on the checkpoint key names, fills in the fields each release needs (0.33 added
    txt_ids_dims); ``config`` sets the sizes."""
    import comfy.model_detection as md
    hidden, head = config["hidden_size"], config["hidden_size"] // config["num_heads"]
    shapes = {"img_in.weight": (hidden, config["in_channels"] * 4),
              "txt_in.weight": (hidden, config["context_in_dim"]),
              "vector_in.in_layer.weight": (hidden, config["vec_in_dim"]),
              "guidance_in.in_layer.weight": (hidden, 256)}
    shapes.update({f"double_blocks.{i}.img_attn.norm.key_norm.scale": (head,)
                   for i in range(config["depth"])})
    shapes.update({f"single_blocks.{i}.norm.key_norm.scale": (head,)
                   for i in range(config["depth_single_blocks"])})
    keys = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    return md.model_config_from_unet_config(dict(md.detect_unet_config(keys, ""), **config), keys)


def build_flux(config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A ModelPatcher around FLUX.1-dev's architecture with random weights (norm gains 1)."""
    import comfy.model_patcher
    model_config = flux_model_config(config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device=device)
    model.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for module in model.diffusion_model.modules():
            for p in module.parameters(recurse=False):
                if "norm" in type(module).__name__.lower():
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=generator, device=device,
                                        dtype=torch.float32).mul_(0.02).to(p.dtype))
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def denoiser_step(patcher, x, sigma, context, pooled, guidance):
    """One model call as the sampler makes it: the patcher's transformer_options with its
    wrappers and callbacks merged in, as ComfyUI's sampler_helpers.prepare_model_patcher does
    (GAG's per-model-call wrapper, which notes the text length, is one of them)."""
    import comfy.patcher_extension as extension
    options = extension.copy_nested_dicts(patcher.model_options.get("transformer_options", {}))
    extension.merge_nested_dicts(options.setdefault("wrappers", {}), patcher.wrappers,
                                 copy_dict1=False)
    extension.merge_nested_dicts(options.setdefault("callbacks", {}), patcher.callbacks,
                                 copy_dict1=False)
    options.update(sigmas=sigma, cond_or_uncond=[0] * x.shape[0])
    return patcher.model.apply_model(x, sigma, c_crossattn=context, y=pooled, guidance=guidance,
                                     transformer_options=options)


def time_modes(api, patcher, *, size: int, text_tokens: int, repeats: int, layers: str,
               device: torch.device, dtype: torch.dtype):
    """Median step time of plain and of each GAG mode under each attention path (the PyTorch
    path's GPU policy, its old CPU policy, auto = the self-checked fused kernel), with the
    cost model's estimate of the added time per model call next to the measured one."""
    latent = size // 8
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(1, 16, latent, latent, generator=g).to(device)
    context = torch.randn(1, text_tokens, patcher.model.diffusion_model.params.context_in_dim,
                          generator=g).to(device, dtype)
    pooled = torch.randn(1, patcher.model.diffusion_model.params.vec_in_dim, generator=g).to(device, dtype)
    guidance = torch.full((1,), 3.5, device=device)
    sigma = torch.full((1,), 0.8, device=device)
    import cost_model
    patched = {"text": api.apply_gag(patcher, layers=layers, mode="text"),
               "joint": api.apply_gag(patcher, layers=layers, mode="joint")}
    # Each mode under the PyTorch path's GPU policy, its old (CPU) policy, and "auto" (the
    # fused kernel where its self-check keeps it): GAG_TORCH_POLICY / GAG_BACKEND per variant.
    variants = {"plain": (patcher, {})}
    for mode, variant in patched.items():
        variants[f"{mode}/torch-gpu-policy"] = (variant, dict(torch_policy="gpu",
                                                              backend="torch"))
        variants[f"{mode}/torch-old-policy"] = (variant, dict(torch_policy="cpu",
                                                              backend="torch"))
        variants[f"{mode}/auto"] = (variant, dict(torch_policy="auto", backend="auto"))
    cuda = device.type == "cuda"
    roofline = cost_model.roofline_for(torch.cuda.get_device_name() if cuda else "H100")
    results = {}
    with torch.inference_mode():
        reference = None
        for name, (variant, env) in variants.items():
            with cost_model.gag_env(**env):
                for _ in range(2):  # warm-up: kernels, allocator
                    out = denoiser_step(variant, x, sigma, context, pooled, guidance)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base_memory = torch.cuda.memory_allocated()
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    out = denoiser_step(variant, x, sigma, context, pooled, guidance)
                    if cuda:
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
                entry = {"median_s": statistics.median(times), "min_s": min(times)}
                if cuda:
                    entry["peak_extra_GiB"] = (torch.cuda.max_memory_allocated() - base_memory) / 2**30
                if reference is None:
                    reference = out.float()
                else:
                    entry["rel_change_of_output"] = float((out.float() - reference).norm() / reference.norm())
                results[name] = entry
    plain = results["plain"]["median_s"]
    for entry in results.values():
        entry["vs_plain"] = entry["median_s"] / plain
    # The cost model's estimate of what GAG adds per model call (paper layers), beside the
    # measured addition: the first GPU run checks the model as well as the code.
    if layers == "paper":
        dtype_est = dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        for mode in ("text", "joint"):
            calls = cost_model.flux_calls(size, text_tokens, mode, dtype_est)
            for suffix, path in (("torch-gpu-policy", "gpu"), ("torch-old-policy", "cpu"),
                                 ("auto", "fused")):
                entry = results[f"{mode}/{suffix}"]
                entry["added_s"] = entry["median_s"] - plain
                if cuda or path != "cpu":
                    entry["estimated_added_s"] = cost_model.model_call_estimate(calls, path,
                                                                                roofline)
                    entry["estimate_roofline"] = roofline.name
    return results


def run_timing(args):
    cuda = not args.smoke
    if cuda and not torch.cuda.is_available():
        sys.exit("full-size timing needs a CUDA GPU; use --smoke for the tiny CPU run")
    api = import_api(cpu=not cuda, path=args.comfyui)
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    config = FLUX_TINY if args.smoke else FLUX_DEV
    size = 128 if args.smoke else args.size
    text_tokens = 20 if args.smoke else args.text_tokens
    patcher = build_flux(config, device, dtype)
    results = time_modes(api, patcher, size=size, text_tokens=text_tokens,
                         repeats=args.repeats, layers=args.layers, device=device, dtype=dtype)
    report = {"model": "FLUX.1-dev (tiny)" if args.smoke else "FLUX.1-dev", "size": size,
              "image_tokens": (size // 16) ** 2, "text_tokens": text_tokens, "layers": args.layers,
              "device": torch.cuda.get_device_name() if cuda else "cpu", "dtype": str(dtype),
              "results": results}
    print(json.dumps(report, indent=2))


# --- effect on tiny models ---------------------------------------------------------------------

class _AttentionDelta:
    """Wraps the ``guide`` step of GAG's override: relative change GAG makes to each guided
    attention output, split into text-query rows and image-query rows."""

    def __init__(self, override):
        self.inner = override.guide
        override.guide = self
        self.image, self.text = [], []

    def __call__(self, layer, call, text_tokens, scale, func, args, kwargs):
        out = self.inner(layer, call, text_tokens, scale, func, args, kwargs)
        guided = call.output_to_heads(out).float()
        plain = call.output_to_heads(func(*args, **kwargs)).float()
        t = text_tokens if text_tokens is not None else 0
        for rows, into in ((slice(t, None), self.image), (slice(0, t), self.text)):
            ref = plain[:, :, rows].norm()
            if ref > 0:
                into.append(float((guided[:, :, rows] - plain[:, :, rows]).norm() / ref))
        return out


def run_effect(args):
    api = import_api(cpu=True, path=args.comfyui)
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO_ROOT / "tests" / "comfy"))
    import tiny_models as tm
    families = {name: spec for name, spec in tm.DIT_FAMILIES.items() if name != "flux_schnell"}
    presets = {"flux": ["double", "single", "paper"], "chroma": ["double", "single", "paper"]}
    rows = []
    for name, (builder, conditioning, kwargs, _) in families.items():
        kwargs = dict(dict(size=16, steps=4), **kwargs)
        for preset in presets.get(name, ["paper"]):
            for mode in ("text", "joint"):
                latent_change, image_rows, text_rows, seconds = [], [], [], []
                for seed in range(args.seeds):
                    patcher = builder(seed)
                    cond, uncond = conditioning(seed=10 + seed), conditioning(seed=20 + seed)
                    start = time.process_time()
                    plain = tm.sample_dit(patcher, cond, uncond, seed=seed, **kwargs)
                    plain_s = time.process_time() - start
                    patched = api.apply_gag(patcher, layers=preset, mode=mode)
                    start = time.process_time()
                    guided = tm.sample_dit(patched, cond, uncond, seed=seed, **kwargs)
                    seconds.append((time.process_time() - start) / plain_s)
                    measured = api.apply_gag(patcher, layers=preset, mode=mode)
                    delta = _AttentionDelta(
                        measured.model_options["transformer_options"]["optimized_attention_override"])
                    tm.sample_dit(measured, cond, uncond, seed=seed, **kwargs)
                    latent_change.append(float((guided - plain).norm() / plain.norm()))
                    image_rows += delta.image
                    text_rows += delta.text
                rows.append({"family": name, "preset": preset, "mode": mode,
                             "latent_rel_change": statistics.mean(latent_change),
                             "attn_image_rows_rel_change": statistics.mean(image_rows),
                             "attn_text_rows_rel_change": statistics.mean(text_rows) if text_rows else 0.0,
                             "cpu_time_vs_plain": statistics.mean(seconds)})
    print(f"{'family':11} {'preset':7} {'mode':5} {'latent Δ':>9} {'attn img Δ':>11} "
          f"{'attn txt Δ':>11} {'cpu ×':>6}")
    for r in rows:
        print(f"{r['family']:11} {r['preset']:7} {r['mode']:5} {r['latent_rel_change']:9.3f} "
              f"{r['attn_image_rows_rel_change']:11.3f} {r['attn_text_rows_rel_change']:11.3f} "
              f"{r['cpu_time_vs_plain']:6.2f}")
    if args.json:
        print(json.dumps(rows, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny FLUX on CPU")
    parser.add_argument("--effect", action="store_true", help="effect of modes on tiny models")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (GPU run)")
    parser.add_argument("--text-tokens", type=int, default=512, help="T5 tokens (GPU run)")
    parser.add_argument("--layers", default="paper", help="GAG layer preset or selection")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3, help="models per family (--effect)")
    parser.add_argument("--json", action="store_true", help="also print the --effect rows as JSON")
    add_comfyui_option(parser)
    args = parser.parse_args()
    if args.effect:
        run_effect(args)
    else:
        run_timing(args)


if __name__ == "__main__":
    main()
