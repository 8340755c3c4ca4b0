"""bench/cost_model.py's op trace: a known op sequence gives known counts (launches, bytes,
FLOPs, host synchronisations), and the pricing follows the stated roofline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "bench" / "cost_model.py"
_SPEC = importlib.util.spec_from_file_location("bench_cost_model_counts", _PATH)
cost_model = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = cost_model
_SPEC.loader.exec_module(cost_model)


def _known_sequence(x: torch.Tensor, w: torch.Tensor):
    y = x * 2.0                      # 1 launch: read 4·8·4 B, write 4·8·4 B
    y.add_(1.0)                      # 1 launch: read 128 B, write 128 B (in place)
    z = y.view(8, 4).t()             # views: nothing
    buffer = torch.empty(4, 4)       # allocation: nothing
    del buffer
    p = torch.mm(x, w)               # 1 launch, 2·4·16·8 FLOPs, read 128 + 512 B, write 256 B
    total = y.sum()                  # 1 launch: read 128 B, write 4 B
    as_float = float(total)          # 1 sync (aten._local_scalar_dense)
    picked = y[y > 2.0]              # gt (1 launch) + boolean indexing: 1 sync
    count = int((y > 0).sum())       # gt, sum: 2 launches; int(): 1 sync
    return z, p, as_float, picked, count


def test_a_known_sequence_gives_known_counts():
    x = torch.ones(4, 8)
    w = torch.ones(8, 16)
    _, summary = cost_model.trace(_known_sequence, x, w)
    names = [op.name for op in summary.ops]
    assert names[:4] == ["mul", "add_", "mm", "sum"]
    assert summary.syncs == 3
    assert [op.name for op in summary.ops if op.syncs] == ["_local_scalar_dense", "index",
                                                           "_local_scalar_dense"]
    mul, add, mm, total = summary.ops[:4]
    assert (mul.launches, mul.read, mul.written) == (1, 128, 128)
    assert (add.launches, add.read, add.written) == (1, 128, 128)
    assert (mm.read, mm.written, mm.flops, mm.flop_dtype) == (128 + 512, 256, 2 * 4 * 16 * 8,
                                                              torch.float32)
    assert (total.read, total.written) == (128, 4)
    assert not any(op.name in ("view", "t", "empty") and op.launches for op in summary.ops)
    assert summary.flops(torch.float32) == 1024 and summary.flops(torch.float16) == 0


def test_broadcast_and_repeated_operands_count_once():
    a = torch.ones(64, 32)
    row = torch.ones(1, 32).expand(64, 32)          # stride-0 axis: 32 values read
    _, summary = cost_model.trace(lambda: (a + row, torch.mm(a, a.t())))
    add, mm = summary.ops
    assert add.read == 64 * 32 * 4 + 32 * 4
    assert mm.read == 64 * 32 * 4                   # a and aᵀ are one read
    assert summary.ops[1].flops == 2 * 64 * 64 * 32


def test_multi_kernel_operators_and_half_matmuls():
    s = torch.randn(6, 100)
    _, summary = cost_model.trace(lambda: s.topk(5, dim=-1))
    (topk,) = summary.ops
    assert topk.launches == 2 and topk.written == 6 * 5 * (4 + 8)
    q = torch.empty(3, 16, 8, dtype=torch.bfloat16, device="meta")
    k = torch.empty(3, 8, 32, dtype=torch.bfloat16, device="meta")
    _, summary = cost_model.trace(lambda: torch.bmm(q, k, out_dtype=torch.float32))
    (bmm,) = summary.ops
    assert bmm.flop_dtype == torch.bfloat16 and bmm.written == 3 * 16 * 32 * 4


def test_price_follows_the_roofline():
    roofline = cost_model.Roofline("test", bandwidth=1e9, matmul={torch.float32: 1e9},
                                   launch=1e-6, sync=1e-5, source="test")
    summary = cost_model.TraceSummary([
        cost_model.OpRecord("copy_", 1, 1000, 1000),                      # 2 µs of memory
        cost_model.OpRecord("mm", 1, 10, 10, 5000, torch.float32),      # 5 µs of compute
        cost_model.OpRecord("_local_scalar_dense", 1, 4, 0, syncs=1),
    ])
    expected = (2e-6 + 1e-6) + (5e-6 + 1e-6) + (4e-9 + 1e-6 + 1e-5)
    assert cost_model.price(summary, roofline) == pytest.approx(expected)
    # Overlapped: max(device time with a 2 µs floor per kernel, launch time) + syncs.
    device = 2e-6 + 5e-6 + 2e-6
    assert cost_model.price(summary, roofline, overlapped=True) == pytest.approx(
        max(device, 3e-6) + 1e-5)


def test_fused_and_sdpa_traffic_are_one_launch_without_syncs():
    # A guided attention call on the kernel is one launch; text mode's correction adds the
    # SDPA call it subtracts and the subtraction.
    for key, launches in (("sdxl-1024", 1), ("flux-joint", 1), ("flux-text", 3)):
        summary, what = cost_model.fused_traffic(cost_model.SHAPES[key])
        assert summary.launches == launches and summary.syncs == 0 and what
        sdpa = cost_model.sdpa_traffic(cost_model.SHAPES[key])
        assert sdpa.launches == 1 and sdpa.bytes < summary.bytes


@pytest.mark.parametrize("read_back", [
    lambda t: t.sum().item(),
    lambda t: int(t.sum()),
    lambda t: bool(t.sum() > 0),
    lambda t: float(t.amax()),
    lambda t: [0, 1, 2][t.long().amax()],            # __index__
    lambda t: t.nonzero(),
    lambda t: t.masked_select(t > 0),
    lambda t: t[t > 0],
], ids=["item", "int", "bool", "float", "index", "nonzero", "masked_select", "bool_mask"])
def test_every_kind_of_host_read_is_one_sync(read_back):
    t = torch.tensor([0.0, 1.0, 2.0])
    _, summary = cost_model.trace(read_back, t)
    assert summary.syncs == 1, [(op.name, op.syncs) for op in summary.ops]


def test_the_gpu_policy_trace_counts_no_sync_where_the_cpu_policy_counts_them():
    shape = cost_model.Shape("small", 1, 2, 64, 300, 32, torch.float16)
    assert cost_model.trace_gpu_policy(shape).syncs == 0
    assert cost_model.trace_cpu_policy(shape).syncs > 0
