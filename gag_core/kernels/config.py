"""Launch configuration of the fused GAG kernel, without importing Triton.

The one home of the kernel's constants (dtypes, head-dim and key-count limits) and of the
block sizes a call gets: ``gag_core.kernels`` reads them to decide whether a call can take the
kernel (it must not import Triton on machines that only run the PyTorch path), and
``triton_gag`` launches with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["KernelConfig", "kernel_config", "shared_memory_bytes", "SUPPORTED_DTYPES",
           "SHORT_MAX_KEYS", "MAX_HEAD_DIM", "MIN_CAPABILITY"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Rows up to this many keys live in registers whole (SDXL text: 77, 154, 231 tokens).
SHORT_MAX_KEYS = 256
# The output tile (BLOCK_M × Dv) and the combination need the whole head dim in one program.
MAX_HEAD_DIM = 256
# bf16 tensor-core dots and the tf32x3 float32 dots need Ampere (sm_80) or newer.
MIN_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class KernelConfig:
    """Launch choices for one call; ``kernel_config`` picks them, tests may override fields."""
    path: str             # "short" or "stream"
    block_m: int
    block_n: int
    block_d: int
    block_dv: int
    num_warps: int
    num_stages: int
    list_cap: int = 0     # stream path: candidate slots per query row
    list_block: int = 64  # stream path: list columns read per step of the τ loop
    num_programs: int = 0  # stream path: persistent programs (0 = from the device)


def _pow2_at_least(n: int, floor: int = 16) -> int:
    return max(floor, 1 << (max(int(n), 1) - 1).bit_length())


def shared_memory_bytes(config: KernelConfig, dtype: torch.dtype) -> int:
    """Estimated shared memory of one program, at or above what Triton allocates: the operands
    of each dot are staged there (the streaming kernel keeps q and its pipelined K and V tiles
    at once), and float32's tf32x3 dots stage hi and lo halves, so count 8 bytes per value.
    Against Triton 3.8's sm_90 compiles (tests/core/test_kernel_compile.py): exact for the
    fp16/bf16 short tiles (D = 256, Lk 256: 139 KB) and the D = 64 streaming tile, up to 2×
    above for the others (float32 most)."""
    elt = 8 if dtype == torch.float32 else 2
    stages = max(config.num_stages, 1)
    if config.path == "stream":
        values = (config.block_m * config.block_d
                  + stages * config.block_n * (config.block_d + config.block_dv))
    else:
        values = max(config.block_m * config.block_d + config.block_d * config.block_n,
                     config.block_m * config.block_n + config.block_n * config.block_dv)
    return values * elt


def kernel_config(lq: int, lk: int, d: int, dv: int, dtype: torch.dtype, *,
                  path: str = "auto", shared_memory_limit: Optional[int] = None) -> KernelConfig:
    """Block sizes for a call; untuned defaults sized for H100 register files (see
    bench/KERNEL_NOTES.md). With ``shared_memory_limit`` (bytes per block, the device's opt-in
    maximum), "auto" falls back from the short path to the streaming one and then to smaller
    query tiles until the estimate fits; ValueError where nothing fits or a forced path does
    not."""
    if path not in ("auto", "short", "stream"):
        raise ValueError(f"path must be 'auto', 'short' or 'stream'; got {path!r}")
    candidates = []
    if path in ("auto", "short"):
        if lk > SHORT_MAX_KEYS:
            if path == "short":
                raise ValueError(f"path='short' holds whole key rows in registers and needs "
                                 f"Lk <= {SHORT_MAX_KEYS}; got Lk={lk}")
        else:
            candidates.append(_short_config(lk, d, dv))
    if path in ("auto", "stream"):
        candidates += [_stream_config(lk, d, dv, block_m) for block_m in (64, 32, 16)]
    for config in candidates:
        if shared_memory_limit is None or shared_memory_bytes(config, dtype) <= shared_memory_limit:
            return config
    need = min(shared_memory_bytes(c, dtype) for c in candidates)
    raise ValueError(f"the fused kernel needs at least {need / 1024:.0f} KiB of shared memory "
                     f"per block for D={d}, Dv={dv}, Lk={lk}, {dtype}; this GPU allows "
                     f"{shared_memory_limit / 1024:.0f} KiB")


def _short_config(lk: int, d: int, dv: int) -> KernelConfig:
    block_d, block_dv, block_n = _pow2_at_least(d), _pow2_at_least(dv), _pow2_at_least(lk)
    # Sized so that ptxas reports no spills for sm_90 at D = 64 and 128, with and without
    # masks (the score, shifted-score and probability tiles are BLOCK_M × BLOCK_N float32).
    block_m = 32 if block_n <= 128 else 16
    num_warps = 8 if block_n * max(block_d, block_dv) > 256 * 64 else 4
    return KernelConfig("short", block_m, block_n, block_d, block_dv, num_warps, 1)


def _stream_config(lk: int, d: int, dv: int, block_m: int) -> KernelConfig:
    # Candidate-list slots per query row. With random N(0, 1) q and k at α = 1.5 the longest
    # list in 256 rows is ~0.5·Lk at Lk = 512, 0.33·Lk at 1536, 0.26·Lk at 4608 and 0.14·Lk at
    # 16896 without the lower-bound cut of the band (see triton_gag); trained attention is
    # usually peakier. A tile with a longer list still gets the exact τ, from passes that
    # recompute the scores, only slower.
    list_cap = min(lk, 256 + lk // 4, 4096)
    list_cap = (list_cap + 15) // 16 * 16
    # 64 × 32 tiles at 8 warps: of the variants tried, the one with the fewest spill bytes in
    # ptxas's sm_90 report (8–400 bytes over D = 64/128, with and without masks); the kernel
    # keeps three loops' state in one program. Untimed: bench/bench_attention_op.py --tune.
    return KernelConfig("stream", block_m, 32, _pow2_at_least(d), _pow2_at_least(dv), 8, 2,
                        list_cap=list_cap)


# Opt-in shared memory per block by compute capability, where torch does not report it.
_SHARED_MEMORY_BY_CAPABILITY = {(8, 0): 163 * 1024, (8, 7): 163 * 1024, (9, 0): 227 * 1024}
_SHARED_MEMORY_DEFAULT = 99 * 1024  # sm_86, sm_89, sm_120 and other consumer parts


def device_shared_memory(device: torch.device) -> int:
    """Opt-in shared memory per block of a CUDA device, in bytes."""
    props = torch.cuda.get_device_properties(device)
    reported = getattr(props, "shared_memory_per_block_optin", None)
    if reported:
        return int(reported)
    return _SHARED_MEMORY_BY_CAPABILITY.get((props.major, props.minor), _SHARED_MEMORY_DEFAULT)
