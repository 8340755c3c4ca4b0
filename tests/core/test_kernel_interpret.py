"""The fused Triton GAG kernel against the PyTorch reference, on CPU through Triton's interpreter.

All cases run in one subprocess with TRITON_INTERPRET=1 (see gag_core.kernels.interpret); each
result is compared here with gag_attention(..., backend="torch") evaluated in float64 on the
same (already rounded) inputs. Tolerances on the relative Frobenius error follow the input dtype:
the kernel computes in float32 but rounds P to the input dtype for the P·V products (as flash
attention does) and rounds the output to the input dtype.

Skips, saying why, where triton is missing or its interpreter cannot run a trivial kernel.
The stream-path cases use small blocks and a tiny candidate-list capacity on purpose, so that a
few dozen keys exercise the persistent tile loop, the list path and the list-overflow fallback.
"""

from __future__ import annotations

import math

import pytest
import torch

from gag_core import gag_attention, normalize_mask

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


def build_cases() -> dict[str, dict]:
    gen = torch.Generator().manual_seed(1234)
    cases: dict[str, dict] = {}

    def add(name, q, k, v, *, mask=None, alpha=1.5, scale=10.0, eta=15.0, zeta=0.0, path="auto",
            config=None, compile=False):
        mask = normalize_mask(mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        cases[name] = dict(q=q, k=k, v=v, mask=mask, alpha=alpha, scale=scale, eta=eta,
                           zeta=zeta, path=path, config=config, compile=compile,
                           stats=not compile)

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
        path="stream", config=SMALL_STREAM)
    q, k, v = _qkv(gen, 1, 1, 24, 300, 32, 32, torch.float16)
    add("stream-fp16-keepmask-alpha2", q, k, v, mask=_keep_mask(gen, (24, 300)), alpha=2.0,
        path="stream", config=SMALL_STREAM)
    q, k, v = _qkv(gen, 1, 1, 24, 300, 32, 32, torch.bfloat16)
    add("stream-bf16-addmask-alpha1.25", q, k, v,
        mask=_additive_mask(gen, (1, 1, 24, 300), torch.bfloat16), alpha=1.25, path="stream",
        config=SMALL_STREAM)
    overflow = dict(SMALL_STREAM, list_cap=16)
    add("stream-fp32-overflow-alpha1.75", *_qkv(gen, 1, 1, 24, 300, 32, 32, torch.float32),
        alpha=1.75, path="stream", config=overflow)
    add("stream-fp16-overflow-alpha1.5", *_qkv(gen, 1, 1, 24, 300, 32, 32, torch.float16),
        path="stream", config=overflow)
    # Keys whose scale grows along the row: the running maximum keeps rising, so early list
    # entries fall out of the final candidate band.
    q, k, v = _qkv(gen, 1, 1, 24, 300, 32, 32, torch.float64)
    k = (k * torch.linspace(0.2, 2.0, 300, dtype=torch.float64)[:, None]).to(torch.float32)
    add("stream-fp32-rising-max", q.float(), k, v.float(), path="stream", config=SMALL_STREAM)
    # The kernel's own streaming block sizes (auto path: Lk > 256).
    add("stream-fp16-default-config", *_qkv(gen, 1, 1, 70, 300, 64, 64, torch.float16))
    # A partial last query tile (65 = 64 + 1 rows): the 63 padded rows must not list keys.
    add("stream-fp32-partial-tile", *_qkv(gen, 1, 1, 65, 600, 32, 32, torch.float32))
    # Flat heads: scores of std 0.5 put most keys within 1/(α−1) of the row maximum, far more
    # than the lists hold; the lower-bound cut must keep τ on the lists.
    add("stream-fp32-flat", *_qkv(gen, 1, 1, 16, FLAT_KEYS, 32, 32, torch.float32,
                                  q_gain=FLAT_GAIN))
    add("stream-fp16-flat-alpha2", *_qkv(gen, 1, 1, 16, FLAT_KEYS, 32, 32, torch.float16,
                                         q_gain=FLAT_GAIN / 2), alpha=2.0)
    return cases


CASES = build_cases()


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


def _reference64(case):
    mask = case["mask"]
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.double()
    return gag_attention(case["q"].double(), case["k"].double(), case["v"].double(),
                         scale=case["scale"], eta=case["eta"], zeta=case["zeta"],
                         alpha=case["alpha"], mask=mask, backend="torch")


def _relative_error(out, ref):
    return ((out.double() - ref).norm() / ref.norm().clamp(min=1e-300)).item()


@pytest.mark.parametrize("name", list(CASES))
def test_fused_kernel_matches_float64_reference(interpreter_results, name):
    case = CASES[name]
    result = interpreter_results[name]
    if "error" in result:
        pytest.fail(result["error"], pytrace=False)
    out = result["out"]
    q, v = case["q"], case["v"]
    assert out.shape == (*q.shape[:3], v.shape[-1])
    assert out.dtype == q.dtype
    assert torch.isfinite(out).all()
    ref = _reference64(case)
    error = _relative_error(out, ref)
    assert error < TOLERANCE[q.dtype], f"{name}: relative Frobenius error {error:.2e}"
    if case["mask"] is not None:
        # Fully masked query rows give exact zeros, as the PyTorch path does.
        fully_masked = ref.abs().amax(dim=-1) == 0
        assert fully_masked.any()
        assert (out[fully_masked] == 0).all()


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



def _stats(interpreter_results, name):
    result = interpreter_results[name]
    if "error" in result:
        pytest.fail(result["error"], pytrace=False)
    return result["stats"]


def _band_width(case) -> int:
    """The longest row band z > −1 (scores within 1/(α−1) of the row maximum): what the
    lists would have to hold without the lower-bound cut."""
    q, k = case["q"].double(), case["k"].double()
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return int(((case["alpha"] - 1) * (s - s.amax(-1, keepdim=True)) > -1).sum(-1).max())


@pytest.mark.parametrize("name", ["stream-fp32-partial-tile", "stream-fp32-flat",
                                  "stream-fp16-flat-alpha2", "stream-fp32-alpha1.5",
                                  "stream-fp16-default-config"])
def test_list_path_is_kept(interpreter_results, name):
    from gag_core.kernels.config import kernel_config
    case = CASES[name]
    stats = _stats(interpreter_results, name)
    assert stats["fallback_tiles"] == 0, stats
    if "flat" in name:
        cap = kernel_config(16, FLAT_KEYS, 32, 32, case["q"].dtype).list_cap
        assert _band_width(case) > 1.5 * cap  # without the cut every tile would fall back
        assert stats["longest_list"] <= cap


@pytest.mark.parametrize("name", ["stream-fp32-overflow-alpha1.75",
                                  "stream-fp16-overflow-alpha1.5"])
def test_forced_overflow_takes_the_recompute_fallback(interpreter_results, name):
    stats = _stats(interpreter_results, name)
    assert stats["fallback_tiles"] == stats["tiles"] > 0, stats
