"""gag_core under torch.compile.

ComfyUI's TorchCompileModel node compiles the whole diffusion model (fullgraph=False), so GAG's
attention is traced by dynamo whenever a user stacks the two. What must hold:

* gag_attention traces into ONE graph with no breaks, for every entmax form and with masks. The
  sort-based entmax forms size their sort by a data-dependent candidate count (``.item()``);
  under compile they sort the whole row instead (gag_core/sparse.py ``_sort_candidates``).
* The full-row path gives the same maps as the eager top-k path (same support, values equal to
  float32 rounding) and matches the float64 reference.
* The compiled function matches the float64 reference.

CPU compile is slow, so the compiled runs use one tiny shape. The tracing checks use
dynamo.explain and the "aot_eager" backend (dynamo + AOT autograd, no C++ code generation: a few
seconds). The inductor check costs about a minute with a cold cache on a 2-core machine: it runs
on CUDA where one exists and on CPU only when GAG_TEST_INDUCTOR=1 is set.
"""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch

from gag_core import gag_attention
from gag_core import sparse as sparse_module
from gag_core.sparse import alpha_entmax, entmax15, sparsemax

from reference import ref_entmax, ref_gag_attention, rel_frobenius

dynamo = pytest.importorskip("torch._dynamo")


def _qkv(seed=0, batch=1, heads=2, lq=16, lk=12, dim=8, spread=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, lq, dim, generator=g) * spread
    k = torch.randn(batch, heads, lk, dim, generator=g) * spread
    v = torch.randn(batch, heads, lk, dim, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _keep_mask(lq=16, lk=12, seed=1):
    keep = torch.rand(1, 1, lq, lk, generator=torch.Generator().manual_seed(seed)) > 0.4
    keep[..., 0] = True  # every query keeps at least one key
    return keep


def _hard_score_rows() -> torch.Tensor:
    """Rows that stress the support search: ties, huge spreads, −inf masks, one survivor, a fully
    masked row, all-equal scores, and long rows where almost everything is a candidate."""
    g = torch.Generator().manual_seed(3)
    rows = []
    rows.append(torch.randn(8, 40, generator=g) * 0.05)            # nearly flat: big support
    rows.append(torch.randn(8, 40, generator=g) * 40.0)            # peaked: support of 1-2
    tied = torch.randn(8, 40, generator=g).round()                 # many exact ties
    rows.append(tied)
    masked = torch.randn(8, 40, generator=g) * 3.0
    masked[:, ::3] = float("-inf")
    masked[0, 1:] = float("-inf")                                  # a single survivor
    masked[1] = float("-inf")                                      # fully masked
    rows.append(masked)
    rows.append(torch.zeros(8, 40))                                # uniform
    rows.append(torch.randn(8, 40, generator=g) * 1e4)             # would overflow fp16 exp
    return torch.cat(rows)


@pytest.mark.parametrize("entmax", [entmax15, sparsemax], ids=["entmax15", "sparsemax"])
def test_full_row_sort_used_under_compile_matches_topk_path_and_reference(entmax):
    scores = _hard_score_rows()
    eager = entmax(scores)
    with mock.patch.object(torch.compiler, "is_compiling", return_value=True), \
            mock.patch.object(sparse_module, "_candidate_count",
                              side_effect=AssertionError("data-dependent count used under compile")):
        full_row = entmax(scores)
    alpha = 1.5 if entmax is entmax15 else 2.0
    reference = ref_entmax(scores.double(), alpha)
    # Same support (entries within rounding of zero aside) and the same values to float32 rounding.
    clearly_in = reference > 1e-6
    assert torch.equal(full_row[clearly_in] > 0, eager[clearly_in] > 0)
    assert ((full_row > 0) == (eager > 0))[reference == 0].all()
    assert (full_row - eager).abs().max().item() < 1e-5
    assert (full_row.double() - reference).abs().max().item() < 1e-5
    assert torch.isfinite(full_row).all()


@pytest.mark.parametrize("alpha,mask_kind", [(1.5, None), (1.5, "bool"), (1.5, "float"),
                                             (2.0, "bool"), (1.3, None)])
def test_gag_attention_traces_into_one_graph_without_breaks(alpha, mask_kind):
    q, k, v = _qkv()
    mask = None
    if mask_kind == "bool":
        mask = _keep_mask()
    elif mask_kind == "float":
        mask = torch.where(_keep_mask(), 0.0, -1e4)

    def guided(q, k, v, mask):
        return gag_attention(q, k, v, alpha=alpha, mask=mask, backend="torch")

    dynamo.reset()
    explanation = dynamo.explain(guided)(q, k, v, mask)
    reasons = [str(b.reason).splitlines()[0] for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1


def test_eager_path_still_sizes_the_sort_by_the_candidate_count():
    """The compile branch must not leak into eager runs (it sorts more than needed)."""
    scores = torch.randn(4, 64, generator=torch.Generator().manual_seed(5)) * 30.0
    with mock.patch.object(sparse_module, "_candidate_count",
                           wraps=sparse_module._candidate_count) as counted:
        alpha_entmax(scores, 1.5)
    assert counted.call_count == 1
    assert counted.call_args.args[0].shape == scores.shape


def test_fullgraph_compile_matches_float64_reference_aot_eager():
    q, k, v = _qkv(seed=2)
    mask = _keep_mask(seed=4)

    def guided(q, k, v, mask):
        return gag_attention(q, k, v, scale=10.0, eta=15.0, zeta=0.3, mask=mask, backend="torch")

    dynamo.reset()
    compiled = torch.compile(guided, backend="aot_eager", fullgraph=True, dynamic=False)
    out = compiled(q, k, v, mask)
    expected = ref_gag_attention(q, k, v, 10.0, 15.0, 0.3, 1.5, mask)
    assert out.dtype == q.dtype and out.shape == expected.shape
    assert rel_frobenius(out, expected) < 1e-5
    assert rel_frobenius(out, guided(q, k, v, mask)) < 1e-5


def _inductor_device() -> str | None:
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("GAG_TEST_INDUCTOR") == "1":
        return "cpu"
    return None


@pytest.mark.skipif(_inductor_device() is None,
                    reason="inductor compile takes ~1 min on CPU; runs on CUDA, or on CPU with "
                           "GAG_TEST_INDUCTOR=1")
def test_fullgraph_inductor_compile_matches_float64_reference():
    device = _inductor_device()
    q, k, v = (t.to(device) for t in _qkv(seed=6))
    mask = _keep_mask(seed=7).to(device)

    def guided(q, k, v, mask):
        return gag_attention(q, k, v, mask=mask, backend="torch")

    dynamo.reset()
    compiled = torch.compile(guided, backend="inductor", fullgraph=True, dynamic=False)
    out = compiled(q, k, v, mask)
    expected = ref_gag_attention(q.cpu(), k.cpu(), v.cpu(), mask=mask.cpu())
    assert torch.isfinite(out).all()
    assert rel_frobenius(out.cpu(), expected) < 1e-4
