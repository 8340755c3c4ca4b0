"""The fused kernels compile for real NVIDIA GPUs, checked without one.

Triton's interpreter (test_kernel_interpret.py) runs the kernels' logic in NumPy but does not
lower them; a kernel can pass there and still fail to compile. This compiles representative
variants ahead of time for Hopper (sm_90, H100) and Ampere consumer parts (sm_86) down to a
cubin with Triton's bundled ptxas. Skips where triton or its NVIDIA backend is missing (e.g.
macOS), and where TRITON_INTERPRET is set for the whole process (Triton then hands out
interpreter functions that cannot be compiled).
"""

from __future__ import annotations

import os
from typing import Optional

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed")


def _nvidia_backend_reason():
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "TRITON_INTERPRET=1 is set for this process: kernels cannot be compiled"
    try:
        from triton.backends import backends
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except Exception as exc:
        return f"triton's compiler API is not importable: {exc}"
    if "nvidia" not in backends:
        return f"triton has no NVIDIA backend here (backends: {sorted(backends)})"
    return None


_REASON = _nvidia_backend_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
                 torch.bool: "u8"}


def compile_for_target(path: str, dtype: torch.dtype, d: int, dv: int, lk: int, *,
                       mask: Optional[torch.dtype] = None, alpha: float = 1.5, arch: int = 90,
                       shared_memory_limit: Optional[int] = None):
    """Compile the kernel variant a call would launch, for an NVIDIA target, without a GPU;
    returns the compiled kernel (its ``asm`` dict holds ttir/ttgir/llir/ptx/cubin)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from gag_core.kernels import triton_gag
    config = triton_gag.kernel_config(128, lk, d, dv, dtype, path=path,
                                      shared_memory_limit=shared_memory_limit)
    elt = _TRITON_DTYPE[dtype]
    pointers = {"Q": elt, "K": elt, "V": elt, "Out": elt, "Scratch": "fp32",
                "Mask": _TRITON_DTYPE[mask] if mask is not None else elt, "TileStats": "i32"}
    kernel = (triton_gag._gag_short_kernel if config.path == "short"
              else triton_gag._gag_stream_kernel)
    constexprs = triton_gag.kernel_constexprs(config, dtype, triton_gag.mask_kind(mask), alpha)
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = "*" + pointers[name]
        elif name in ("sm_scale", "alpha_m1", "p_exp", "lam", "eta", "zeta"):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    return config, triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


@pytest.mark.parametrize("path, dtype, head_dim, keys, mask, alpha", [
    # SDXL cross-attention: 77 text keys, fp16, no mask, the paper's α.
    ("short", torch.float16, 64, 77, None, 1.5),
    # Three prompts' worth of keys with a keep-mask and a bisection-type α (generic power path).
    ("short", torch.bfloat16, 128, 231, torch.bool, 1.25),
    # FLUX joint attention: 4608 keys, bf16, additive mask.
    ("stream", torch.bfloat16, 128, 4608, torch.bfloat16, 1.5),
], ids=["short-sdxl", "short-keepmask-alpha1.25", "stream-flux-addmask"])
def test_kernel_compiles_for_sm90(path, dtype, head_dim, keys, mask, alpha):
    _, compiled = compile_for_target(path, dtype, head_dim, head_dim, keys, mask=mask,
                                     alpha=alpha, arch=90)
    assert b"" != compiled.asm["cubin"]
    assert ".target sm_90" in compiled.asm["ptx"]


def test_config_chosen_for_a_99_kib_gpu_fits_its_shared_memory():
    # D = 256 with 256 keys: the short tile needs ~139 KB; on sm_86 (99 KiB per block) the
    # dispatch picks the streaming path, whose compiled kernel must then fit.
    limit = 99 * 1024
    config, compiled = compile_for_target("auto", torch.float16, 256, 256, 256, arch=86,
                                          shared_memory_limit=limit)
    assert config.path == "stream"
    assert compiled.metadata.shared <= limit


@pytest.mark.parametrize("path, dtype, head_dim, keys", [
    ("short", torch.float16, 256, 256), ("short", torch.float32, 64, 77),
    ("stream", torch.bfloat16, 128, 4608), ("stream", torch.float32, 128, 4608),
    ("stream", torch.float16, 64, 4608),
])
def test_shared_memory_estimate_covers_the_compiled_kernel(path, dtype, head_dim, keys):
    # Dispatch refuses GPUs by this estimate (no GPU needed): it must never fall below what
    # Triton actually allocates, or a consumer GPU would get a kernel that fails to launch.
    from gag_core.kernels.config import shared_memory_bytes
    config, compiled = compile_for_target(path, dtype, head_dim, head_dim, keys, arch=90)
    assert shared_memory_bytes(config, dtype) >= compiled.metadata.shared
