"""The fused kernels compile for real NVIDIA GPUs, checked without one.

Triton's interpreter (test_kernel_interpret.py) runs the kernels' logic in NumPy but does not
lower them; a kernel can pass there and still fail to compile. This compiles representative
variants ahead of time for Hopper (sm_90, H100) down to a cubin with Triton's bundled ptxas.
Skips where triton or its NVIDIA backend is missing (e.g. macOS).
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed")


def _nvidia_backend_reason():
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


@pytest.mark.parametrize("path, dtype, head_dim, keys, mask, alpha", [
    # SDXL cross-attention: 77 text keys, fp16, no mask, the paper's α.
    ("short", torch.float16, 64, 77, None, 1.5),
    # Three prompts' worth of keys with a keep-mask and a bisection-type α (generic power path).
    ("short", torch.bfloat16, 128, 231, torch.bool, 1.25),
    # FLUX joint attention: 4608 keys, bf16, additive mask.
    ("stream", torch.bfloat16, 128, 4608, torch.bfloat16, 1.5),
], ids=["short-sdxl", "short-keepmask-alpha1.25", "stream-flux-addmask"])
def test_kernel_compiles_for_sm90(path, dtype, head_dim, keys, mask, alpha):
    from gag_core.kernels.triton_gag import compile_for_target
    compiled = compile_for_target(path, dtype, head_dim, head_dim, keys, mask=mask, alpha=alpha,
                                  arch=90)
    assert b"" != compiled.asm["cubin"]
    assert ".target sm_90" in compiled.asm["ptx"]
