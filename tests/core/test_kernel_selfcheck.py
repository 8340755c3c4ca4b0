"""The fused kernel's self-check (gag_core.kernels.selfcheck) decides which backend runs, on CPU:
the real kernel runs in Triton's interpreter, and through the chooser's seam (its kernel and
timer parameters) a kernel that disagrees, one that fails to compile and one that is slower."""

from __future__ import annotations

import logging

import pytest
import torch

from gag_core import gag_attention
from gag_core.kernels import selfcheck
from reference import rel_frobenius

PARAMS = dict(scale=10.0, eta=15.0, zeta=0.0, alpha=1.5)


def _inputs(dtype=torch.float16, lq=40, lk=48, d=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, lq, d, generator=gen).to(dtype)
    k = torch.randn(1, 2, lk, d, generator=gen).to(dtype)
    v = torch.randn(1, 2, lk, d, generator=gen).to(dtype)
    return q, k, v


class InterpreterKernel:
    """The real fused kernel, run in Triton's CPU interpreter (a subprocess per new input);
    counts its calls and remembers outputs, so repeated calls on one input cost nothing."""

    def __init__(self):
        self.calls = 0
        self._seen: list = []

    def __call__(self, q, k, v, *, scale, eta, zeta, alpha, mask=None):
        from gag_core.kernels.interpret import InterpreterUnavailable, run_fused_in_interpreter
        self.calls += 1
        for (sq, sk, sv), out in self._seen:
            if torch.equal(sq, q) and torch.equal(sk, k) and torch.equal(sv, v):
                return out
        case = dict(q=q, k=k, v=v, mask=mask, scale=scale, eta=eta, zeta=zeta, alpha=alpha)
        try:
            (result,) = run_fused_in_interpreter([case])
        except InterpreterUnavailable as exc:
            pytest.skip(f"Triton's CPU interpreter is unusable here: {exc}")
        if "error" in result:
            raise RuntimeError(result["error"])
        self._seen.append(((q, k, v), result["out"]))
        return result["out"]


class CountingExact:
    def __init__(self):
        self.calls = 0

    def __call__(self, q, k, v, **params):
        self.calls += 1
        return gag_attention(q, k, v, backend="torch", **params)


def preset_timer(seconds: dict):
    """A timer that reports fixed times per backend (interpreter timings mean nothing)."""
    def timer(fn, name, repeats):
        return seconds[name]
    return timer


@pytest.fixture(scope="module")
def kernel():
    pytest.importorskip("triton", reason="triton is not installed: the fused kernel cannot "
                                         "run in the interpreter here")
    return InterpreterKernel()


def test_a_kernel_that_agrees_and_is_faster_is_kept(kernel, caplog):
    exact = CountingExact()
    chooser = selfcheck.BackendChooser(kernel, exact,
                                       timer=preset_timer({"fused": 1e-3, "torch": 4e-3}))
    q, k, v = _inputs()
    with caplog.at_level(logging.INFO, logger="gag"):
        out = chooser.run(q, k, v, **PARAMS)
        again = chooser.run(q, k, v, **PARAMS)
    (decision,) = chooser.decisions()
    assert decision.backend == "fused" and decision.key[1:] == (torch.float16, 32, "short")
    assert "agrees" in decision.reason and "4.0× faster" in decision.reason
    assert decision.error < selfcheck.TOLERANCE[torch.float16]
    # The kernel's own output comes back, and it agrees with the reference path.
    assert rel_frobenius(out, gag_attention(q, k, v, backend="torch", **PARAMS)) < 3e-3
    assert torch.equal(again, out)
    # Checked once: one float64 reference run on sampled rows (the preset timer runs nothing),
    # then straight to the kernel.
    assert exact.calls == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "gag"]
    assert len(lines) == 1 and "fused Triton kernel" in lines[0]


def test_a_kernel_that_disagrees_falls_back(kernel):
    def wrong(q, k, v, **params):
        out = kernel(q, k, v, **params)
        return out + 0.05 * out.abs().amax()         # a small systematic error
    chooser = selfcheck.BackendChooser(wrong, CountingExact(),
                                       timer=preset_timer({"fused": 1e-3, "torch": 4e-3}))
    q, k, v = _inputs()
    out = chooser.run(q, k, v, **PARAMS)
    (decision,) = chooser.decisions()
    assert decision.backend == "torch" and "disagrees" in decision.reason
    torch.testing.assert_close(out, gag_attention(q, k, v, backend="torch", **PARAMS),
                               rtol=0, atol=0)
    # Later calls for the key never run the wrong kernel again.
    calls = []
    chooser.kernel = lambda *a, **p: calls.append(1)
    chooser.run(q, k, v, **PARAMS)
    assert calls == []


class CompilationError(Exception):
    """Stands for triton.compiler.errors.CompilationError (any exception is caught)."""


def test_a_kernel_that_fails_to_compile_falls_back():
    def broken(q, k, v, **params):
        raise CompilationError("at 12:8: unsupported tensor shape for tl.dot")
    chooser = selfcheck.BackendChooser(broken, CountingExact(),
                                       timer=preset_timer({"fused": 1e-3, "torch": 4e-3}))
    q, k, v = _inputs(torch.bfloat16)
    out = chooser.run(q, k, v, **PARAMS)
    (decision,) = chooser.decisions()
    assert decision.backend == "torch"
    assert "failed (CompilationError: at 12:8" in decision.reason
    assert torch.equal(out, gag_attention(q, k, v, backend="torch", **PARAMS))


def test_a_slower_kernel_falls_back(kernel):
    chooser = selfcheck.BackendChooser(kernel, CountingExact(),
                                       timer=preset_timer({"fused": 5e-3, "torch": 4e-3}))
    q, k, v = _inputs()
    out = chooser.run(q, k, v, **PARAMS)
    (decision,) = chooser.decisions()
    assert decision.backend == "torch" and "not faster" in decision.reason
    assert "5.000 ms vs 4.000 ms" in decision.reason
    assert torch.equal(out, gag_attention(q, k, v, backend="torch", **PARAMS))


def test_each_key_is_checked_once(kernel):
    exact = CountingExact()
    chooser = selfcheck.BackendChooser(kernel, exact,
                                       timer=preset_timer({"fused": 1e-3, "torch": 4e-3}))
    q, k, v = _inputs()
    chooser.run(q, k, v, **PARAMS)
    chooser.run(q[:, :, :7], k, v, **PARAMS)             # same key: no new check
    long_k = torch.randn(1, 2, 300, 32).half()
    long_v = torch.randn(1, 2, 300, 32).half()
    keys = {d.key for d in chooser.decisions()}
    assert len(keys) == 1
    assert selfcheck.check_key(q, long_k, long_v)[3] == "stream"
    assert selfcheck.check_key(q.float(), k.float(), v.float())[1] == torch.float32


def test_summary_for_the_readout(monkeypatch):
    chooser = selfcheck.BackendChooser(lambda *a, **p: 1 / 0, CountingExact(),
                                       timer=preset_timer({"fused": 1e-3, "torch": 4e-3}))
    monkeypatch.setattr(selfcheck, "_default", chooser)
    monkeypatch.setattr(selfcheck, "_declines", {})      # what earlier tests' GPU calls noted
    assert "no fused-kernel check ran" in selfcheck.backend_summary()
    q, k, v = _inputs()
    chooser.run(q, k, v, **PARAMS)
    summary = selfcheck.backend_summary()
    assert summary.startswith("GAG attention on cpu (float16, D=32, short rows): PyTorch path")
    assert "ZeroDivisionError" in summary
    from gag_core.kernels import backend_summary
    assert backend_summary() == summary


def test_text_mode_correction_on_the_kernel_is_its_output_minus_sdpa(monkeypatch):
    # gag_correction (FLUX/Z-Image text mode) on the kernel: the kernel's GAG output minus
    # SDPA's, a fully masked query giving 0 rather than SDPA's NaN. The exact path stands in
    # for a correct kernel (the interpreter runs the real one above).
    import gag_core.attention as attention_module
    from gag_core import gag_correction
    from reference import ref_dense_sparse, ref_gag_attention
    stand_in = lambda q, k, v, **p: gag_attention(q, k, v, backend="torch", **p)  # noqa: E731
    monkeypatch.setattr(attention_module, "select_backend", lambda *args: stand_in)
    q, k, v = _inputs(torch.float16, lq=12, lk=40)
    mask = torch.ones(1, 1, 12, 40, dtype=torch.bool)
    mask[..., 3, :] = False
    correction = gag_correction(q, k, v, mask=mask, **PARAMS)
    assert correction.dtype == torch.float32 and torch.isfinite(correction).all()
    assert (correction[:, :, 3] == 0).all()
    ref_dense, _ = ref_dense_sparse(q, k, v, 1.5, mask)
    ref = ref_gag_attention(q, k, v, mask=mask, **PARAMS)
    assert rel_frobenius(correction + ref_dense, ref) < 3e-3
    with pytest.raises(ValueError, match="backend must be"):
        gag_correction(q, k, v, backend="cuda")
