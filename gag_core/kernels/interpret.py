"""Run the fused Triton kernel on CPU through Triton's interpreter (for tests on machines
without a GPU).

Triton reads TRITON_INTERPRET when it is imported, so a process that has already imported
triton for GPU use cannot switch. ``run_fused_in_interpreter`` therefore runs the kernel in a
fresh Python subprocess with TRITON_INTERPRET=1 and hands tensors over through a temporary file.

The worker first launches a trivial Triton kernel: if that fails, the interpreter itself does
not work with this Triton build and ``InterpreterUnavailable`` is raised (tests skip on it).
If the trivial kernel works and a GAG case raises, that case's result carries the traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch

__all__ = ["run_fused_in_interpreter", "InterpreterUnavailable", "KernelFailed"]

# The folder that holds the gag_core package, so the worker can import it by that name.
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


class InterpreterUnavailable(RuntimeError):
    """Triton is missing, or its CPU interpreter cannot run even a trivial kernel here."""


class KernelFailed(RuntimeError):
    """The interpreter subprocess died or timed out (a case that raises is reported per case)."""


def run_fused_in_interpreter(cases: list[dict], *, timeout: float = 600.0) -> list[dict]:
    """Run ``triton_gag.fused_gag_attention`` on CPU tensors in an interpreter subprocess.

    Each case is a dict with q, k, v (CPU tensors, (B,H,L,D)), optional mask (rank 4, as
    gag_core.attention.normalize_mask returns it), scale, eta, zeta, alpha, and optionally
    ``path`` ("auto", "short", "stream") and ``config`` (a dict of KernelConfig fields to
    override, e.g. small blocks or a tiny list capacity). Without either, the call goes through
    the registered custom operator, as on a GPU; ``compile=True`` additionally wraps it in
    ``torch.compile(backend="aot_eager", fullgraph=True)``, so a graph break fails the case;
    ``stats=True`` launches directly and collects the kernel's per-tile statistics.
    Returns one dict per case: ``out`` (the (B,H,Lq,Dv) result), ``seconds`` (interpreter
    wall time) and ``stats`` (see ``fused_gag_attention``'s ``tile_stats``; None unless asked),
    or ``error`` (the traceback) where that case raised.
    """
    from . import triton_available
    if not triton_available():
        raise InterpreterUnavailable("triton is not installed")
    with tempfile.TemporaryDirectory(prefix="gag_interp_") as tmp:
        in_path, out_path = Path(tmp) / "cases.pt", Path(tmp) / "results.pt"
        torch.save(cases, in_path)
        env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(_PACKAGE_PARENT),
                                               os.environ.get("PYTHONPATH", "")]))
        code = ("import sys; from gag_core.kernels.interpret import _worker; "
                "sys.exit(_worker(sys.argv[1], sys.argv[2]))")
        try:
            proc = subprocess.run([sys.executable, "-c", code, str(in_path), str(out_path)],
                                  env=env, capture_output=True, text=True, timeout=timeout,
                                  cwd=tmp)
        except subprocess.TimeoutExpired as exc:
            raise KernelFailed(f"interpreter run exceeded {timeout:.0f} s") from exc
        tail = (proc.stdout + proc.stderr)[-4000:]
        if proc.returncode == 3:
            raise InterpreterUnavailable(
                "Triton's interpreter (TRITON_INTERPRET=1) cannot run a trivial kernel with "
                f"this Triton build:\n{tail}")
        if proc.returncode != 0 or not out_path.exists():
            raise KernelFailed(f"the interpreter subprocess failed (exit {proc.returncode}):"
                               f"\n{tail}")
        return torch.load(out_path)


def _interpreter_smoke_test() -> Optional[str]:
    """None if a trivial kernel (load, dot, reduce, store) runs under the interpreter."""
    try:
        import triton
        import triton.language as tl

        @triton.jit
        def _row_max_of_square(X, Y, N: tl.constexpr):
            offs = tl.arange(0, N)
            x = tl.load(X + offs[:, None] * N + offs[None, :])
            tl.store(Y + offs, tl.max(tl.dot(x, x), axis=1))

        x = torch.arange(256, dtype=torch.float32).reshape(16, 16) / 256.0
        y = torch.empty(16)
        _row_max_of_square[(1,)](x, y, 16)
        if not torch.allclose(y, (x @ x).amax(dim=1), rtol=1e-4, atol=1e-6):
            return "the trivial kernel ran but returned wrong values"
    except Exception as exc:  # any failure here means "no usable interpreter"
        return f"{type(exc).__name__}: {exc}"
    return None


def case_runner(case: dict, q, k, v, mask, compile_backend=None):
    """The fused kernel as a test case asks for it (its λ, η, ζ, α; an explicit tile
    configuration or path; tile statistics; torch.compile): returns (run(q, k, v) → output,
    the dict the kernel fills with tile statistics, or None). Shared by the interpreter worker
    and the GPU validation command (bench/validate_kernel.py)."""
    import dataclasses

    from .triton_gag import fused_gag_attention, kernel_config
    params = dict(scale=case["scale"], eta=case["eta"], zeta=case["zeta"], alpha=case["alpha"],
                  mask=mask)
    config = None
    if case.get("config") or case.get("path", "auto") != "auto":
        config = kernel_config(q.shape[2], k.shape[2], q.shape[3], v.shape[3], q.dtype,
                               path=case.get("path", "auto"))
        config = dataclasses.replace(config, **(case.get("config") or {}))
    stats = {} if case.get("stats") else None

    def run(q, k, v):
        return fused_gag_attention(q, k, v, config=config, tile_stats=stats, **params)

    if case.get("compile"):
        options = {"backend": compile_backend} if compile_backend else {}
        run = torch.compile(run, fullgraph=True, **options)
    return run, stats


def _worker(in_path: str, out_path: str) -> int:
    import time
    import traceback

    if os.environ.get("TRITON_INTERPRET") != "1":
        print("worker needs TRITON_INTERPRET=1 set before triton is imported", file=sys.stderr)
        return 3
    torch.set_num_threads(1)
    problem = _interpreter_smoke_test()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 3
    cases = torch.load(in_path)
    results = []
    for index, case in enumerate(cases):
        q, k, v = case["q"], case["k"], case["v"]
        try:
            run, stats = case_runner(case, q, k, v, case.get("mask"), compile_backend="aot_eager")
            start = time.perf_counter()
            out = run(q, k, v)
            results.append({"out": out, "seconds": time.perf_counter() - start,
                            "stats": stats})
        except Exception:
            results.append({"error": f"case {index} raised:\n{traceback.format_exc()}"})
    torch.save(results, out_path)
    return 0
