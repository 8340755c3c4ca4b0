"""The fused kernel checks itself on the user's GPU before ``auto`` keeps it.

On the first call for each (device, dtype, head dim, kernel path) — the kernel path is "short"
(Lk ≤ 256, whole rows in registers) or "stream" (longer rows), the two kernels of
triton_gag — ``BackendChooser.run``:

1. runs the fused kernel on the call; a compile error or any other exception → PyTorch path;
2. compares up to ``sample_rows`` query rows of its output with the PyTorch path evaluated in
   float64 on the same (already rounded) inputs: relative Frobenius error above the dtype's
   tolerance (float32 1e-5, float16 3e-3, bfloat16 2e-2: the tests' tolerances) → PyTorch path;
3. times both on the call (median of ``repeats`` runs each, after one warm-up); the kernel not
   faster → PyTorch path;
4. otherwise keeps the kernel.

It says once, in the log (logger "gag"), which backend runs for that key and why;
``decisions()`` and ``backend_summary()`` expose the same lines for the readout. This check
synchronises the host a few times, once per key per process; every later call goes straight to
the chosen backend. GAG_BACKEND=fused and =torch bypass it (the user's choice stands). A GPU
call the kernel cannot take at all (no Triton, an older GPU, ROCm, …) is said once per device
and reason too (``note_declined``, ``declined()``).

The kernel, the exact path and the timer are parameters of ``BackendChooser`` (the seam the
CPU tests use to inject a kernel that disagrees, one that fails to compile and one that is
slower, with the real kernel running in Triton's interpreter).
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

__all__ = ["BackendChooser", "Decision", "TOLERANCE", "default_chooser", "decisions",
           "backend_summary", "check_key", "device_name", "note_declined", "declined"]

LOG = logging.getLogger("gag")

# Relative Frobenius error against the float64 PyTorch path allowed per input dtype
# (tests/core/test_attention.py's TOL).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class Decision:
    key: tuple            # (device, dtype, head dim, kernel path)
    backend: str          # "fused" or "torch"
    reason: str
    error: Optional[float] = None
    fused_seconds: Optional[float] = None
    torch_seconds: Optional[float] = None

    def line(self) -> str:
        device, dtype, head_dim, path = self.key
        name = "fused Triton kernel" if self.backend == "fused" else "PyTorch path"
        return (f"GAG attention on {device} ({str(dtype).replace('torch.', '')}, D={head_dim}, "
                f"{path} rows): {name} — {self.reason}")


def device_name(device: torch.device) -> str:
    """"NVIDIA H100 80GB HBM3 (cuda:0)" for a CUDA device, else the device itself ("mps")."""
    name = str(device)
    if device.type == "cuda":
        try:
            name = f"{torch.cuda.get_device_name(device)} ({device})"
        except Exception:  # a device without a name query: keep "cuda:N"
            pass
    return name


def check_key(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple:
    """(device, dtype, head dim, kernel path) of a call: what the check is done once for."""
    from .config import SHORT_MAX_KEYS
    path = "short" if k.shape[2] <= SHORT_MAX_KEYS else "stream"
    return (device_name(q.device), q.dtype, q.shape[-1], path)


_declines: dict = {}        # (str(device), reason) → device name, in the order first seen


def note_declined(device: torch.device, reason: str) -> None:
    """Record why the kernel could not take a call on a GPU (no Triton, an older GPU, ROCm, a
    shape without tiles, inputs that require grad) and say it once per device and reason in
    the log; ``declined()`` gives the readout the same. Nothing is checked or timed."""
    key = (str(device), reason)
    if key not in _declines:
        _declines[key] = device_name(device)
        LOG.info("%s", _declined_line(_declines[key], reason))


def declined() -> list:
    """(device name, reason) for every call the kernel could not take, in the order first seen."""
    return [(name, reason) for (_, reason), name in _declines.items()]


def _declined_line(name: str, reason: str) -> str:
    return (f"GAG attention on {name}: PyTorch path — the fused kernel cannot take these "
            f"calls: {reason}")


def _cuda_timer(fn: Callable[[], torch.Tensor], name: str, repeats: int) -> float:
    """Median seconds of fn() on the device (events around each run; one warm-up)."""
    fn()
    if not torch.cuda.is_available():
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)
    runs = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        runs.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(runs)


def _rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = actual.to(torch.float64), expected.to(torch.float64)
    err = torch.linalg.vector_norm(a - e).item()
    ref = torch.linalg.vector_norm(e).item()
    if not math.isfinite(err):
        return math.inf
    return err / ref if ref > 0 else err


def _sample_rows(lq: int, count: int) -> torch.Tensor:
    """Up to ``count`` query rows spread over the sequence, first and last included."""
    if lq <= count:
        return torch.arange(lq)
    return torch.linspace(0, lq - 1, count).round().long().unique()


class BackendChooser:
    """Chooses, once per ``check_key``, between the fused kernel and the PyTorch path.

    kernel(q, k, v, **params) and exact(q, k, v, **params) have gag_attention's signature
    (params: scale, eta, zeta, alpha, mask) and return (B, H, Lq, Dv); exact must accept
    float64 inputs. timer(fn, name, repeats) returns seconds for one run of fn()."""

    def __init__(self, kernel: Callable, exact: Callable, *,
                 timer: Callable = _cuda_timer, sample_rows: int = 64, repeats: int = 5,
                 tolerance: Optional[dict] = None):
        self.kernel = kernel
        self.exact = exact
        self.timer = timer
        self.sample_rows = sample_rows
        self.repeats = repeats
        self.tolerance = dict(TOLERANCE if tolerance is None else tolerance)
        self._decisions: dict = {}
        self._lock = threading.Lock()

    def decision(self, key: tuple) -> Optional[Decision]:
        return self._decisions.get(key)

    def decisions(self) -> list:
        return list(self._decisions.values())

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **params) -> torch.Tensor:
        """GAG output of this call from the chosen backend (choosing first, if needed)."""
        key = check_key(q, k, v)
        decided = self._decisions.get(key)
        if decided is not None:
            backend = self.kernel if decided.backend == "fused" else self.exact
            return backend(q, k, v, **params)
        with self._lock:
            decided = self._decisions.get(key)
            if decided is None:
                decided, out = self._check(key, q, k, v, params)
                self._decisions[key] = decided
                LOG.info("%s", decided.line())
                return out
        backend = self.kernel if decided.backend == "fused" else self.exact
        return backend(q, k, v, **params)

    def _check(self, key, q, k, v, params) -> tuple:
        try:
            fused_out = self.kernel(q, k, v, **params)
        except Exception as exc:  # compile errors, launch failures, anything the kernel raises
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            reason = f"the kernel failed ({type(exc).__name__}: {first_line})"
            return Decision(key, "torch", reason), self.exact(q, k, v, **params)
        rows = _sample_rows(q.shape[2], self.sample_rows).to(q.device)
        mask = params.get("mask")
        sampled = dict(params)
        if mask is not None:
            sampled["mask"] = mask.index_select(2, rows) if mask.shape[2] != 1 else mask
            sampled["mask"] = (sampled["mask"] if sampled["mask"].dtype == torch.bool
                               else sampled["mask"].to(torch.float64))
        reference = self.exact(q.index_select(2, rows).to(torch.float64), k.to(torch.float64),
                               v.to(torch.float64), **sampled)
        error = _rel_error(fused_out.index_select(2, rows), reference)
        tolerance = self.tolerance.get(q.dtype, 1e-5)
        if not error <= tolerance:
            reason = (f"the kernel disagrees with the float64 PyTorch path on {rows.numel()} "
                      f"sampled rows (relative error {error:.2e} > {tolerance:.0e})")
            return Decision(key, "torch", reason, error=error), self.exact(q, k, v, **params)
        fused_seconds = self.timer(lambda: self.kernel(q, k, v, **params), "fused",
                                   self.repeats)
        exact_out = None

        def run_exact():
            nonlocal exact_out
            exact_out = self.exact(q, k, v, **params)
            return exact_out

        torch_seconds = self.timer(run_exact, "torch", self.repeats)
        if not fused_seconds < torch_seconds:
            reason = (f"the kernel agrees (relative error {error:.1e} ≤ {tolerance:.0e}) but is "
                      f"not faster ({fused_seconds * 1e3:.3f} ms vs {torch_seconds * 1e3:.3f} ms "
                      f"for the PyTorch path)")
            out = exact_out if exact_out is not None else self.exact(q, k, v, **params)
            return Decision(key, "torch", reason, error, fused_seconds, torch_seconds), out
        reason = (f"agrees with the float64 PyTorch path (relative error {error:.1e} ≤ "
                  f"{tolerance:.0e}) and is {torch_seconds / fused_seconds:.1f}× faster "
                  f"({fused_seconds * 1e3:.3f} ms vs {torch_seconds * 1e3:.3f} ms)")
        return Decision(key, "fused", reason, error, fused_seconds, torch_seconds), fused_out


def _fused(q, k, v, **params):
    from .triton_gag import fused_gag_attention
    return fused_gag_attention(q, k, v, **params)


_default: Optional[BackendChooser] = None


def default_chooser(exact: Callable) -> BackendChooser:
    """The process-wide chooser ``select_backend`` uses for GAG_BACKEND=auto. ``exact`` is the
    PyTorch path it checks the kernel against (gag_core.attention hands it in, so kernels never
    import attention back)."""
    global _default
    if _default is None:
        _default = BackendChooser(_fused, exact)
    return _default


def decisions() -> list:
    """The decisions made so far in this process (empty before the first fused-eligible call)."""
    return [] if _default is None else _default.decisions()


def backend_summary() -> str:
    """One line per checked key and per reason the kernel could not take a call, saying which
    backend runs and why; a line saying so where neither happened."""
    lines = [d.line() for d in decisions()]
    lines += [_declined_line(name, reason) for name, reason in declined()]
    return "\n".join(lines) if lines else "GAG attention: PyTorch path (no fused-kernel check ran)"
