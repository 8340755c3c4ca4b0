"""What one guided attention call costs on a GPU, estimated without a GPU.

    python bench/cost_model.py                    # the table for every shape, all paths, H100
    python bench/cost_model.py --gpu A100 --markdown
    python bench/cost_model.py --paths gpu,fused  # skip the slow trace of the CPU policy

How: ``OpTrace`` (a TorchDispatchMode) records every aten operator one call dispatches — kernel
launches, bytes read and written, matmul FLOPs per operand dtype, host synchronisations — and
``price`` puts each on a roofline:

    time = Σ_ops max(bytes / bandwidth, FLOPs / matmul peak of its dtype)
           + launches × launch cost + host syncs × sync cost

Paths:

* ``gpu``: the PyTorch path under its GPU policy (gag_core.gpu_policy), traced on **meta**
  tensors at the real shapes: its op sequence does not depend on the data (the schedule is
  fixed), so the counts are exact, and a host synchronisation there would fail the trace.
* ``cpu``: the PyTorch path under its CPU policy as it would run on a GPU (GPU-sized chunks,
  DEFAULT_CHUNK_BYTES), traced on real CPU tensors with random N(0, 1) q, k, v (its Newton
  loop and row compaction depend on the data); one chunk is traced and multiplied by the
  number of chunks.
* ``fused``: the Triton kernel, analytically (``fused_traffic``): one launch; K and V read once
  per query tile per pass (one pass on the short path, two on the streaming path), the
  candidate lists written once and read once per τ step.
* ``sdpa``: flash attention, analytically: q, k, v read once, the output written once,
  4·B·H·Lq·Lk·D FLOPs at the half-precision peak, one launch.

What the model leaves out (so read its figures as estimates): caches (every pass is priced at
HBM bandwidth, none at L2), overlap of launch overhead with running kernels (added, not
overlapped: eager PyTorch with small kernels), a sort or top-k costed as one read of its input
plus its outputs (a radix select makes more passes, mostly on chip), tails of small grids.
Checked once against the H100 (November, performance.md): the model gave 0.4–0.85 of the
measured times of the sort-based path — it errs low.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["Roofline", "ROOFLINES", "OpTrace", "TraceSummary", "trace", "price", "Shape",
           "SHAPES", "MODEL_CALLS", "trace_gpu_policy", "trace_cpu_policy", "fused_traffic",
           "sdpa_traffic", "estimate", "gag_env", "sdxl_paper_calls", "flux_calls",
           "model_call_estimate", "roofline_for", "main"]


# ---------------------------------------------------------------------------------------------
# Rooflines. Sustained figures, a little under the datasheet peaks (in brackets).

@dataclass(frozen=True)
class Roofline:
    name: str
    bandwidth: float            # bytes / s, HBM / GDDR
    matmul: dict                # FLOP/s per operand dtype (dense, fp32 accumulation)
    launch: float               # s per kernel launch (eager PyTorch dispatch + launch)
    sync: float                 # s per host synchronisation (pipeline drain + round trip)
    source: str
    memory: int = 80 * 2**30    # device memory: the GPU policy chunks queries to an eighth

    def matmul_peak(self, dtype: torch.dtype) -> float:
        return self.matmul.get(dtype, self.matmul[torch.float32])


ROOFLINES = {
    "H100": Roofline(
        "H100 SXM", 3.0e12,
        {torch.float16: 600e12, torch.bfloat16: 600e12, torch.float32: 60e12,
         torch.float64: 60e12},
        4e-6, 20e-6,
        "NVIDIA H100 datasheet (SXM5: HBM3 3.35 TB/s, FP16/BF16 dense 989 TFLOP/s, FP32 67, "
        "FP64 tensor 67); sustained: ~90% of bandwidth, ~60% of the tensor peak at these "
        "shapes; launch and sync costs of eager PyTorch (issue 20)"),
    "A100": Roofline(
        "A100 SXM 80GB", 1.8e12,
        {torch.float16: 250e12, torch.bfloat16: 250e12, torch.float32: 18e12,
         torch.float64: 18e12},
        4e-6, 20e-6,
        "NVIDIA A100 datasheet (HBM2e 2.04 TB/s, FP16/BF16 dense 312 TFLOP/s, FP32 19.5, "
        "FP64 tensor 19.5); same derating"),
    "RTX4090": Roofline(
        "RTX 4090", 0.9e12,
        {torch.float16: 150e12, torch.bfloat16: 150e12, torch.float32: 75e12,
         torch.float64: 1.2e12},
        4e-6, 20e-6,
        "NVIDIA Ada whitepaper (GDDR6X 1.008 TB/s, FP16/BF16 tensor with FP32 accumulation "
        "165 TFLOP/s dense, FP32 82.6, FP64 1.3); same derating", memory=24 * 2**30),
}


# ---------------------------------------------------------------------------------------------
# The op trace.

_aten = torch.ops.aten
# Operators that launch no kernel: views, metadata, allocation without initialisation.
_NO_KERNEL = {
    "view", "_unsafe_view", "as_strided", "slice", "select", "transpose", "t", "expand",
    "unsqueeze", "squeeze", "permute", "alias", "detach", "empty", "empty_like",
    "empty_strided", "new_empty", "new_empty_strided", "_reshape_alias", "unbind", "split",
    "split_with_sizes", "narrow", "diagonal", "unfold", "lift_fresh", "resize_", "set_",
    "_to_copy_noop", "sym_size", "sym_stride", "sym_numel", "is_same_size", "result_type",
    "view_as", "reshape_alias", "movedim", "mT", "real",
}
# Operators that read device data on the host: each one synchronises.
_SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique",
            "_unique2", "unique_consecutive", "unique_dim", "equal", "nonzero_static_sync",
            "masked_scatter", "repeat_interleave"}
# Operators that launch more than one kernel in PyTorch's CUDA implementation.
_LAUNCHES = {"topk": 2, "sort": 2, "nonzero": 2, "constant_pad_nd": 2, "masked_select": 3,
             "index_put_": 2, "count_nonzero": 2, "var_mean": 1}
# (count_nonzero over a dim is (x != 0).sum(dim) on CUDA: a comparison kernel and a sum.)
_MATMULS = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "_int_mm"}


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches to read or write ``t``: broadcast (stride-0) axes once."""
    count = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            count *= size
    return count * t.element_size()


def _storage_key(t: torch.Tensor):
    """Identity of the memory a view reads: storage, offset and its (size, |stride|) set, so a
    tensor and its transpose passed to one kernel count once."""
    try:
        storage = t.untyped_storage()._cdata
    except Exception:  # tensors without a storage (some subclasses)
        storage = id(t)
    extent = tuple(sorted((size, abs(stride)) for size, stride in zip(t.shape, t.stride())))
    return storage, t.storage_offset(), extent


def _unique_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = _storage_key(t)
        if key not in seen:
            seen.add(key)
            total += _tensor_bytes(t)
    return total


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


@dataclass
class OpRecord:
    name: str
    launches: int
    read: int
    written: int
    flops: float = 0.0
    flop_dtype: Optional[torch.dtype] = None
    syncs: int = 0


@dataclass
class TraceSummary:
    ops: list = field(default_factory=list)

    @property
    def launches(self) -> int:
        return sum(op.launches for op in self.ops)

    @property
    def syncs(self) -> int:
        return sum(op.syncs for op in self.ops)

    @property
    def bytes(self) -> int:
        return sum(op.read + op.written for op in self.ops)

    @property
    def read(self) -> int:
        return sum(op.read for op in self.ops)

    @property
    def written(self) -> int:
        return sum(op.written for op in self.ops)

    def flops(self, dtype: Optional[torch.dtype] = None) -> float:
        return sum(op.flops for op in self.ops if dtype is None or op.flop_dtype == dtype)

    def scaled(self, factor: float) -> "TraceSummary":
        """The same ops repeated ``factor`` times (chunks of one call)."""
        return TraceSummary([OpRecord(o.name, o.launches * factor, o.read * factor,
                                      o.written * factor, o.flops * factor, o.flop_dtype,
                                      o.syncs * factor) for o in self.ops])

    def by_op(self) -> dict:
        table: dict = {}
        for op in self.ops:
            row = table.setdefault(op.name, [0, 0, 0])
            row[0] += op.launches
            row[1] += op.read + op.written
            row[2] += op.syncs
        return table


def _matmul_flops(name: str, args, out) -> tuple[float, Optional[torch.dtype]]:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if name in ("addmm", "baddbmm", "addbmm"):
        tensors = tensors[1:]
    if len(tensors) < 2 or not isinstance(out, torch.Tensor):
        return 0.0, None
    a = tensors[0]
    inner = a.shape[-1]
    return 2.0 * out.numel() * inner, a.dtype


def _sdpa_flops(args, out) -> tuple[float, Optional[torch.dtype]]:
    q, k = args[0], args[1]
    b_h = q.numel() // (q.shape[-2] * q.shape[-1])
    return 4.0 * b_h * q.shape[-2] * k.shape[-2] * q.shape[-1], q.dtype


def _bool_indexing(name: str, args) -> bool:
    if name not in ("index", "index_put_", "index_put"):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class OpTrace(TorchDispatchMode):
    """Record every aten operator run under it (see the module docstring): ``summary``.

    Counting rules: views and uninitialised allocations launch nothing; every other operator
    launches one kernel (``_LAUNCHES`` lists the few that launch more); a kernel reads each
    tensor argument once and writes each output once (broadcast axes counted once); matmuls
    count 2·M·N·K FLOPs under their operand dtype; ``_SYNCING`` operators and boolean-mask
    indexing each synchronise the host once (``.item()``, ``int(t)``, ``bool(t)`` and
    ``float(t)`` all reach ``aten._local_scalar_dense``)."""

    def __init__(self):
        super().__init__()
        self.summary = TraceSummary()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        syncs = 1 if (name in _SYNCING or _bool_indexing(name, args)) else 0
        if name == "repeat_interleave" and kwargs.get("output_size") is not None:
            syncs = 0
        out = func(*args, **kwargs)
        if name in _NO_KERNEL:
            if syncs:
                self.summary.ops.append(OpRecord(name, 0, 0, 0, syncs=syncs))
            return out
        read = _unique_bytes(list(_tensors(args))
                             + [t for t in _tensors(kwargs) if t is not kwargs.get("out")])
        written = _unique_bytes(_tensors(out))
        flops, flop_dtype = 0.0, None
        if name in _MATMULS:
            flops, flop_dtype = _matmul_flops(name, args, out)
        elif name.startswith("_scaled_dot_product") or name == "scaled_dot_product_attention":
            flops, flop_dtype = _sdpa_flops(args, out if isinstance(out, torch.Tensor) else out[0])
        if name == "_local_scalar_dense":
            read, written = _tensor_bytes(args[0]), 0
        self.summary.ops.append(OpRecord(name, _LAUNCHES.get(name, 1), read, written, flops,
                                         flop_dtype, syncs))
        return out


def trace(fn: Callable, *args, **kwargs) -> tuple[object, TraceSummary]:
    """Run fn(*args, **kwargs) under an OpTrace: (its result, the trace summary)."""
    with OpTrace() as tracer:
        result = fn(*args, **kwargs)
    return result, tracer.summary


# Shortest time a kernel occupies the GPU (launch latency and tail), for the overlapped bound.
_MIN_KERNEL_SECONDS = 2e-6


def price(summary: TraceSummary, roofline: Roofline, *, overlapped: bool = False) -> float:
    """Seconds the traced ops take on ``roofline``.

    Default (the headline estimate, as in issue 20): every op's roofline time plus its launch
    and sync costs, added up. overlapped=True: the lower bound where the host issues launches
    while earlier kernels run: max(Σ launch costs, Σ max(roofline time, 2 µs)) + sync costs
    (a sync drains the queue, so nothing overlaps it)."""
    seconds = device = host = syncs = 0.0
    for op in summary.ops:
        if op.launches == 0 and op.syncs == 0:
            continue
        memory = (op.read + op.written) / roofline.bandwidth
        compute = op.flops / roofline.matmul_peak(op.flop_dtype) if op.flops else 0.0
        seconds += max(memory, compute) + op.launches * roofline.launch + op.syncs * roofline.sync
        device += max(memory, compute, _MIN_KERNEL_SECONDS * op.launches)
        host += op.launches * roofline.launch
        syncs += op.syncs * roofline.sync
    return max(device, host) + syncs if overlapped else seconds


# ---------------------------------------------------------------------------------------------
# Shapes and model calls.

@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    heads: int
    lq: int
    lk: int
    d: int
    dtype: torch.dtype
    # What the pack calls per guided layer: "attention" (gag_attention replaces the layer's
    # attention: UNet cross-attention, joint mode) or "correction" (text mode: the model's own
    # joint SDPA runs, and gag_correction adds GAG's change on the image-query × text-key part;
    # its SDPA baseline is that joint call, priced as the SDPA column).
    call: str = "attention"
    note: str = ""  # what the shape is, for tables (bench_attention_op.py)

    @property
    def dims(self) -> tuple:
        return (self.batch, self.heads, self.lq, self.lk, self.d)

    @property
    def label(self) -> str:
        return (f"B{self.batch} H{self.heads} Lq{self.lq} Lk{self.lk} D{self.d} "
                f"{str(self.dtype)[6:]}")


SHAPES = {
    "sdxl-4096": Shape("SDXL cross, 64² level", 2, 10, 4096, 77, 64, torch.float16),
    "sdxl-1024": Shape("SDXL cross, 32² level", 2, 20, 1024, 77, 64, torch.float16),
    "flux-text": Shape("FLUX.1 text mode 1024²", 1, 24, 4096, 512, 128, torch.bfloat16,
                       "correction"),
    "flux-joint": Shape("FLUX.1 joint 1024²", 1, 24, 4608, 4608, 128, torch.bfloat16),
    "zimage-text": Shape("Z-Image text mode 1024²", 1, 30, 4096, 512, 128, torch.bfloat16,
                         "correction"),
    "zimage-joint": Shape("Z-Image joint 1024²", 1, 30, 4608, 4608, 128, torch.bfloat16),
    "wan-cross": Shape("Wan cross-attention", 1, 40, 32760, 512, 128, torch.bfloat16),
}

# Per model call: which shapes run how often, and the unguided step time measured on an H100
# (performance.md; None where no measurement exists).
MODEL_CALLS = {
    "SDXL 1024², paper layers (input + output)": ({"sdxl-4096": 10, "sdxl-1024": 50}, 43.1e-3),
    "FLUX.1 1024², text mode (19 double + 38 single)": ({"flux-text": 57}, 173e-3),
    "FLUX.1 1024², joint mode (19 double blocks)": ({"flux-joint": 19}, 173e-3),
    "Z-Image 1024², text mode (30 blocks)": ({"zimage-text": 30}, None),
    "Z-Image 1024², joint mode (30 blocks)": ({"zimage-joint": 30}, None),
    "Wan 14B, 32,760 tokens, cross-attention (40 blocks)": ({"wan-cross": 40}, None),
}


def _paper_params():
    from gag_core.defaults import PAPER
    return dict(scale=PAPER.scale, eta=PAPER.eta, zeta=PAPER.zeta, alpha=PAPER.alpha)


def trace_gpu_policy(shape: Shape, device: str = "meta",
                     roofline: Optional[Roofline] = None) -> TraceSummary:
    """One guided call (gag_attention, or gag_correction for text mode: ``shape.call``) under
    the GPU policy at ``shape`` (meta tensors by default)."""
    from gag_core import gag_attention, gag_correction
    b, h, lq, lk, d = shape.dims
    q = torch.empty(b, h, lq, d, dtype=shape.dtype, device=device)
    k = torch.empty(b, h, lk, d, dtype=shape.dtype, device=device)
    v = torch.empty(b, h, lk, d, dtype=shape.dtype, device=device)
    fn = gag_correction if shape.call == "correction" else gag_attention
    kwargs = dict(_paper_params(), **({} if shape.call == "correction" else {"backend": "torch"}))
    # Query chunks as on the target GPU: an eighth of its memory (gpu_policy.device_chunk_bytes).
    kwargs["chunk_bytes"] = (roofline or ROOFLINES["H100"]).memory // 8
    with gag_env(torch_policy="gpu"):
        # One untraced call first: the policy's small device constants (ranks, the ones
        # appended to V) are made once per process, not per call.
        fn(q, k, v, **kwargs)
        _, summary = trace(fn, q, k, v, **kwargs)
    return summary


def trace_cpu_policy(shape: Shape, seed: int = 0) -> TraceSummary:
    """The CPU policy's ops for one call as it runs on a GPU (GPU-sized chunks): one chunk
    traced on random CPU tensors, times the number of chunks."""
    from gag_core import attention as attn
    from gag_core.rule import combine_checked
    b, h, lq, lk, d = shape.dims
    step = attn._query_chunk(b, h, lq, lk, attn.DEFAULT_CHUNK_BYTES, on_cpu=False)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, step, d, generator=gen).to(shape.dtype)
    k = torch.randn(b, h, lk, d, generator=gen).to(shape.dtype)
    v = torch.randn(b, h, lk, d, generator=gen).to(shape.dtype)
    p = _paper_params()

    def one_chunk():
        v_c = v.to(attn.compute_dtype(q.dtype))
        dense, sparse = attn._retrievals(q, k, v_c, None, p["alpha"])
        out = combine_checked(dense, sparse, p["scale"], p["eta"], p["zeta"])
        return out.sub_(dense) if shape.call == "correction" else out.to(q.dtype)

    old = torch.get_num_threads()
    _, summary = trace(one_chunk)
    torch.set_num_threads(old)
    return summary.scaled(math.ceil(lq / step))


def _fused_summary(name: str, read: float, written: float, flops: float,
                   dtype: torch.dtype) -> TraceSummary:
    return TraceSummary([OpRecord(name, 1, int(read), int(written), flops, dtype, 0)])


def fused_traffic(shape: Shape, list_length: int = 64, tau_steps: int = 8) -> tuple:
    """(TraceSummary, description) of the fused kernel, analytically (bench/KERNEL_NOTES.md):
    short path (Lk ≤ 256): K, V read once per 32-query tile (16 for > 128 keys); streaming
    path: twice (pass 1: dense + lists, pass 2: sparse) per 64-query tile, each row's list of
    ``list_length`` float32 candidates written once and read ``tau_steps`` times."""
    from gag_core.kernels.config import SHORT_MAX_KEYS
    b, h, lq, lk, d = shape.dims
    elt = torch.finfo(shape.dtype).bits // 8
    kv = lk * 2 * d * elt
    io = b * h * lq * d * elt * 2                      # q read, output written
    if lk <= SHORT_MAX_KEYS:
        block_m = 32 if lk <= 128 else 16
        tiles = math.ceil(lq / block_m)
        kv_reads = b * h * tiles * kv
        flops = b * h * lq * lk * d * 2 * 3            # scores once, two P·V
        lists = 0
        what = f"short path: K,V read once per {block_m}-query tile"
    else:
        tiles = math.ceil(lq / 64)
        kv_reads = 2 * b * h * tiles * kv
        flops = b * h * lq * lk * d * 2 * 4            # scores twice, two P·V
        lists = b * h * lq * min(list_length, lk) * 4 * (1 + tau_steps)
        what = (f"stream path: K,V read twice per 64-query tile; lists {list_length} × 4 B per "
                f"row, 1 write + {tau_steps} reads")
    summary = _fused_summary("fused_gag_attention", kv_reads + io / 2 + lists / 2,
                             io / 2 + lists / 2, flops, shape.dtype)
    if shape.call == "correction":
        # gag_correction on the kernel: its output minus one SDPA call (cast and subtract).
        summary.ops += sdpa_traffic(shape).ops
        summary.ops.append(OpRecord("sub", 1, b * h * lq * d * elt * 2, b * h * lq * d * 4))
        what += "; text mode: minus one SDPA call"
    return summary, what


def sdpa_traffic(shape: Shape) -> TraceSummary:
    b, h, lq, lk, d = shape.dims
    elt = torch.finfo(shape.dtype).bits // 8
    read = b * h * (lq + 2 * lk) * d * elt
    return _fused_summary("flash_attention", read, b * h * lq * d * elt,
                          4.0 * b * h * lq * lk * d, shape.dtype)


def estimate(shape_key: str, path: str, roofline: Roofline) -> dict:
    """{launches, syncs, bytes, seconds, sdpa_seconds} for one call of ``path``."""
    shape = SHAPES[shape_key]
    note = ""
    if path == "gpu":
        summary = trace_gpu_policy(shape, roofline=roofline)
    elif path == "cpu":
        summary = trace_cpu_policy(shape)
    elif path == "fused":
        summary, note = fused_traffic(shape)
    elif path == "sdpa":
        summary = sdpa_traffic(shape)
    else:
        raise ValueError(f"path must be gpu, cpu, fused or sdpa; got {path!r}")
    return dict(launches=summary.launches, syncs=summary.syncs, bytes=summary.bytes,
                seconds=price(summary, roofline),
                overlapped=price(summary, roofline, overlapped=True),
                sdpa_seconds=price(sdpa_traffic(shape), roofline), note=note,
                summary=summary)


@contextlib.contextmanager
def gag_env(**values: str):
    """Temporarily set GAG_* environment variables (``torch_policy="gpu"`` sets
    GAG_TORCH_POLICY, ``backend="torch"`` sets GAG_BACKEND); the pack reads them per call."""
    names = {key: f"GAG_{key.upper()}" for key in values}
    old = {name: os.environ.get(name) for name in names.values()}
    os.environ.update({names[key]: value for key, value in values.items()})
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sdxl_paper_calls(batch: int = 2, size: int = 1024, tokens: int = 77,
                     dtype: torch.dtype = torch.float16) -> dict:
    """{Shape: calls} of one SDXL model call with GAG on the paper layers (input + output
    blocks): 4 + 6 transformer blocks at size/16 (10 heads), 20 + 30 at size/32 (20 heads)."""
    level1 = Shape(f"SDXL cross {size // 16}²", batch, 10, (size // 16) ** 2, tokens, 64, dtype)
    level2 = Shape(f"SDXL cross {size // 32}²", batch, 20, (size // 32) ** 2, tokens, 64, dtype)
    return {level1: 10, level2: 50}


def flux_calls(size: int = 1024, text_tokens: int = 512, mode: str = "text",
               dtype: torch.dtype = torch.bfloat16) -> dict:
    """{Shape: calls} of one FLUX.1 model call with GAG on the paper layers: text mode in the
    19 double and 38 single blocks, joint mode in the 19 double blocks."""
    image = (size // 16) ** 2
    if mode == "text":
        return {Shape(f"FLUX text {size}²", 1, 24, image, text_tokens, 128, dtype,
                      "correction"): 57}
    tokens = image + text_tokens
    return {Shape(f"FLUX joint {size}²", 1, 24, tokens, tokens, 128, dtype): 19}


def model_call_estimate(calls: dict, path: str, roofline: Roofline) -> float:
    """Seconds GAG adds to one model call: Σ calls × (GAG estimate − SDPA estimate)."""
    total = 0.0
    for shape, count in calls.items():
        if path == "gpu":
            summary = trace_gpu_policy(shape, roofline=roofline)
        elif path == "cpu":
            summary = trace_cpu_policy(shape)
        else:
            summary = fused_traffic(shape)[0]
        total += count * (price(summary, roofline) - price(sdpa_traffic(shape), roofline))
    return total


def roofline_for(device_name: str) -> Roofline:
    """The roofline closest to a device name: A100, RTX 4090, else H100."""
    name = device_name.upper()
    return ROOFLINES["A100" if "A100" in name else "RTX4090" if "4090" in name else "H100"]


def _fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 0.1 else f"{ms:.2f}" if ms < 10 else f"{ms:.0f}"


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="H100", choices=sorted(ROOFLINES))
    parser.add_argument("--paths", default="gpu,fused,cpu",
                        help="comma list of gpu (GPU policy), cpu (CPU policy on a GPU), fused")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    roofline = ROOFLINES[args.gpu]
    paths = [p for p in args.paths.split(",") if p]
    shapes = [s for s in args.shapes.split(",") if s]
    sep = " | " if args.markdown else "  "
    print(f"Estimates on the {roofline.name} roofline: {roofline.bandwidth / 1e12:.1f} TB/s, "
          f"half matmul {roofline.matmul[torch.float16] / 1e12:.0f} TFLOP/s, fp32 "
          f"{roofline.matmul[torch.float32] / 1e12:.0f}, {roofline.launch * 1e6:.0f} µs per "
          f"launch, {roofline.sync * 1e6:.0f} µs per host sync ({roofline.source}).")
    header = ["shape (B, H, Lq, Lk, D)", "path", "launches", "host syncs", "bytes",
              "estimate ms", "overlapped ms", "SDPA ms", "× SDPA"]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
    else:
        print(sep.join(header))
    results: dict = {}
    for key in shapes:
        shape = SHAPES[key]
        for path in paths:
            row = estimate(key, path, roofline)
            results[(key, path)] = row
            cells = [f"{shape.name} {shape.dims}", path, f"{row['launches']:,}",
                     f"{row['syncs']:,}", _fmt_bytes(row["bytes"]), _fmt_ms(row["seconds"]),
                     _fmt_ms(row["overlapped"]), _fmt_ms(row["sdpa_seconds"]),
                     f"{row['seconds'] / row['sdpa_seconds']:.0f}"]
            print(("| " + sep.join(cells) + " |") if args.markdown else sep.join(cells))
    print()
    header = ["model call", "path", "GAG adds ms", "unguided step ms", "+% of step"]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
    else:
        print(sep.join(header))
    for model, (calls, step) in MODEL_CALLS.items():
        if not all(key in shapes for key in calls):
            continue
        if args.gpu != "H100":
            step = None          # the unguided step times were measured on an H100
        for path in paths:
            added = sum(n * (results[(key, path)]["seconds"] - results[(key, path)]["sdpa_seconds"])
                        for key, n in calls.items())
            cells = [model, path, _fmt_ms(added), f"{step * 1e3:.0f}" if step else "—",
                     f"+{100 * added / step:.0f}%" if step else "—"]
            print(("| " + sep.join(cells) + " |") if args.markdown else sep.join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
