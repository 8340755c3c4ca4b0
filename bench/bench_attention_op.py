"""The GAG attention op alone: PyTorch SDPA vs the fused Triton GAG kernel vs the PyTorch GAG path.

    python bench/bench_attention_op.py               # CUDA: every shape, median of >= 10 timed
                                                     # calls after warm-up (CUDA events), peak
                                                     # memory; the PyTorch path under its GPU
                                                     # policy and under the old (CPU) policy,
                                                     # each next to bench/cost_model.py's
                                                     # estimate for this GPU; the self-check's
                                                     # decision per shape; markdown table to
                                                     # stdout and bench/results_attention_op.md
    python bench/bench_attention_op.py --smoke       # CPU, tiny shapes: SDPA and the PyTorch GAG
                                                     # path timed, the fused kernel run once
                                                     # through Triton's interpreter; checks the
                                                     # script end to end without a GPU
    python bench/bench_attention_op.py --roofline    # no device: bytes, FLOPs and time bounds
                                                     # per shape for an H100 (see KERNEL_NOTES.md)
    python bench/bench_attention_op.py --tune        # CUDA: the fused kernel under several block
                                                     # configurations, per shape
    python bench/bench_attention_op.py --cpu         # CPU: the PyTorch GAG path against SDPA at
                                                     # the four CPU_SHAPES, fp32, 2 threads,
                                                     # calls interleaved, median of 5: the
                                                     # GAG/SDPA ratio table

Options: --alpha A (default 1.5), --shapes NAME,... (default all), --no-torch-gag-above L (skip
the slow PyTorch GAG path when Lk exceeds L), --out FILE (markdown), --reps N (>= 10).
All shapes use the paper's λ = 10, η = 15, ζ = 0 and no mask; the fused kernel's cost does not
depend on λ, η, ζ.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import cost_model  # noqa: E402  (bench/cost_model.py: shapes, op trace, rooflines, gag_env)
from cost_model import Shape  # noqa: E402
from gag_core import gag_attention  # noqa: E402
from gag_core.kernels.config import SHORT_MAX_KEYS  # noqa: E402

GAG_PARAMS = dict(scale=10.0, eta=15.0, zeta=0.0)


def _flux_tokens(pixels: int) -> int:
    # FLUX: VAE /8, then 2×2 patches → (pixels/16)² image tokens, plus 512 T5 text tokens.
    return (pixels // 16) ** 2 + 512


SHAPES = [
    Shape("sdxl-cross", 2, 20, 1024, 77, 64, torch.float16,
          note="SDXL cross-attention at 1024² (32×32 latent tokens in the 2nd stage, 77 text keys)"),
    Shape("flux-joint-512", 1, 24, _flux_tokens(512), _flux_tokens(512), 128, torch.bfloat16,
          note="FLUX joint attention at 512² (1024 image + 512 text tokens)"),
    Shape("flux-joint-1024", 1, 24, _flux_tokens(1024), _flux_tokens(1024), 128, torch.bfloat16,
          note="FLUX joint attention at 1024² (4096 + 512 tokens)"),
    Shape("flux-joint-2048", 1, 24, _flux_tokens(2048), _flux_tokens(2048), 128, torch.bfloat16,
          note="FLUX joint attention at 2048² (16384 + 512 tokens)"),
    Shape("flux-text-1024", 1, 24, 4096, 512, 128, torch.bfloat16,
          note="FLUX image-query → text-key mode at 1024²"),
]

# The CPU ratio table (issue 14): what the default PyTorch path costs next to one SDPA call.
CPU_SHAPES = [
    Shape("sdxl-cross-1024", 2, 20, 1024, 77, 64, torch.float32,
          note="SDXL cross-attention at 1024² (32×32 tokens in the 2nd stage, 77 text keys)"),
    Shape("sdxl-cross-4096", 2, 10, 4096, 77, 64, torch.float32,
          note="SDXL cross-attention, 4096 image tokens (1st stage at 1024²)"),
    Shape("flux-text-256", 1, 24, 1024, 256, 128, torch.float32,
          note="FLUX image-query → text-key mode (1024 image tokens, 256 text keys)"),
    Shape("flux-joint-512", 1, 24, _flux_tokens(512) - 256, _flux_tokens(512) - 256, 128,
          torch.float32, note="FLUX joint attention at 512² with 256 text tokens (1280 tokens)"),
]

SMOKE_SHAPES = [
    Shape("sdxl-cross-tiny", 1, 2, 64, 77, 64, torch.float16, note="short-row kernel path"),
    Shape("flux-joint-tiny", 1, 1, 48, 320, 32, torch.bfloat16, note="streaming kernel path"),
]


def make_inputs(shape: Shape, device: str, seed: int = 0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dims = [(shape.lq, shape.d), (shape.lk, shape.d), (shape.lk, shape.d)]
    return [torch.randn(shape.batch, shape.heads, n, d, generator=gen).to(device, shape.dtype)
            for n, d in dims]


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp(min=1e-300)).item()


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------

def time_cuda(fn, reps: int) -> float:
    """Median milliseconds of `reps` calls, each between its own CUDA events, after warm-up
    (3 calls, and at least ~50 ms of them for fast ops). L2 is not flushed between calls."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    warm = 0
    while warm < 3 or (time.perf_counter() - start < 0.05 and warm < 200):
        fn()
        warm += 1
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def time_cpu(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_extra_mib(fn) -> float:
    """Peak CUDA memory allocated during one call, above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# ------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------

def _with_policy(policy: str, fn):
    """fn run with GAG_TORCH_POLICY=policy (the PyTorch path reads it on every call)."""
    def run():
        with cost_model.gag_env(torch_policy=policy):
            return fn()
    return run


def cost_estimates(shape: Shape, device_name: str) -> dict:
    """bench/cost_model.py's estimate (ms) of each path at ``shape`` on the roofline closest to
    ``device_name`` (H100 unless it names an A100 or a 4090)."""
    name = device_name.upper()
    roofline = cost_model.ROOFLINES["A100" if "A100" in name else
                                    "RTX4090" if "4090" in name else "H100"]
    model_shape = shape  # call 'attention': this bench times gag_attention
    out = {"roofline": roofline.name}
    out["torch_est"] = cost_model.price(cost_model.trace_gpu_policy(model_shape,
                                                                    roofline=roofline),
                                        roofline) * 1e3
    out["fused_est"] = cost_model.price(cost_model.fused_traffic(model_shape)[0], roofline) * 1e3
    out["sdpa_est"] = cost_model.price(cost_model.sdpa_traffic(model_shape), roofline) * 1e3
    if shape.lq * shape.lk * shape.heads <= 24 * 4608 * 4608:
        out["old_est"] = cost_model.price(cost_model.trace_cpu_policy(model_shape),
                                          roofline) * 1e3
    return out


def measure_gpu(shapes, alpha: float, reps: int, torch_gag_max_lk: int,
                estimates: bool = True) -> list[dict]:
    """Per shape: SDPA, the fused kernel, the PyTorch path under its GPU policy ("torch") and
    under the old CPU policy ("old"), "auto" (the self-check's choice), each timed; the cost
    model's estimates beside them; the self-check's decision line."""
    import torch.nn.functional as F
    from gag_core.kernels import selfcheck
    rows = []
    device_name = torch.cuda.get_device_name()
    for shape in shapes:
        q, k, v = make_inputs(shape, "cuda")
        ops = {
            "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
            "fused": lambda: gag_attention(q, k, v, alpha=alpha, backend="fused", **GAG_PARAMS),
            "torch": _with_policy("gpu", lambda: gag_attention(q, k, v, alpha=alpha,
                                                               backend="torch", **GAG_PARAMS)),
            "auto": lambda: gag_attention(q, k, v, alpha=alpha, backend="auto", **GAG_PARAMS),
        }
        if shape.lk <= torch_gag_max_lk:
            ops["old"] = _with_policy("cpu", lambda: gag_attention(q, k, v, alpha=alpha,
                                                                   backend="torch", **GAG_PARAMS))
        row = {"shape": shape}
        for name, fn in ops.items():
            row[f"{name}_ms"] = time_cuda(fn, reps)
            row[f"{name}_mib"] = peak_extra_mib(fn)
            print(f"  {shape.name} {name}: {row[f'{name}_ms']:.3f} ms", file=sys.stderr)
        row["err"] = relative_error(ops["fused"](), ops["torch"]())
        if "old" in ops:
            row["policy_err"] = relative_error(ops["torch"](), ops["old"]())
        row["decision"] = next((d.line() for d in selfcheck.decisions()
                                if d.key == selfcheck.check_key(q, k, v)), "no self-check ran")
        if estimates:
            row.update(cost_estimates(shape, device_name))
        rows.append(row)
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def measure_smoke(alpha: float, reps: int) -> list[dict]:
    """Tiny shapes on CPU: the same table, with the fused kernel run through the interpreter."""
    import torch.nn.functional as F
    from gag_core.kernels.interpret import InterpreterUnavailable, run_fused_in_interpreter
    rows = []
    for shape in SMOKE_SHAPES:
        q, k, v = make_inputs(shape, "cpu")
        row = {"shape": shape}
        row["sdpa_ms"] = time_cpu(lambda: F.scaled_dot_product_attention(q, k, v), reps)
        torch_fn = lambda: gag_attention(q, k, v, alpha=alpha, backend="torch", **GAG_PARAMS)
        row["torch_ms"] = time_cpu(torch_fn, reps)
        try:
            result = run_fused_in_interpreter([dict(q=q, k=k, v=v, mask=None, alpha=alpha,
                                                    **GAG_PARAMS)])[0]
        except InterpreterUnavailable as exc:
            print(f"  fused kernel skipped: {exc}", file=sys.stderr)
        else:
            if "error" in result:
                raise RuntimeError(f"fused kernel failed on {shape.name}:\n{result['error']}")
            row["fused_ms"] = result["seconds"] * 1e3
            row["err"] = relative_error(result["out"], torch_fn())
        rows.append(row)
        print(f"  {shape.name}: done", file=sys.stderr)
    return rows


def measure_cpu(shapes, alpha: float, reps: int, threads: int) -> list[dict]:
    """SDPA and the PyTorch GAG path on CPU, their calls interleaved (SDPA, GAG, SDPA, …) so that
    load from other processes hits both alike; median milliseconds of ``reps`` calls each."""
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    rows = []
    for shape in shapes:
        q, k, v = make_inputs(shape, "cpu")
        ops = {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
               "torch": lambda: gag_attention(q, k, v, alpha=alpha, backend="torch",
                                              **GAG_PARAMS)}
        for fn in ops.values():
            fn()  # warm-up
        times = {name: [] for name in ops}
        for _ in range(reps):
            for name, fn in ops.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
        row = {"shape": shape}
        row.update({f"{name}_ms": statistics.median(t) for name, t in times.items()})
        rows.append(row)
        print(f"  {shape.name}: SDPA {row['sdpa_ms']:.2f} ms, GAG {row['torch_ms']:.2f} ms "
              f"({row['torch_ms'] / row['sdpa_ms']:.1f}×)", file=sys.stderr)
    return rows


def cpu_ratio_table(rows: list[dict], alpha: float, threads: int, reps: int) -> list[str]:
    lines = [f"CPU, {threads} threads, torch {torch.__version__}; α = {alpha}, λ = 10, η = 15, "
             f"ζ = 0, no mask; wall time, calls interleaved, median of {reps}.", "",
             "| shape | (B, H, Lq, Lk, D) | SDPA ms | GAG ms | GAG / SDPA |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        s = row["shape"]
        lines.append(f"| {s.note} | ({s.batch}, {s.heads}, {s.lq}, {s.lk}, {s.d}) "
                     f"| {row['sdpa_ms']:.2f} | {row['torch_ms']:.2f} "
                     f"| {row['torch_ms'] / row['sdpa_ms']:.1f}× |")
    return lines


def tune_gpu(shapes, alpha: float, reps: int) -> list[str]:
    from gag_core.kernels.config import kernel_config
    from gag_core.kernels.triton_gag import fused_gag_attention
    lines = ["| shape | path | block_m | block_n | warps | stages | list_cap | ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for shape in shapes:
        q, k, v = make_inputs(shape, "cuda")
        base = kernel_config(shape.lq, shape.lk, shape.d, shape.d, shape.dtype)
        if base.path == "short":
            variants = [replace(base, block_m=m, num_warps=w) for m in (16, 32, 64)
                        for w in (4, 8)]
        else:
            variants = [replace(base, block_m=m, block_n=n, num_warps=w)
                        for m, n, w in ((64, 32, 4), (64, 64, 4), (64, 64, 8), (128, 32, 8),
                                        (128, 64, 8))]
            variants += [replace(base, list_cap=base.list_cap * 2)]
        for config in variants:
            fn = lambda: fused_gag_attention(q, k, v, alpha=alpha, mask=None, config=config,
                                             **GAG_PARAMS)
            try:
                ms = f"{time_cuda(fn, reps):.3f}"
            except Exception as exc:  # out of resources for a variant: report, go on
                ms = f"failed ({type(exc).__name__})"
            lines.append(f"| {shape.name} | {config.path} | {config.block_m} | {config.block_n} "
                         f"| {config.num_warps} | {config.num_stages} | {config.list_cap} "
                         f"| {ms} |")
            print(lines[-1], file=sys.stderr)
    return lines


def results_table(rows: list[dict], device: str, alpha: float, smoke: bool) -> list[str]:
    fused_head = "fused GAG, interpreter (ms)" if smoke else "fused GAG ms (× SDPA)"
    lines = [f"Device: {device}; α = {alpha}, λ = 10, η = 15, ζ = 0; "
             + ("CPU wall time, median" if smoke else "CUDA events, median of the timed calls")
             + ".", "",
             f"| shape | dims | SDPA ms | {fused_head} | torch GAG ms (× SDPA) "
             f"| peak extra MiB SDPA / fused / torch | fused vs torch rel. err |",
             "| --- | --- | --- | --- | --- | --- | --- |"]

    def cell(row, key):
        if f"{key}_ms" not in row:
            return "—"
        ms = row[f"{key}_ms"]
        if smoke and key == "fused":
            return f"{ms:.0f}"
        return f"{ms:.3f} ({ms / row['sdpa_ms']:.1f}×)"

    for row in rows:
        shape = row["shape"]
        mem = " / ".join(f"{row[f'{k}_mib']:.0f}" if f"{k}_mib" in row else "—"
                         for k in ("sdpa", "fused", "torch"))
        err = f"{row['err']:.1e}" if "err" in row else "—"
        lines.append(f"| {shape.name} | {shape.label} | {row['sdpa_ms']:.3f} | "
                     f"{cell(row, 'fused')} | {cell(row, 'torch')} | {mem} | {err} |")
    if not smoke and any("torch_est" in row or "old_ms" in row for row in rows):
        lines += policy_table(rows)
    return lines


def policy_table(rows: list[dict]) -> list[str]:
    """Measured next to estimated (bench/cost_model.py) for every path, and the self-check's
    decision: the first GPU run checks the cost model as well as the kernel."""
    roofline = next((row["roofline"] for row in rows if "roofline" in row), "H100")
    lines = ["", f"Measured vs estimated (cost model, {roofline} roofline), ms per call; "
             "torch = PyTorch path, GPU policy; old = PyTorch path, CPU policy (the release "
             "before issue 20); auto = what the self-check chose.", "",
             "| shape | SDPA meas / est | fused meas / est | torch meas / est | old meas / est "
             "| auto meas | torch vs old rel. err |",
             "| --- | --- | --- | --- | --- | --- | --- |"]

    def pair(row, key):
        meas = f"{row[f'{key}_ms']:.3f}" if f"{key}_ms" in row else "—"
        est = f"{row[f'{key}_est']:.3f}" if f"{key}_est" in row else "—"
        return f"{meas} / {est}"

    for row in rows:
        err = f"{row['policy_err']:.1e}" if "policy_err" in row else "—"
        auto = f"{row['auto_ms']:.3f}" if "auto_ms" in row else "—"
        lines.append(f"| {row['shape'].name} | {pair(row, 'sdpa')} | {pair(row, 'fused')} | "
                     f"{pair(row, 'torch')} | {pair(row, 'old')} | {auto} | {err} |")
    decisions = [row["decision"] for row in rows if "decision" in row]
    if decisions:
        lines += ["", "Self-check decisions:", ""] + [f"- {line}" for line in decisions]
    return lines


# ------------------------------------------------------------------------------------------
# Roofline
# ------------------------------------------------------------------------------------------

H100 = dict(hbm_bytes_s=3.0e12, tensor_flops_s=800e12, fp32_flops_s=60e12,
            mufu_s=132 * 16 * 1.83e9)
# Non-tensor work counted in instructions per score; one instruction ≈ 2 FLOP of the fp32
# FMA peak (adds, compares, selects and shuffles issue at the FMA rate but do 1 op).
OPS = dict(
    sdpa=8,          # scale, running max, subtract, convert, row sum, rescale share, cast P
    short_dense=8,   # scale (+mask), row max, subtract, row sum, cast P, divide share
    short_shift=4,   # subtract max, × (α−1), clamp twice
    short_iter=9,    # per τ step: x = z − τ, compare, select, Σx, Σx², count, min, shares
    short_sparse=6,  # x, max, square, row sum, cast P
    pass1=22,        # flash part (8) + candidate test (3) + cumsum over the block (~6)
                     # + slot, mask, store issue, count (5)
    pass2=12,        # scale (+mask), shift (4), x and clamp, square, row sum, cast P
    list_iter=14,    # per list entry per τ step: load, shift (4), the 9 of short_iter
)


def simulate_tau_work(lk: int, head_dim: int, alpha: float, rows: int = 64,
                      block_n: int = 32, seed: int = 0) -> dict:
    """On random N(0, 1) q, k (as the benchmark uses), for one tile of `rows` queries: mean
    candidate-list length (scores within 1/(α−1) of the running max, as the streaming kernel
    appends them), mean final candidates, and the τ steps the tile needs (max over rows),
    using the kernel's own update rule re-expressed in PyTorch."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(rows, head_dim, generator=gen)
    k = torch.randn(lk, head_dim, generator=gen)
    s = q @ k.T / math.sqrt(head_dim)
    running = torch.cummax(s.reshape(rows, -1), dim=1).values
    block_max = running[:, torch.clamp(torch.arange(lk) // block_n * block_n + block_n - 1,
                                       max=lk - 1)]
    listed = ((alpha - 1) * (s - block_max) > -1).sum(1).float().mean().item()
    z = ((alpha - 1) * (s - s.amax(1, keepdim=True))).clamp(-1, 0)
    final = (z > -1).sum(1).float().mean().item()
    return dict(listed=listed, final=final, steps=_tau_steps(z, alpha))


def _tau_steps(z: torch.Tensor, alpha: float, max_steps: int = 64) -> int:
    tau = torch.full(z.shape[:1], -1.0)
    done = torch.zeros(z.shape[:1], dtype=torch.bool)
    p = 1 / (alpha - 1)
    for step in range(1, max_steps + 1):
        x = z - tau[:, None]
        above = x > 0
        xa = torch.where(above, x, 0)
        count, sx, sx2 = above.sum(1).float(), xa.sum(1), (xa * xa).sum(1)
        small = torch.where(above, x, math.inf).amin(1)
        if alpha == 1.5:
            f = sx2 - 1
            disc = sx * sx - count * f
            root = f / (sx + disc.clamp(min=0).sqrt())
            exact = (disc >= 0) & (root <= small)
            f_at = f - 2 * sx * small + count * small * small
            slope = 2 * (sx - count * small)
            jump = torch.where(slope > 0, small + f_at / slope.clamp(min=1e-30), small)
            move = torch.where(exact, root, torch.maximum(jump, f / (2 * sx).clamp(min=1e-30)))
        elif alpha == 2.0:
            f = sx - 1
            root = f / count.clamp(min=1)
            exact = root <= small
            jump = small + (sx - count * small - 1) / (count - 1).clamp(min=1)
            move = torch.where(exact, root, torch.maximum(small, jump))
        else:
            xp = torch.where(above, x.clamp(min=1e-30) ** p, 0)
            f = xp.sum(1) - 1
            move = f / (p * torch.where(above, xp / x.clamp(min=1e-30), 0).sum(1)).clamp(1e-30)
            exact = f <= 0
        settled = exact | (f <= 0) | (move < 1e-7)
        tau = torch.where(done | (f <= 0), tau, tau + move)
        done |= settled
        if bool(done.all()):
            return step
    return max_steps


def roofline(shape: Shape, alpha: float) -> dict:
    short_path = shape.lk <= SHORT_MAX_KEYS
    elt = shape.dtype.itemsize
    d = shape.d
    scores = shape.batch * shape.heads * shape.lq * shape.lk
    rows = shape.batch * shape.heads * shape.lq
    io_bytes = elt * shape.batch * shape.heads * (2 * shape.lq * d + 2 * shape.lk * d)
    sdpa = dict(bytes=io_bytes, tensor=4 * scores * d, ops=OPS["sdpa"] * scores, mufu=scores)
    if short_path:
        padded = rows * max(16, 1 << (shape.lk - 1).bit_length())
        work = simulate_tau_work(shape.lk, d, alpha, block_n=padded // rows)
        ops = padded * (OPS["short_dense"] + OPS["short_shift"]
                        + work["steps"] * OPS["short_iter"] + OPS["short_sparse"])
        fused = dict(bytes=io_bytes, tensor=6 * padded * d, ops=ops, mufu=padded, **work)
    else:
        work = simulate_tau_work(shape.lk, d, alpha)
        list_ops = rows * work["listed"] * work["steps"] * OPS["list_iter"]
        fused = dict(bytes=io_bytes + rows * work["listed"] * 4,  # list writes (L2-resident)
                     tensor=8 * scores * d, ops=(OPS["pass1"] + OPS["pass2"]) * scores + list_ops,
                     mufu=scores, **work)
    for model in (sdpa, fused):
        model["t_hbm"] = model["bytes"] / H100["hbm_bytes_s"] * 1e3
        model["t_tensor"] = model["tensor"] / H100["tensor_flops_s"] * 1e3
        model["t_alu"] = model["ops"] * 2 / H100["fp32_flops_s"] * 1e3
        model["t_mufu"] = model["mufu"] / H100["mufu_s"] * 1e3
        model["bound"] = max(model["t_hbm"], model["t_tensor"], model["t_alu"] + model["t_mufu"])
        model["serial"] = model["t_hbm"] + model["t_tensor"] + model["t_alu"] + model["t_mufu"]
    return dict(shape=shape, scores=scores, sdpa=sdpa, fused=fused)


def roofline_table(shapes, alpha: float) -> list[str]:
    lines = [f"H100 model: HBM {H100['hbm_bytes_s'] / 1e12:.1f} TB/s, tensor "
             f"{H100['tensor_flops_s'] / 1e12:.0f} TFLOP/s (bf16/fp16 dense), fp32 non-tensor "
             f"{H100['fp32_flops_s'] / 1e12:.0f} TFLOP/s (= {H100['fp32_flops_s'] / 2e12:.0f} T "
             f"simple ops/s), exp2 (MUFU) {H100['mufu_s'] / 1e12:.1f} T/s; α = {alpha}. "
             "Times in ms: bound = max(HBM, tensor, ALU + MUFU); serial = their sum.", "",
             "| shape | scores | op | HBM MB | tensor GFLOP | ALU Gop | exp G | t_HBM | "
             "t_tensor | t_ALU | t_MUFU | bound | serial | list len / final cand. / τ steps |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
             "| --- |"]
    for shape in shapes:
        r = roofline(shape, alpha)
        for name in ("sdpa", "fused"):
            m = r[name]
            extra = (f"{m['listed']:.0f} / {m['final']:.0f} / {m['steps']}"
                     if "listed" in m and shape.lk > 256 else
                     (f"— / {m['final']:.0f} / {m['steps']}" if "steps" in m else ""))
            op = "SDPA" if name == "sdpa" else "fused GAG"
            lines.append(
                f"| {shape.name} | {r['scores'] / 1e6:.1f} M | {op} "
                f"| {m['bytes'] / 1e6:.1f} | {m['tensor'] / 1e9:.1f} | {m['ops'] / 1e9:.2f} "
                f"| {m['mufu'] / 1e9:.2f} | {m['t_hbm']:.4f} | {m['t_tensor']:.4f} "
                f"| {m['t_alu']:.4f} | {m['t_mufu']:.4f} | {m['bound']:.4f} | {m['serial']:.4f} "
                f"| {extra} |")
    return lines


# ------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny shapes on CPU")
    mode.add_argument("--roofline", action="store_true", help="H100 estimates, no device")
    mode.add_argument("--tune", action="store_true", help="fused kernel block configurations")
    mode.add_argument("--cpu", action="store_true",
                      help="CPU ratio table: PyTorch GAG path / SDPA at the CPU shapes")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for --cpu")
    parser.add_argument("--alpha", type=float, default=1.5)
    parser.add_argument("--shapes", default="", help="comma-separated shape names")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed calls per op (default 20 on CUDA, 5 with --cpu)")
    parser.add_argument("--no-torch-gag-above", type=int, default=20000, metavar="LK",
                        help="skip the PyTorch GAG path for Lk above this")
    parser.add_argument("--out", default=None, help="markdown file (default: "
                        "bench/results_attention_op.md for GPU runs, none otherwise)")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 5 if args.cpu else 20
    if args.reps < (5 if args.cpu else 10):
        parser.error(f"--reps must be >= 10 (>= 5 with --cpu); got {args.reps}")
    if not 1.0 < args.alpha <= 2.0:
        parser.error(f"--alpha must be in (1, 2]; got {args.alpha}")
    shapes = CPU_SHAPES if args.cpu else SHAPES
    if args.shapes:
        known = {s.name: s for s in SHAPES + SMOKE_SHAPES + CPU_SHAPES}
        unknown = [n for n in args.shapes.split(",") if n not in known]
        if unknown:
            parser.error(f"unknown shape(s) {unknown}; choose from {sorted(known)}")
        shapes = [known[n] for n in args.shapes.split(",")]

    if args.roofline:
        lines = roofline_table(shapes, args.alpha)
    elif args.cpu:
        rows = measure_cpu(shapes, args.alpha, args.reps, args.threads)
        lines = cpu_ratio_table(rows, args.alpha, args.threads, args.reps)
    elif args.smoke:
        lines = results_table(measure_smoke(args.alpha, args.reps), "CPU (smoke: tiny shapes; "
                              "fused kernel through TRITON_INTERPRET)", args.alpha, smoke=True)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: use --smoke (CPU check) or --roofline (estimates)",
                  file=sys.stderr)
            return 2
        device = torch.cuda.get_device_name()
        if args.tune:
            lines = [f"Device: {device}", ""] + tune_gpu(shapes, args.alpha, args.reps)
        else:
            rows = measure_gpu(shapes, args.alpha, args.reps, args.no_torch_gag_above)
            lines = results_table(rows, device, args.alpha, smoke=False)
            args.out = args.out or str(REPO_ROOT / "bench" / "results_attention_op.md")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
