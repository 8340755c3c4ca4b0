"""Fused GPU backends for gag_attention.

``select_backend`` is how gag_core.attention asks whether a fused kernel can take a call; the
PyTorch path in attention.py stays the reference every kernel is tested against.

The fused kernel (``triton_gag.fused_gag_attention``) needs Triton and an NVIDIA GPU of compute
capability 8.0 or newer (``device_unsupported_reason`` says why a GPU is refused). Triton is
imported only when a call could use it, so gag_core imports and runs where Triton is absent
(macOS, CPU-only PyTorch builds) and never pays Triton's import time on CPU.

The environment variable ``GAG_BACKEND`` overrides the automatic choice for every call that
reaches ``select_backend`` (gag_attention with backend="auto" or "fused"):

* ``auto`` (or unset, or empty): where the kernel applies and ``FUSED_BY_DEFAULT`` is True,
  the kernel after it has checked itself on this GPU (``selfcheck``: on the first call per
  device, dtype, head dim and kernel path it must agree with the float64 PyTorch path on
  sampled rows and be faster, else the PyTorch path runs); the PyTorch path elsewhere;
* ``torch``: always the PyTorch path;
* ``fused``: the fused kernel, and a ValueError saying why where it cannot take the call.

For tests without a GPU, ``gag_core.kernels.interpret`` runs the same Triton kernel on CPU
tensors through Triton's interpreter, in a subprocess (the interpreter must be switched on
before Triton is imported).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..environment import choice
from .config import (MAX_HEAD_DIM, MIN_CAPABILITY, SUPPORTED_DTYPES, device_shared_memory,
                     kernel_config)

__all__ = ["select_backend", "fused_unavailable_reason", "device_unsupported_reason",
           "device_shared_memory", "backend_override", "triton_available", "ENV_VAR",
           "FUSED_BY_DEFAULT", "backend_summary"]

ENV_VAR = "GAG_BACKEND"

# On by default since the kernel checks itself on the user's GPU (selfcheck): a compile error,
# a disagreement with the float64 PyTorch path on sampled rows, or a kernel slower than the
# PyTorch path each keep the PyTorch path, and the log says which and why. The kernel is
# checked in Triton's CPU interpreter and compiles for sm_90; it has not run on a GPU yet.
# What the check cannot catch is a hard fault (an illegal memory access ends the CUDA context):
# the interpreter cases cover partial tiles, masks of every rank and list overflow for that.
# GAG_BACKEND=torch turns the kernel off.
FUSED_BY_DEFAULT = True
_OVERRIDES = ("auto", "torch", "fused")
# Devices where nobody expects the kernel, so a declined call there is not worth a log line:
# the CPU, and "meta", where bench/cost_model.py traces calls.
_NEVER_FUSED_DEVICES = ("cpu", "meta")

_triton_import_error: Optional[str] = None
_triton_checked = False


def backend_override() -> str:
    """The GAG_BACKEND setting: 'auto', 'torch' or 'fused'; raises ValueError for other values."""
    return choice(ENV_VAR, _OVERRIDES)


def triton_available() -> bool:
    """Whether ``import triton`` works here (checked once, then remembered)."""
    global _triton_checked, _triton_import_error
    if not _triton_checked:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401
        except Exception as exc:  # ImportError, or a broken install raising anything else
            _triton_import_error = f"{type(exc).__name__}: {exc}"
        _triton_checked = True
    return _triton_import_error is None


def fused_unavailable_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             mask: Optional[torch.Tensor], alpha: float) -> Optional[str]:
    """None when the fused kernel can take this call, else a sentence saying why not.

    Expects q, k, v already checked by gag_core.attention (rank 4, matching B, H, Lk, D) and a
    mask already normalised to rank 4.
    """
    if not (q.dtype == k.dtype == v.dtype):
        return f"q, k, v have different dtypes ({q.dtype}, {k.dtype}, {v.dtype})"
    if q.dtype not in SUPPORTED_DTYPES:
        return f"dtype {q.dtype} is not one of float16, bfloat16, float32"
    if q.shape[-1] > MAX_HEAD_DIM or v.shape[-1] > MAX_HEAD_DIM:
        return (f"head dims D={q.shape[-1]}, Dv={v.shape[-1]} exceed the kernel's "
                f"{MAX_HEAD_DIM}")
    if k.shape[2] == 0:
        return "there are no keys (Lk = 0)"
    if mask is not None and not (mask.dtype == torch.bool or mask.dtype.is_floating_point):
        return f"mask dtype {mask.dtype} is neither bool nor floating point"
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return "the inputs require grad and the fused kernel has no backward pass"
    if not q.is_cuda:
        return f"the fused kernel runs on CUDA devices; q is on {q.device}"
    devices = {k.device, v.device} | ({mask.device} if mask is not None else set())
    if devices != {q.device}:
        return f"q, k, v (and mask) are not all on {q.device}"
    if not 1.0 < float(alpha) <= 2.0:
        return f"alpha={alpha} is outside (1, 2]"
    props = torch.cuda.get_device_properties(q.device)
    reason = device_unsupported_reason(
        name=props.name, capability=(props.major, props.minor),
        hip=getattr(torch.version, "hip", None) is not None,
        shared_memory=device_shared_memory(q.device),
        shape=(q.shape[2], k.shape[2], q.shape[3], v.shape[3]), dtype=q.dtype)
    if reason is not None:
        return reason
    if not triton_available():
        return f"triton cannot be imported ({_triton_import_error})"
    return None


def device_unsupported_reason(*, name: str, capability: tuple[int, int], hip: bool,
                              shared_memory: int, shape: tuple[int, int, int, int],
                              dtype: torch.dtype) -> Optional[str]:
    """None when a GPU with these properties can run the kernel for (Lq, Lk, D, Dv) in dtype,
    else why not: ROCm/HIP builds (the float32 dots use NVIDIA's tf32x3), compute capability
    below 8.0, or block shapes whose shared memory exceeds the device's per-block limit."""
    if hip:
        return (f"{name} runs PyTorch's ROCm/HIP build; the fused kernel is written for NVIDIA "
                f"GPUs (tf32x3 float32 dots)")
    if tuple(capability) < MIN_CAPABILITY:
        return (f"{name} has compute capability {capability[0]}.{capability[1]}; the fused "
                f"kernel needs {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer (Ampere)")
    try:
        kernel_config(*shape, dtype, shared_memory_limit=shared_memory)
    except ValueError as exc:
        return f"on {name}, {exc}"
    return None


def select_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                   alpha: float, exact: Callable) -> Optional[Callable]:
    """A fused implementation that accepts these inputs, or None for the PyTorch path.

    exact: the PyTorch path (gag_attention's signature) the self-check compares the kernel with.

    The returned callable has gag_attention's signature (q, k, v, *, scale, eta, zeta, alpha,
    mask) and returns (B, H, Lq, Dv) in q's dtype. GAG_BACKEND=torch makes this return None;
    GAG_BACKEND=fused makes it raise ValueError (with the reason) where the kernel cannot run.
    """
    override = backend_override()
    if override == "torch":
        return None
    reason = fused_unavailable_reason(q, k, v, mask, alpha)
    if reason is not None:
        if override == "fused":
            raise ValueError(f"{ENV_VAR}=fused, but the fused GAG kernel cannot take this call: "
                             f"{reason}. Unset {ENV_VAR} (or set it to auto) to fall back to "
                             f"the PyTorch path.")
        if FUSED_BY_DEFAULT and q.device.type not in _NEVER_FUSED_DEVICES:
            # A GPU user expects the kernel: say once why it does not run.
            from .selfcheck import note_declined
            note_declined(q.device, reason)
        return None
    if override == "auto" and not FUSED_BY_DEFAULT:
        return None
    if override == "fused":
        return _load_kernel()                           # the user's choice stands
    # auto: the kernel module is imported inside the self-check, so a Triton or torch that
    # rejects it (an ImportError, an API that moved) is one more reason to keep the PyTorch
    # path, logged and shown in the readout, not an exception inside sampling.
    from .selfcheck import check_key, default_chooser
    chooser = default_chooser(exact)
    if torch.compiler.is_compiling():
        # The check's host reads would break the traced graph: a traced call takes the kernel
        # only where an eager call already checked it for this key, else the PyTorch path.
        decided = chooser.decision(check_key(q, k, v))
        return _load_kernel() if decided is not None and decided.backend == "fused" else None
    return chooser.run


def _load_kernel() -> Callable:
    """The fused kernel's entry point; ValueError saying why where its module does not load."""
    try:
        from .triton_gag import fused_gag_attention
    except Exception as exc:  # ImportError, or a Triton/torch API the module uses has moved
        raise ValueError(f"{ENV_VAR}=fused, but the fused GAG kernel does not load with this "
                         f"Triton and PyTorch ({type(exc).__name__}: {exc}). Unset {ENV_VAR} "
                         f"(or set it to auto) to fall back to the PyTorch path.") from exc
    return fused_gag_attention


def backend_summary() -> str:
    """Which backend GAG attention uses and why, one line per checked (device, dtype, head
    dim, kernel path); for the GAG Model Patch readout."""
    from .selfcheck import backend_summary as summary
    return summary()
