"""The fused Triton GAG kernel against the PyTorch reference, on CPU through Triton's interpreter:
the CPU subset of the GPU validation command ``python bench/validate_kernel.py``.

All small cases of bench/validate_kernel.py run in one subprocess with TRITON_INTERPRET=1 (see
gag_core.kernels.interpret); each result goes through the command's own ``check_case``: the
relative Frobenius error against gag_attention(..., backend="torch") in float64 on the same
(already rounded) inputs within the dtype's tolerance (the kernel computes in float32 but
rounds P to the input dtype for the P·V products, as flash attention does), exact zeros on
fully masked rows, and the τ path the case expects (the candidate lists, or the
score-recomputing fallback). The per-case tests below add properties of single cases.

Skips, saying why, where triton is missing or its interpreter cannot run a trivial kernel.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "bench" / "validate_kernel.py"
_SPEC = importlib.util.spec_from_file_location("bench_validate_kernel", _PATH)
validate_kernel = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = validate_kernel
_SPEC.loader.exec_module(validate_kernel)

CASES = validate_kernel.small_cases()


@pytest.fixture(scope="module")
def interpreter_results():
    pytest.importorskip("triton", reason="triton is not installed: the fused kernel cannot be "
                                         "checked here (the PyTorch path is tested elsewhere)")
    from gag_core.kernels.interpret import InterpreterUnavailable, run_fused_in_interpreter
    names = list(CASES)
    try:
        results = run_fused_in_interpreter([CASES[name] for name in names])
    except InterpreterUnavailable as exc:
        pytest.skip(f"Triton's CPU interpreter is unusable with this Triton build: {exc}")
    return dict(zip(names, results))


@pytest.mark.parametrize("name", list(CASES))
def test_validation_case_passes_in_the_interpreter(interpreter_results, name):
    failures = validate_kernel.check_case(name, CASES[name], interpreter_results[name])
    assert not failures, "\n".join(failures)


def test_single_key_returns_its_value(interpreter_results):
    # One key: dense and sparse maps are both [1], Δ = 0, so GAG returns v for every query.
    case = CASES["short-fp32-lk1"]
    out = interpreter_results["short-fp32-lk1"]["out"]
    torch.testing.assert_close(out, case["v"].expand_as(out), rtol=1e-6, atol=1e-6)


def test_sparse_only_output_is_an_entmax_average(interpreter_results):
    # λ = 0 leaves O_s: a convex combination of value rows, so it lies inside their range.
    case = CASES["short-fp32-sparse-only"]
    out = interpreter_results["short-fp32-sparse-only"]["out"]
    lo = case["v"].amin(dim=2, keepdim=True)
    hi = case["v"].amax(dim=2, keepdim=True)
    assert ((out >= lo - 1e-5) & (out <= hi + 1e-5)).all()


def _band_width(case) -> int:
    """The longest row band z > −1 (scores within 1/(α−1) of the row maximum): what the
    lists would have to hold without the lower-bound cut."""
    q, k = case["q"].double(), case["k"].double()
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return int(((case["alpha"] - 1) * (s - s.amax(-1, keepdim=True)) > -1).sum(-1).max())


@pytest.mark.parametrize("name", ["stream-fp32-flat", "stream-fp16-flat-alpha2"])
def test_flat_rows_would_overflow_without_the_cut(interpreter_results, name):
    from gag_core.kernels.config import kernel_config
    case = CASES[name]
    cap = kernel_config(16, validate_kernel.FLAT_KEYS, 32, 32, case["q"].dtype).list_cap
    assert _band_width(case) > 1.5 * cap
    stats = interpreter_results[name]["stats"]
    assert stats["fallback_tiles"] == 0 and stats["longest_list"] <= cap


def test_expected_paths_cover_lists_and_fallback():
    expected = [case.get("expect") for case in CASES.values()]
    assert expected.count("lists") >= 5 and expected.count("fallback") >= 2


def test_a_failing_case_makes_the_command_exit_nonzero(monkeypatch, capsys):
    # The command must fail loudly, not print a warning: corrupt one result and run main.
    from gag_core.kernels import interpret
    name = "short-fp32-lk1"
    case = CASES[name]

    def corrupted(cases, **kwargs):
        return [{"out": case["v"].expand(*case["q"].shape[:3], -1) + 1.0, "stats": None}]

    monkeypatch.setattr(interpret, "run_fused_in_interpreter", corrupted)
    assert validate_kernel.main(["--interpret", "--cases", name]) == 1
    assert "FAIL short-fp32-lk1" in capsys.readouterr().out
