"""Validate the fused GAG kernel: the gate for ``FUSED_BY_DEFAULT`` (gag_core/kernels).

    python bench/validate_kernel.py               # CUDA: every check below, then the timing
                                                  # table; exit status 1 on any failure
    python bench/validate_kernel.py --interpret   # CPU: the small cases through Triton's
                                                  # interpreter (what CI runs, via
                                                  # tests/core/test_kernel_interpret.py)
    python bench/validate_kernel.py --no-timing   # CUDA: checks only

Checks (each case against gag_attention(..., backend="torch") in float64 on the same rounded
inputs, relative Frobenius error within the dtype's tolerance; fully masked query rows exactly 0):

1. every small case (short and streaming paths, α ∈ {1.5, 2, 1.25, 1.75}, masks, strided
   views, ties, capped η, the custom operator under torch.compile) on the device;
2. run-to-run determinism: the same call twice gives bitwise equal outputs;
3. big shapes: FLUX joint 1024² (L 4608, bf16), a partial last tile (FLUX 832×1216: Lq 4464),
   flat rows (score std 0.5 at Lk 4608), a forced list overflow (the recompute fallback) and
   SDXL cross-attention with a keep-mask; the list cases must keep τ on the lists (no tile
   falls back) and the forced one must fall back on every tile;
4. the same cases through the PyTorch path under its GPU policy (GAG_TORCH_POLICY=gpu);
5. the timing table against SDPA (bench/bench_attention_op.py's GPU shapes): the fused kernel,
   the PyTorch path under its GPU policy and under the old CPU policy, and ``auto`` (the
   self-check's choice, whose decision is printed), each next to bench/cost_model.py's
   estimate for this GPU.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from gag_core import gag_attention, normalize_mask  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
# Small blocks for the streaming kernel: 16-query tiles, 32-key blocks, 2 persistent programs.
# A list never holds more than Lk entries, so list_cap = 320 ≥ Lk = 300 guarantees that τ comes
# from the candidate lists; the overflow cases set list_cap = 16, far below the candidates a
# 300-key random row has at these α, so τ comes from the score-recomputing fallback.
SMALL_STREAM = dict(block_m=16, block_n=32, list_block=16, list_cap=320, num_programs=2)
# Flat rows: q·k/√D of std 0.5 over 1200 keys (0.25 for α = 2, whose band is half as wide).
FLAT_KEYS, FLAT_GAIN = 1200, 0.5


def _qkv(gen, b, h, lq, lk, d, dv, dtype, q_gain=1.0):
    q = torch.randn(b, h, lq, d, generator=gen, dtype=torch.float64) * q_gain
    k = torch.randn(b, h, lk, d, generator=gen, dtype=torch.float64)
    v = torch.randn(b, h, lk, dv, generator=gen, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _keep_mask(gen, shape, drop=0.3):
    keep = torch.rand(shape, generator=gen) > drop
    keep[..., 0, :] = False  # one fully masked query row: its output must be zeros, not NaN
    return keep


def _additive_mask(gen, shape, dtype):
    bias = torch.randn(shape, generator=gen, dtype=torch.float64)
    bias[torch.rand(shape, generator=gen) < 0.25] = -math.inf
    bias[..., 1, :] = -math.inf
    return bias.to(dtype)


def small_cases() -> dict[str, dict]:
    """The cases the CPU interpreter runs in CI (seconds each there); on CUDA the same cases
    run on the GPU."""
    gen = torch.Generator().manual_seed(1234)
    cases: dict[str, dict] = {}

    def add(name, q, k, v, *, mask=None, alpha=1.5, scale=10.0, eta=15.0, zeta=0.0, path="auto",
            config=None, compile=False, expect=None):
        mask = normalize_mask(mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        cases[name] = dict(q=q, k=k, v=v, mask=mask, alpha=alpha, scale=scale, eta=eta,
                           zeta=zeta, path=path, config=config, compile=compile,
                           stats=expect is not None, expect=expect)

    # Short rows (whole row in registers), the kernel's own block sizes.
    for dtype in TOLERANCE:
        for alpha in (1.5, 2.0, 1.25, 1.75):
            add(f"short-{str(dtype)[6:]}-alpha{alpha}", *_qkv(gen, 1, 2, 40, 77, 64, 64, dtype),
                alpha=alpha)
    q, k, v = _qkv(gen, 2, 2, 24, 77, 32, 32, torch.float16)
    add("short-fp16-keepmask", q, k, v, mask=_keep_mask(gen, (2, 1, 24, 77)))
    q, k, v = _qkv(gen, 1, 2, 24, 77, 32, 32, torch.bfloat16)
    add("short-bf16-addmask-alpha2", q, k, v, mask=_additive_mask(gen, (24, 77), torch.bfloat16),
        alpha=2.0)
    q, k, v = _qkv(gen, 1, 2, 24, 154, 32, 32, torch.float32)
    add("short-fp32-addmask-alpha1.25", q, k, v,
        mask=_additive_mask(gen, (1, 24, 154), torch.float32), alpha=1.25)
    add("short-fp16-lk231", *_qkv(gen, 1, 1, 20, 231, 64, 64, torch.float16))
    add("short-fp32-lk1", *_qkv(gen, 1, 2, 20, 1, 32, 32, torch.float32))
    # Under torch.compile(fullgraph=True): the custom operator must not break the graph.
    add("short-fp16-compiled", *_qkv(gen, 1, 2, 20, 77, 32, 32, torch.float16), compile=True)
    # ComfyUI hands (B, L, H·D) projections reshaped to (B, L, H, D) and permuted: strided views.
    base_q = torch.randn(2, 30, 3, 40, generator=gen).to(torch.float16)
    base_k = torch.randn(2, 77, 3, 40, generator=gen).to(torch.float16)
    base_v = torch.randn(2, 77, 3, 24, generator=gen).to(torch.float16)
    add("short-fp16-strided-d40-dv24", base_q.permute(0, 2, 1, 3), base_k.permute(0, 2, 1, 3),
        base_v.permute(0, 2, 1, 3))
    q, k, v = _qkv(gen, 1, 2, 24, 77, 32, 32, torch.float32)
    add("short-fp32-pladis", q, k, v, scale=3.0, eta=math.inf, zeta=1.0)
    add("short-fp32-dense-only", q, k, v, scale=-1.0, eta=math.inf, zeta=1.0)
    add("short-fp32-sparse-only", q, k, v, scale=0.0)
    add("short-fp32-peaked-capped", *_qkv(gen, 1, 2, 24, 77, 32, 32, torch.float32, q_gain=30.0),
        eta=0.5, zeta=0.3)
    # Exact score ties: every key appears three times.
    q, k, v = _qkv(gen, 1, 2, 24, 25, 32, 32, torch.float32)
    k, v = k.repeat(1, 1, 3, 1), v.repeat(1, 1, 3, 1)
    add("short-fp32-ties-alpha1.5", q, k, v)
    add("short-fp32-ties-alpha2", q, k, v, alpha=2.0)

    # Long rows (streaming kernel), forced onto small shapes.
    add("stream-fp32-alpha1.5", *_qkv(gen, 1, 2, 24, 300, 32, 32, torch.float32),
        path="stream", config=SMALL_STREAM, expect="lists")
    q, k, v = _qkv(gen, 1, 1, 24, 300, 32, 32, torch.float16)
    add("stream-fp16-keepmask-alpha2", q, k, v, mask=_keep_mask(gen, (24, 300)), alpha=2.0,
        path="stream", config=SMALL_STREAM)
    q, k, v = _qkv(gen, 1, 1, 24, 300, 32, 32, torch.bfloat16)
    add("stream-bf16-addmask-alpha1.25", q, k, v,
        mask=_additive_mask(gen, (1, 1, 24, 300), torch.bfloat16), alpha=1.25, path="stream",
        config=SMALL_STREAM)
    overflow = dict(SMALL_STREAM, list_cap=16)
    add("stream-fp32-overflow-alpha1.75", *_qkv(gen, 1, 1, 24, 300, 32, 32, torch.float32),
        alpha=1.75, path="stream", config=overflow, expect="fallback")
    add("stream-fp16-overflow-alpha1.5", *_qkv(gen, 1, 1, 24, 300, 32, 32, torch.float16),
        path="stream", config=overflow, expect="fallback")
    # Keys whose scale grows along the row: the running maximum keeps rising, so early list
    # entries fall out of the final candidate band.
    q, k, v = _qkv(gen, 1, 1, 24, 300, 32, 32, torch.float64)
    k = (k * torch.linspace(0.2, 2.0, 300, dtype=torch.float64)[:, None]).to(torch.float32)
    add("stream-fp32-rising-max", q.float(), k, v.float(), path="stream", config=SMALL_STREAM)
    # The kernel's own streaming block sizes (auto path: Lk > 256).
    add("stream-fp16-default-config", *_qkv(gen, 1, 1, 70, 300, 64, 64, torch.float16),
        expect="lists")
    # A partial last query tile (65 = 64 + 1 rows): the 63 padded rows must not list keys.
    add("stream-fp32-partial-tile", *_qkv(gen, 1, 1, 65, 600, 32, 32, torch.float32),
        expect="lists")
    # Flat heads: scores of std 0.5 put most keys within 1/(α−1) of the row maximum, far more
    # than the lists hold; the lower-bound cut must keep τ on the lists.
    add("stream-fp32-flat", *_qkv(gen, 1, 1, 16, FLAT_KEYS, 32, 32, torch.float32,
                                  q_gain=FLAT_GAIN), expect="lists")
    add("stream-fp16-flat-alpha2", *_qkv(gen, 1, 1, 16, FLAT_KEYS, 32, 32, torch.float16,
                                         q_gain=FLAT_GAIN / 2), alpha=2.0, expect="lists")
    return cases



def big_cases() -> dict[str, dict]:
    """Full-size shapes for the GPU (far too slow for the interpreter)."""
    gen = torch.Generator().manual_seed(4321)
    cases: dict[str, dict] = {}

    def add(name, q, k, v, *, mask=None, alpha=1.5, config=None, expect=None):
        mask = normalize_mask(mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        cases[name] = dict(q=q, k=k, v=v, mask=mask, alpha=alpha, scale=10.0, eta=15.0,
                           zeta=0.0, path="auto", config=config, compile=False, stats=True,
                           expect=expect)

    add("flux-joint-4608-bf16", *_qkv(gen, 1, 24, 4608, 4608, 128, 128, torch.bfloat16),
        expect="lists")
    add("flux-partial-tile-4464-bf16", *_qkv(gen, 1, 24, 4464, 4464, 128, 128, torch.bfloat16),
        expect="lists")
    add("flat-rows-4608-bf16", *_qkv(gen, 1, 4, 512, 4608, 128, 128, torch.bfloat16,
                                      q_gain=0.5), expect="lists")
    add("forced-fallback-fp16", *_qkv(gen, 1, 2, 256, 2048, 64, 64, torch.float16),
        config=dict(list_cap=16), expect="fallback")
    q, k, v = _qkv(gen, 2, 20, 1024, 77, 64, 64, torch.float16)
    add("sdxl-cross-keepmask-fp16", q, k, v, mask=_keep_mask(gen, (2, 1, 1024, 77)))
    return cases


def _policy(value: str):
    """Context: GAG_TORCH_POLICY set to ``value`` (the PyTorch path reads it on every call);
    bench/cost_model.py's gag_env."""
    if str(REPO_ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "bench"))
    import cost_model
    return cost_model.gag_env(torch_policy=value)


def reference64(case, device: str = "cpu") -> torch.Tensor:
    """gag_attention's PyTorch path in float64 on the case's (already rounded) inputs, computed
    on ``device`` (the GPU for the big shapes: float64 on a CPU would take minutes), on CPU.
    Always the CPU policy (Newton to convergence), so the reference does not depend on the GPU
    policy that this command also checks."""
    mask = case["mask"]
    if mask is not None:
        mask = (mask if mask.dtype == torch.bool else mask.double()).to(device)
    q, k, v = (case[n].to(device, torch.float64) for n in ("q", "k", "v"))
    with _policy("cpu"):
        return gag_attention(q, k, v, scale=case["scale"], eta=case["eta"], zeta=case["zeta"],
                             alpha=case["alpha"], mask=mask, backend="torch").cpu()


def run_gpu_policy(cases: dict[str, dict], device: str = "cuda") -> list[dict]:
    """Each case through the PyTorch path under its GPU policy (GAG_TORCH_POLICY=gpu) on
    ``device``: the same checks as the kernel's, without the kernel's τ-path expectations."""
    import traceback
    results = []
    for case in cases.values():
        q, k, v = (case[n].to(device) for n in ("q", "k", "v"))
        mask = case["mask"].to(device) if case["mask"] is not None else None
        try:
            with _policy("gpu"):
                out = gag_attention(q, k, v, scale=case["scale"], eta=case["eta"],
                                    zeta=case["zeta"], alpha=case["alpha"], mask=mask,
                                    backend="torch")
            results.append({"out": out.cpu()})
        except Exception:
            results.append({"error": traceback.format_exc()})
    return results


def relative_error(out, ref) -> float:
    return ((out.double() - ref).norm() / ref.norm().clamp(min=1e-300)).item()


def check_case(name: str, case: dict, result: dict, device: str = "cpu") -> list[str]:
    """Failures of one kernel result (empty when it passes): error, shape, dtype, finiteness,
    float64 error, zeros on fully masked rows, and the τ path its ``expect`` names."""
    if "error" in result:
        return [f"{name}: raised\n{result['error']}"]
    out, q, v = result["out"].cpu(), case["q"], case["v"]
    if out.shape != (*q.shape[:3], v.shape[-1]) or out.dtype != q.dtype:
        return [f"{name}: got {tuple(out.shape)} {out.dtype}"]
    if not torch.isfinite(out).all():
        return [f"{name}: non-finite output"]
    failures = []
    ref = reference64(case, device)
    error = relative_error(out, ref)
    if not error < TOLERANCE[q.dtype]:
        failures.append(f"{name}: relative error {error:.2e} ≥ {TOLERANCE[q.dtype]:.0e}")
    if case["mask"] is not None:
        fully_masked = ref.abs().amax(dim=-1) == 0
        if not (out[fully_masked] == 0).all():
            failures.append(f"{name}: fully masked rows are not exactly zero")
    stats = result.get("stats") or {}
    if case.get("expect") == "lists" and stats.get("fallback_tiles") != 0:
        failures.append(f"{name}: τ left the candidate lists; stats {stats}")
    if case.get("expect") == "fallback" and stats.get("fallback_tiles") != stats.get("tiles"):
        failures.append(f"{name}: expected every tile to fall back; stats {stats}")
    return failures


def run_cuda(cases: dict[str, dict]) -> list[dict]:
    """Each case on the GPU as the interpreter worker runs it, twice (determinism)."""
    import traceback

    from gag_core.kernels.interpret import case_runner
    results = []
    for case in cases.values():
        q, k, v = (case[n].cuda() for n in ("q", "k", "v"))
        mask = case["mask"].cuda() if case["mask"] is not None else None
        try:
            run, stats = case_runner(case, q, k, v, mask)
            out = run(q, k, v)
            again = run(q, k, v)
            torch.cuda.synchronize()
            results.append({"out": out.cpu(), "stats": stats,
                            "deterministic": torch.equal(out, again)})
        except Exception:
            results.append({"error": traceback.format_exc()})
    return results


def validate(cases: dict[str, dict], results: list[dict], device: str = "cpu") -> list[str]:
    """check_case for every case, plus determinism where it was measured; prints one line each."""
    failures = []
    for (name, case), result in zip(cases.items(), results):
        problems = check_case(name, case, result, device)
        if result.get("deterministic") is False:
            problems.append(f"{name}: two identical calls gave different outputs")
        failures += problems
        print(f"{'FAIL' if problems else 'ok  '} {name}"
              + (f"  {result['stats']}" if result.get("stats") else ""), flush=True)
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interpret", action="store_true",
                        help="CPU: the small cases through Triton's interpreter")
    parser.add_argument("--cases", default="", help="comma-separated case names (default all)")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing table")
    args = parser.parse_args(argv)
    cases = small_cases()
    if not args.interpret:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --interpret for the CPU subset", file=sys.stderr)
            return 2
        cases.update(big_cases())
    if args.cases:
        unknown = sorted(set(args.cases.split(",")) - set(cases))
        if unknown:
            parser.error(f"unknown case(s) {unknown}; choose from {sorted(cases)}")
        cases = {name: cases[name] for name in args.cases.split(",")}
    if args.interpret:
        from gag_core.kernels.interpret import run_fused_in_interpreter
        results = run_fused_in_interpreter(list(cases.values()))
    else:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
        results = run_cuda(cases)
    failures = validate(cases, results, "cpu" if args.interpret else "cuda")
    if not args.interpret:
        print("\nthe PyTorch path under its GPU policy (GAG_TORCH_POLICY=gpu):", flush=True)
        policy_cases = {f"gpu-policy:{name}": {key: value for key, value in case.items()
                                               if key not in ("expect", "config", "path",
                                                              "compile", "stats")}
                        for name, case in cases.items()}
        failures += validate(policy_cases, run_gpu_policy(policy_cases), "cuda")
    if failures:
        print(f"\n{len(failures)} failure(s):\n" + "\n".join(failures))
        return 1
    print(f"\nall {len(cases)} cases passed")
    if not args.interpret and not args.no_timing:
        sys.path.insert(0, str(REPO_ROOT / "bench"))
        import bench_attention_op as bench
        rows = bench.measure_gpu(bench.SHAPES, 1.5, 20, 20000)
        print("\n".join(bench.results_table(rows, torch.cuda.get_device_name(), 1.5,
                                            smoke=False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
