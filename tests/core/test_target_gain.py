"""Target-gain mode (gag_core.target_gain): λ set per call so the median gain lands on the target,
checked against the float64 reference (tests/core/reference.py), and free of host reads."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gag_core import gag_attention, gag_correction
from gag_core.target_gain import (MAX_TARGET_SCALE, check_target_gain, gain_coefficients,
                                  scale_for_target, target_gain_attention)
from reference import ref_dense_sparse, ref_gag_attention, ref_gain

INF = float("inf")


def qkv(seed, batch=2, heads=3, lq=40, lk=12, dim=8, sharp=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(batch, heads, n, dim, generator=g) * s).to(dtype)
                 for n, s in ((lq, sharp), (lk, sharp), (lk, 1.0)))


def reference_median_gain(q, k, v, scale, eta, zeta):
    """Median over each batch row's heads and tokens of the reference gain at λ = ``scale``."""
    dense, sparse = ref_dense_sparse(q.double(), k.double(), v.double())
    out = []
    for b in range(q.shape[0]):
        gain, _ = ref_gain(dense[b:b + 1], sparse[b:b + 1], float(scale[b]), eta, zeta)
        out.append(gain.flatten().median())
    return torch.stack(out)


@pytest.mark.parametrize("target", [1.2, 1.8, 3.0])
@pytest.mark.parametrize("eta,zeta", [(15.0, 0.0), (0.5, 0.0), (2.0, 0.4), (INF, 1.0)])
def test_median_gain_of_the_call_lands_on_the_target_float64(target, eta, zeta):
    q, k, v = qkv(seed=1)
    out, scale, _, a, _ = target_gain_attention(q, k, v, target=target, eta=eta, zeta=zeta, alpha=1.5)
    assert scale.shape == (2,) and scale.dtype == torch.float64
    assert ((scale > 0) & (scale < MAX_TARGET_SCALE)).all()  # reachable: not at the bound
    median = reference_median_gain(q, k, v, scale, eta, zeta)
    assert torch.allclose(median, torch.full_like(median, target), rtol=0, atol=1e-10)
    # The output is GAG's output at that λ, row by row.
    for b in range(2):
        want = ref_gag_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], float(scale[b]), eta, zeta)
        assert torch.allclose(out[b:b + 1], want, rtol=1e-10, atol=1e-10)
    # a is every token's gain coefficient: gain = 1 + λ·a
    gain, _ = ref_gain(*ref_dense_sparse(q, k, v), 1.0, eta, zeta)
    assert torch.allclose(a, gain - 1, rtol=1e-10, atol=1e-12)


def test_float32_lands_within_float32_rounding():
    q, k, v = qkv(seed=2, dtype=torch.float32)
    _, scale, *_ = target_gain_attention(q, k, v, target=1.8, eta=15.0, zeta=0.0, alpha=1.5)
    median = reference_median_gain(q, k, v, scale, 15.0, 0.0)
    assert torch.allclose(median, torch.full_like(median, 1.8), rtol=0, atol=1e-5)


def test_correction_form_adds_to_the_dense_output():
    q, k, v = qkv(seed=3)
    out, scale, *_ = target_gain_attention(q, k, v, target=2.0, eta=15.0, zeta=0.0, alpha=1.5)
    corr, scale2, *_ = target_gain_attention(q, k, v, target=2.0, eta=15.0, zeta=0.0, alpha=1.5,
                                            minus_dense=True)
    assert torch.equal(scale, scale2)
    dense, _ = ref_dense_sparse(q, k, v)
    assert torch.allclose(corr + dense, out, rtol=1e-12, atol=1e-12)
    # and matches gag_correction at the same λ
    want = gag_correction(q[:1], k[:1], v[:1], scale=float(scale[0]), eta=15.0, zeta=0.0)
    assert torch.allclose(corr[:1], want, rtol=1e-10, atol=1e-12)


def test_batch_rows_are_independent():
    """λ is per batch row: a batch of N gives what N calls of one give (cond/uncond joined ==
    split)."""
    q, k, v = qkv(seed=4, batch=3)
    out, scale, *_ = target_gain_attention(q, k, v, target=1.7, eta=15.0, zeta=0.0, alpha=1.5)
    for b in range(3):
        one, one_scale, *_ = target_gain_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1],
                                                  target=1.7, eta=15.0, zeta=0.0, alpha=1.5)
        assert torch.allclose(one_scale, scale[b:b + 1], rtol=1e-12)
        assert torch.allclose(one, out[b:b + 1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(scale[0], scale[1])  # different rows, different λ


def test_strength_multiplies_lambda_after_the_bound():
    q, k, v = qkv(seed=5)
    _, full, *_ = target_gain_attention(q, k, v, target=1.8, eta=15.0, zeta=0.0, alpha=1.5)
    _, half, *_ = target_gain_attention(q, k, v, target=1.8, eta=15.0, zeta=0.0, alpha=1.5,
                                       strength=torch.tensor(0.5, dtype=torch.float64))
    assert torch.allclose(half, 0.5 * full, rtol=1e-12)


def test_bound_and_non_positive_median():
    a = torch.tensor([[0.001, 0.002, 0.003], [-0.5, -0.1, 0.2], [0.0, 0.0, 0.0],
                      [0.2, 0.3, 0.4]], dtype=torch.float64)
    scale, median = scale_for_target(a, 1.8)
    assert torch.equal(median, torch.tensor([0.002, -0.1, 0.0, 0.3], dtype=torch.float64))
    # row 0 needs λ = 400: held at the bound; rows 1–2 cannot be raised: λ = 0; row 3: 0.8/0.3
    assert torch.allclose(scale, torch.tensor([MAX_TARGET_SCALE, 0.0, 0.0, 0.8 / 0.3],
                                              dtype=torch.float64))
    empty_scale, _ = scale_for_target(torch.zeros(2, 3, 0, 1), 1.8)
    assert torch.equal(empty_scale, torch.zeros(2))


def test_a_zero_sparse_output_stays_finite():
    q, k, v = qkv(seed=6)
    v = torch.zeros_like(v)  # every retrieval is 0: a = 0 everywhere, λ = 0
    out, scale, _, a, _ = target_gain_attention(q, k, v, target=1.8, eta=15.0, zeta=0.5, alpha=1.5)
    assert torch.isfinite(out).all() and torch.equal(scale, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(out, torch.zeros_like(out))


def test_gain_coefficients_match_the_rule_at_unit_scale():
    q, k, v = qkv(seed=7)
    dense, sparse = ref_dense_sparse(q, k, v)
    unit, a, capped = gain_coefficients(dense, sparse, eta=0.5, zeta=0.3)
    assert torch.equal(capped, ref_gain(dense, sparse, 1.0, 0.5, 0.3)[1]) and capped.any()
    at_one = gag_attention(q, k, v, scale=1.0, eta=0.5, zeta=0.3, backend="torch")
    assert torch.allclose(sparse + unit, at_one, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("value", [0, 0.0, 1, 1.0, 1.8, 10, 10.0])
def test_check_target_gain_accepts(value):
    assert check_target_gain(value) == float(value)


@pytest.mark.parametrize("value", [0.5, -1.0, 10.5, math.nan, math.inf, "1.8", None, True])
def test_check_target_gain_rejects_with_a_clear_message(value):
    with pytest.raises(ValueError) as info:
        check_target_gain(value)
    message = str(info.value)
    assert "target_gain" in message and "[1, 10]" in message and "0" in message
    assert repr(value) in message


# --- no host synchronisation -------------------------------------------------------------------

# aten ops that read a device value back to the host, or whose output shape depends on values
# (and so must synchronise on a GPU to size it).
SYNCING_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "item", "unique",
               "_unique2", "is_nonzero", "equal", "allclose", "masked_scatter", "index_put_",
               "repeat_interleave")


class SyncCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.split(".")[0] in SYNCING_OPS or name.rstrip("_") in SYNCING_OPS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_target_terms_add_no_host_synchronisation():
    """What target-gain mode adds to the PyTorch path's retrievals — the gain coefficients, the
    per-row median, λ and the output — reads nothing back to the host."""
    q, k, v = qkv(seed=8, dtype=torch.float32)
    from gag_core import dense_sparse_attention
    dense, sparse = dense_sparse_attention(q, k, v, alpha=1.5)
    with SyncCounter() as counter:
        unit, a, _ = gain_coefficients(dense, sparse, eta=15.0, zeta=0.3)
        scale, _ = scale_for_target(a, 1.8, strength=torch.tensor(0.7))
        out = torch.addcmul(sparse, scale.view(-1, 1, 1, 1), unit)
    assert out.shape == sparse.shape
    assert counter.seen == []


def test_target_gain_call_syncs_no_more_than_the_retrievals_do():
    """The whole guided call syncs exactly as often as the dense and sparse retrievals it is built
    on (the PyTorch path's own reads, which its GPU policy owns): the mode adds none."""
    q, k, v = qkv(seed=9, dtype=torch.float32)
    from gag_core import dense_sparse_attention
    with SyncCounter() as base:
        dense_sparse_attention(q, k, v, alpha=1.5)
    with SyncCounter() as counter:
        target_gain_attention(q, k, v, target=1.8, eta=15.0, zeta=0.0, alpha=1.5)
    assert counter.seen == base.seen


# The cost model's tracer (bench/cost_model.py), whose sync rules cover every kind of host read
# (item/int/bool/float, nonzero, masked_select, boolean-mask indexing).
def _cost_model():
    import importlib.util
    import sys
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "bench" / "cost_model.py"
    spec = importlib.util.spec_from_file_location("bench_cost_model_target_gain", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("zeta", [0.0, 0.5])
def test_a_whole_target_gain_call_on_the_gpu_policy_never_reads_back(monkeypatch, zeta):
    """On the PyTorch path's GPU policy (sync-free retrievals; forced here on the CPU) the whole
    target-gain call — retrievals, coefficients, medians, λ, output — has no host read; and
    text mode's joint-attention call neither."""
    from gag_core.joint import text_guided_attention
    monkeypatch.setenv("GAG_TORCH_POLICY", "gpu")
    cost_model = _cost_model()
    q, k, v = qkv(seed=10, dtype=torch.float32)
    call, summary = cost_model.trace(target_gain_attention, q, k, v, target=1.8, eta=15.0,
                                     zeta=zeta, alpha=1.5, strength=torch.tensor(0.5))
    assert summary.syncs == 0, [o.name for o in summary.ops if o.syncs]
    assert torch.isfinite(call.out).all()
    jq, jk, jv = qkv(seed=11, lq=30, lk=30, dtype=torch.float32)

    def text_mode():
        def correction(q_img, k_txt, v_txt, mask):
            return target_gain_attention(q_img, k_txt, v_txt, target=1.8, eta=15.0, zeta=zeta,
                                         alpha=1.5, mask=mask, minus_dense=True).out
        return text_guided_attention(jq, jk, jv, 6, retrieval_correction=correction)

    _, summary = cost_model.trace(text_mode)
    assert summary.syncs == 0, [o.name for o in summary.ops if o.syncs]
