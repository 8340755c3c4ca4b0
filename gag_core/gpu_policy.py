"""The PyTorch path's GPU policy: GAG with no host synchronisation and few kernel launches.

On a GPU every device-to-host read (``.item()``, ``int(tensor)``, ``nonzero``, boolean
indexing) stalls the launch queue, and every small kernel costs a launch (~4 µs). The CPU
policy (gag_core.attention, gag_core.sparse) is built for a CPU instead: Newton's method until
each row converges, compaction of the rows still pending, cache-sized chunks. This module is
the same math for a GPU:

* **no data-dependent control flow**: the threshold comes from a fixed schedule (below), masked
  rows and NaN rows are handled by ``torch.where``/clamps, never by a branch on their values;
* **half-precision matmuls**: q·kᵀ and P·V run on the input's float16/bfloat16 operands with
  float32 accumulation and output (``torch.bmm(..., out_dtype=float32)`` on CUDA; on other
  devices the operands are widened first, which gives the same products); the probabilities
  are rounded to the input dtype for P·V, as flash attention does;
* **one P·V for both maps**: dense and sparse probabilities share one (R, Lq, 2, Lk) buffer and
  one matmul against V padded with a column of ones, which returns both numerators and both
  normalisers; for ζ = 0 (the paper's setting) a 2 × 2 Gram matrix per row (one more batched
  matmul) gives the two dot products the rule needs, and the output is one per-row factor
  times the sparse numerator (``_zeta_zero_coefficient``); ζ > 0 takes the rule on the
  normalised retrievals (``_general_rule``);
* **chunks sized for the device's memory** (``device_chunk_bytes``), not for a CPU cache;
* **float32 products in IEEE float32** on CUDA whatever the user's TF32 setting
  (``ieee_float32_matmuls``).

The threshold schedule (α = 1.5 and 2; other α use the fixed 50-step bisection of
``sparse.entmax_bisect``). With gaps g = s − max s and the threshold θ in score units
(p ∝ [g − θ]_+^{1/(α−1)}); the code works in the scores' own units x = s − max (g = x/√D
without a mask), where the targets are scaled instead, so no pass applies the 1/√D:

1. *Top-k closed form.* The k largest gaps g_(1) ≥ … ≥ g_(k) (one ``topk``) give, for each j,
   the root θ_j of Σ_{i≤j} (g_(i) − θ)^{1/(α−1)} = (α−1)^{−1/(α−1)} on the j largest. Then
   θ_k = max_j min(θ_j, g_(j)) is a lower bound of the exact θ*, and equal to it whenever the
   support has at most k entries (for j ≤ j* the θ_j are lower bounds and θ_{j*} = θ*; for
   j > j* min(θ_j, g_(j)) ≤ g_(j) ≤ θ*; a NaN θ_j, from a negative discriminant, is dropped by
   ``fmin``). The running sums behind θ_j are one float32 product with a cached triangular
   matrix of 1/j columns (``_running_means``). Rows of at most 256 keys take k = Lk: the
   result is exact, no refinement runs. Every row then forms both maps from one pass
   u = g − θ_k over the scores: dense exp(u) = e^{−θ_k}·exp(g), a per-row factor (≤ e², as
   θ_k ≥ −1/(α−1)) that the dense map's own normaliser divides out; sparse [u]_+^{…} for
   short rows.
2. *Refinement* (longer rows, k = 64), on u: a fixed number of rounds over the full rows, each
   a quadratic step on the current candidates {u > δ} (an upper bound, exact once the
   candidates are the support: flat rows finish in one round) followed by one Newton step
   back from the right (a lower bound again); sparse [u − δ]_+^{…}. One round for Lk ≤ 1024,
   two beyond (α = 2: Michelot steps, one more round each). Rows already exact stay put to
   rounding. tests/core/test_gpu_policy.py holds the schedule to the float64 reference on
   random, flat, two-level and masked rows; bench/cost_model.py prices it.

The probabilities are renormalised by their own sum (the padded column of P·V), so a θ a few
ulp off changes no output beyond rounding.

Launches per guided call in eager mode (bench/cost_model.py traces them on meta tensors):
26 for SDXL's 77-key rows, 45 for FLUX text mode's 512-key rows and Wan's cross-attention
(the refinement round is 18 of them: 6 score-sized passes and 12 per-row ops), 64 for FLUX
joint mode's 4608-key rows (two rounds); the closed form is 8, the ζ = 0 combine 8 (the Gram
baddbmm, a 1 × 2 by 2 × 1 bmm, 5 small per-row ops, and the output product). bench/RESULTS.md
says where the remaining time goes and why issue 20's step targets need the fused kernel.

Range: the Gram products are float32. For float16 inputs they can neither overflow nor
underflow (retrievals are sums of exact products of float16 values, below 4·D·Lk·65504 in size
and multiples of 2⁻⁴⁸); for bfloat16 and float32 inputs, values beyond about 1e18 in size
would overflow them (the CPU policy's rescaled rule covers that range).
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch

from .environment import choice

__all__ = ["ENV_VAR", "torch_policy", "policy_override", "gpu_pair_numerators", "gpu_gag",
           "gpu_correction", "gpu_dense_sparse", "device_chunk_bytes", "candidate_count",
           "refine_rounds", "ieee_float32_matmuls", "SHORT_ROWS", "LONG_ROW_CANDIDATES"]

ENV_VAR = "GAG_TORCH_POLICY"
_POLICIES = ("auto", "gpu", "cpu")
_HALF = (torch.float16, torch.bfloat16)

# Rows up to this many keys are solved exactly from their full sorted row (SDXL: 77–231).
SHORT_ROWS = 256
# Candidates of a longer row: supports of random rows at logit std ≥ 1 stay below ~60 keys.
LONG_ROW_CANDIDATES = 64
# Running means of up to this many candidates are one float32 product (_running_means): its
# 4·k² FLOPs per row cost less than the cumsum and ×1/j passes it replaces up to k ≈ 80 on the
# A100 roofline (≈ 160 on the H100, ≈ 660 on the RTX 4090). SDXL's 77 keys and the 64
# candidates of longer rows take it.
PREFIX_MATMUL_KEYS = 80
# Where masked keys (−inf) sit for the closed form's product: finite, far below any support
# (θ* ≥ −2/unit), and squared still far from float32's overflow.
_FAR_BELOW = 2.0 ** 40
# Devices whose bmm takes out_dtype (half operands, float32 output). "meta" is how the cost
# model traces a GPU call without a GPU.
_OUT_DTYPE_DEVICES = ("cuda", "meta")
# Fraction of the device's memory one query chunk may use.
_DEVICE_MEMORY_FRACTION = 8
_FALLBACK_CHUNK_BYTES = 2**30
# Bytes per score element at peak: float32 scores, the two-map probability buffer (2 values
# in the operand dtype), one float32 work row of the refinement, topk and Gram are small.
_WORK_BYTES_PER_SCORE = {torch.float16: 4 + 4 + 4, torch.bfloat16: 4 + 4 + 4,
                         torch.float32: 4 + 8 + 4, torch.float64: 8 + 16 + 8}
# Normalisers of live rows are ≥ 1 (dense: the maximum's exp(0)) or ≈ (α−1)^{−1/(α−1)}
# (sparse); this floor only keeps fully masked rows (normaliser 0) finite.
_NORMALISER_FLOOR = 2.0 ** -60


def policy_override() -> str:
    """The GAG_TORCH_POLICY setting: 'auto', 'gpu' or 'cpu'; ValueError for other values."""
    return choice(ENV_VAR, _POLICIES)


def torch_policy(device: torch.device) -> str:
    """'gpu' or 'cpu': which policy the PyTorch path uses for tensors on ``device``.

    GAG_TORCH_POLICY=gpu or cpu forces one everywhere; auto (the default) takes the GPU policy
    on every device but the CPU (CUDA, ROCm, MPS, XPU; "meta" when the cost model traces)."""
    value = policy_override()
    if value != "auto":
        return value
    return "cpu" if torch.device(device).type == "cpu" else "gpu"


_device_budget: dict = {}


def device_chunk_bytes(device: torch.device) -> int:
    """Working memory for one query chunk on ``device``: an eighth of its memory (read once per
    device from its properties, no synchronisation), 1 GiB where the size is unknown."""
    device = torch.device(device)
    key = str(device)
    if key not in _device_budget:
        total = None
        try:
            if device.type == "cuda":
                total = torch.cuda.get_device_properties(device).total_memory
            elif device.type == "mps":
                total = torch.mps.recommended_max_memory()
        except Exception:  # a backend without the query: keep the fallback
            total = None
        _device_budget[key] = (total // _DEVICE_MEMORY_FRACTION if total
                               else _FALLBACK_CHUNK_BYTES)
    return _device_budget[key]


def candidate_count(lk: int) -> int:
    """k of the top-k closed form: the whole row for short rows, else LONG_ROW_CANDIDATES."""
    return lk if lk <= SHORT_ROWS else min(LONG_ROW_CANDIDATES, lk)


def refine_rounds(lk: int, alpha: float = 1.5) -> int:
    """Refinement rounds after the top-k closed form (0 when k covers the row). α = 2's
    Michelot steps only approach from below (no quadratic jump), so they get one more."""
    if candidate_count(lk) >= lk:
        return 0
    return (1 if lk <= 1024 else 2) + (1 if alpha == 2.0 else 0)


def query_chunk(batch: int, heads: int, lq: int, lk: int, dtype: torch.dtype,
                chunk_bytes: int) -> int:
    """Queries per chunk so that the chunk's working set stays under ``chunk_bytes``."""
    per_query = max(batch * heads * lk, 1) * _WORK_BYTES_PER_SCORE.get(dtype, 12)
    return max(1, min(lq, chunk_bytes // per_query))


# ---------------------------------------------------------------------------------------------
# Small device constants, made once per (device, dtype, size) and reused by every call.

_constants: dict = {}


def _constant(key: tuple, make) -> torch.Tensor:
    """The tensor cached under ``key`` (which names the dtype and device), made by ``make()``
    the first time it is asked for."""
    if key not in _constants:
        _constants[key] = make()
    return _constants[key]


def _value_tail(pad: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(1, 1, pad) ones: the columns appended to V whose P·V is each row's normaliser."""
    return _constant(("tail", pad, dtype, str(device)),
                     lambda: torch.ones(1, 1, pad, dtype=dtype, device=device))


def _ranks(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(k,) = 1/j for j = 1..k."""
    return _constant(("ranks", k, dtype, str(device)),
                     lambda: torch.arange(1, k + 1, dtype=dtype, device=device).reciprocal_())


def _scaled_ranks(k: int, factor: float, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    """(k,) = factor/j for j = 1..k."""
    return _constant(("scaled_ranks", k, factor, dtype, str(device)),
                     lambda: _ranks(k, dtype, device) * factor)


def _prefix_matrix(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(k, k) upper-triangular matrix whose column j holds 1/(j+1) in rows 0..j: x @ it gives
    the running means of x's last axis (cumsum and ×1/j in one product)."""
    return _constant(("prefix", k, dtype, str(device)),
                     lambda: torch.ones(k, k, dtype=dtype, device=device).triu_().mul_(
                         _ranks(k, dtype, device)))


def _zero(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-dim zero."""
    return _constant(("zero", dtype, str(device)),
                     lambda: torch.zeros((), dtype=dtype, device=device))


def _mass_offset(k: int, mass: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(k,) = [mass, 0, …, 0]: added to −g² before the running sums, which then give mass − S2."""
    def make():
        offset = torch.zeros(k, dtype=dtype, device=device)
        offset[0] = mass
        return offset
    return _constant(("offset", k, mass, dtype, str(device)), make)


def _signs(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(2, 1) = [[−1], [1]]: divided by the (N, 2, 1) normalisers gives [−1/a_d, 1/a_s]."""
    return _constant(("signs", dtype, str(device)),
                     lambda: torch.tensor([[-1.0], [1.0]], dtype=dtype, device=device))


# ---------------------------------------------------------------------------------------------
# Building blocks. R = B·H batch rows, Lq queries, Lk keys.

def _operand_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the matmul operands and of the probabilities: half stays half, float64 stays
    float64, everything else is float32."""
    if dtype in _HALF:
        return dtype
    return torch.float64 if dtype == torch.float64 else torch.float32


_no_out_dtype: set = set()


def _matmul(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """a @ b for (R, M, K) @ (R, K, N) with ``out_dtype`` accumulation and output."""
    if a.dtype == out_dtype:
        return torch.bmm(a, b)
    key = (a.device.type, a.dtype)
    if a.device.type in _OUT_DTYPE_DEVICES and key not in _no_out_dtype:
        try:
            return torch.bmm(a, b, out_dtype=out_dtype)
        except (RuntimeError, NotImplementedError, TypeError):
            # A build without the mixed-dtype kernel for this dtype (some ROCm versions:
            # RuntimeError) or a torch release without the argument (TypeError): widen from
            # now on. The failure is raised before any kernel runs, so nothing is lost.
            _no_out_dtype.add(key)
    # CPU and MPS have no mixed-dtype bmm: widening first gives the same (exact) products.
    return torch.bmm(a.to(out_dtype), b.to(out_dtype))


@contextlib.contextmanager
def ieee_float32_matmuls(device: torch.device):
    """Run the block with float32 matmuls in full IEEE float32 on CUDA, then restore the setting.

    Users and other packs may allow TF32 (``torch.set_float32_matmul_precision("high")``,
    ``torch.backends.cuda.matmul.allow_tf32 = True``). GAG's float32 products must not take it:
    the ζ = 0 rule reads c = 1 − p·a_s/(q·a_d) off the Gram matrix, where TF32's 2⁻¹¹ relative
    rounding of p and q is multiplied by 1/c and then by λ (about 1% of the output at λ = 10),
    and float32 inputs' scores would lose the float32 tolerance. Half-precision products (the
    guided call's q·kᵀ and P·V) are unaffected either way. A host-side setting: no
    synchronisation; read only on CUDA, where it applies."""
    if torch.device(device).type != "cuda":
        yield
        return
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _running_means(x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(..., k) → (..., k): mean of the first j entries of the last axis (+ ``bias`` (k,)).

    Up to PREFIX_MATMUL_KEYS entries: one float32 product with the cached upper-triangular
    matrix of 1/j columns (``_prefix_matrix``): one launch and one read and write of x instead
    of cumsum's and ×1/j's two each. Longer: cumsum, ×1/j. Entries must be finite: the product
    multiplies every entry, zeros included (−inf·0 is NaN)."""
    k = x.shape[-1]
    if k <= PREFIX_MATMUL_KEYS:
        flat = x.reshape(-1, k)
        weights = _prefix_matrix(k, x.dtype, x.device)
        out = torch.mm(flat, weights).view(x.shape)
        # (addmm would take the bias, but CUDA copies a broadcast bias into the output first
        # unless cuBLASLt's epilogue applies: one launch either way, this one visibly.)
        return out if bias is None else out.add_(bias)
    out = x.cumsum(-1).mul_(_ranks(k, x.dtype, x.device))
    return out if bias is None else out.add_(bias)


def _threshold_from_top(top: torch.Tensor, row_max: torch.Tensor, unit: float, alpha: float,
                        masked: bool) -> torch.Tensor:
    """θ_k = max_j min(θ_j, x_(j)) (..., 1) from the k largest scores ``top`` (..., k), sorted,
    in the scores' own units: x = s − max, the gaps being g = unit·x (``_scores``).

    Exact θ* when the support fits in the k entries, else a lower bound of it (module
    docstring). Entries far below the support (even −inf) only give θ_j ≤ θ*, never above.
    In units of x the targets are m = 4/unit² (α = 1.5) and 1/unit (α = 2): the same roots
    divided by unit, with no pass to apply the unit.

    α = 1.5 in 8 launches: one (..., 2, k) buffer holds [x, m − x²] (m only in column 0), one
    product gives the running means [μ_j, (m − S2_j)/j] (``_running_means``), and
    θ_j = μ − √(μ² + (m − S2)/j), the smaller root of Σ_{i≤j} (x_(i) − θ)² = m (a NaN root,
    from a negative discriminant, belongs to a j past the support and is dropped by fmin).
    α = 2 in 3: θ_j = μ_j − (1/unit)/j, and max_j θ_j = θ* without the fmin (θ_{j+1} is a
    weighted mean of θ_j and x_(j+1), so the sequence rises while x_(j+1) > θ_j, i.e. up to
    the support's size, and falls after). With a mask, −inf gaps are first moved to a finite
    −2⁴⁰ (the product multiplies every entry by its weight, zeros included)."""
    k = top.shape[-1]
    dtype, device = top.dtype, top.device
    if alpha == 1.5:
        pair = torch.empty(*top.shape[:-1], 2, k, dtype=dtype, device=device)
        gaps = torch.sub(top, row_max, out=pair[..., 0, :])
        if masked:
            gaps.clamp_(min=-_FAR_BELOW)
        torch.addcmul(_mass_offset(k, 4.0 / (unit * unit), dtype, device), gaps, gaps,
                      value=-1.0, out=pair[..., 1, :])
        means = _running_means(pair)                             # [μ_j, (m − S2_j)/j]
        mean, rest = means[..., 0, :], means[..., 1, :]
        theta_j = torch.fmin(mean.sub_(rest.addcmul_(mean, mean).sqrt_()), gaps)
    else:  # α = 2: Σ_{i≤j} (x_(i) − θ) = 1/unit
        gaps = torch.sub(top, row_max)
        if masked:
            gaps.clamp_(min=-_FAR_BELOW)
        theta_j = _running_means(gaps, _scaled_ranks(k, -1.0 / unit, dtype, device))
    return theta_j.amax(dim=-1, keepdim=True)


def _refine(u: torch.Tensor, unit: float, alpha: float, rounds: int) -> torch.Tensor:
    """``rounds`` fixed rounds towards the exact threshold over the full rows ``u`` (..., N),
    the scores measured from the closed form's lower bound (u = x − θ_k, x = s − max, in the
    scores' own units: targets m = 4/unit² for α = 1.5, 1/unit for α = 2). Returns δ (..., 1)
    with θ = θ_k + δ a lower bound again (exact where θ_k was, to rounding).

    α = 1.5, one round: the excess x' = [u − δ]_+ over the candidates {u > δ}: its Σx' and
    Σx'² from var_mean, and their count n. The smaller root r of
    n·ε² − 2·Σx'·ε + Σx'² − m = 0 is the exact threshold if the candidates are the support
    and an upper bound otherwise; one Newton step from r (mass convex, below target there)
    lands at or below the threshold again. α = 2: Michelot's step δ + (Σx' − 1/unit)/n, a
    lower bound that is exact once the candidates are the support.

    The first round starts at δ = 0, where the excess is [u]_+ itself: one clamp gives the
    row var_mean reads (its mean is Σx'/N directly, a mean of values near 0, with no
    subtraction to lose precision). Later rounds (α = 2, Lk > 1024) take var_mean of
    max(u, δ) (var(max(u, δ)) = var(x')); α = 2 sums x' itself (the mean of max(u, δ) minus δ
    would lose Σx'). Launches in the first round: 6 score-sized and 12 small (α = 1.5), 4 and
    2 (α = 2).

    Live rows keep every denominator positive (Σx' > 0 and n ≥ 1 at a lower bound, Σx' > 0
    at r < max); a fully masked row (all −inf) runs into −inf or NaN instead, which the caller
    replaces (one fmax, not a clamp per round).
    """
    n_keys = u.shape[-1]
    target = 4.0 / (unit * unit) if alpha == 1.5 else 1.0 / unit
    per_key = target / n_keys
    delta = None
    for _ in range(rounds):
        # n = #{u > δ} (a comparison and a sum: CUDA's count_nonzero is the same two kernels)
        count = (u > (0.0 if delta is None else delta)).sum(-1, keepdim=True, dtype=u.dtype)
        if delta is None:
            excess_row = torch.clamp(u, min=0.0)                              # [u]_+
        else:
            excess_row = (torch.sub(u, delta).clamp_(min=0.0) if alpha == 2.0
                          else torch.clamp(u, min=delta))
        if alpha == 2.0:
            mass = excess_row.sum(-1, keepdim=True).sub_(target)
            delta = (mass.div_(count) if delta is None
                     else torch.addcdiv(delta, mass, count))
            continue
        # In units of N: e = Σx'/N, w = (Σx'² − m)/N ≥ 0 at a lower bound; the root is
        # (Σx'² − m)/(Σx' + √(Σx'² ... )) = w / (e + √(e² − (n/N)·w)) above δ.
        var, mean = torch.var_mean(excess_row, dim=-1, keepdim=True, correction=0)
        excess = mean if delta is None else mean.sub_(delta)
        excess_sq = excess * excess
        w = var.add_(excess_sq).sub_(per_key)
        inner = torch.addcmul(excess_sq, count, w, value=-1.0 / n_keys).clamp_(min=0.0)
        root = inner.sqrt_().add_(excess)
        upper = w.div_(root) if delta is None else torch.addcdiv(delta, w, root)
        # One Newton step back from the upper bound: δ ← r + (Σx'² − m)/(2·Σx') at r.
        var, mean = torch.var_mean(torch.clamp(u, min=upper), dim=-1, keepdim=True,
                                   correction=0)
        excess = mean.sub_(upper)
        back = var.addcmul_(excess, excess).sub_(per_key)                    # ≤ 0
        delta = torch.addcdiv(upper, back, excess, value=0.5)
    return delta


def _exp_in_units(x: torch.Tensor, unit: float, out: torch.Tensor) -> torch.Tensor:
    """exp(unit·x) into ``out`` in one pass: e^{unit·x} = (e^{unit})^x, a power whose base is a
    cached 0-dim device tensor, so the scores' pending 1/√D costs no pass of its own. (A
    Python-number base would be turned into a device tensor by a fill kernel on every call.)"""
    if unit == 1.0:
        return torch.exp(x, out=out)
    base = _constant(("exp_unit", unit, x.dtype, str(x.device)),
                     lambda: torch.full((), math.exp(unit), dtype=x.dtype, device=x.device))
    return torch.pow(base, x, out=out)


def _scores(q3: torch.Tensor, k3: torch.Tensor, mask: Optional[torch.Tensor], shape4: tuple,
            compute: torch.dtype) -> tuple[torch.Tensor, float]:
    """(R, Lq, Lk) scores in ``compute`` dtype from operand-dtype q3, k3, and the factor still
    to apply: q·kᵀ unscaled and 1/√D when there is no mask (thresholds are found in these
    units and only the dense map's exp applies the factor, ``_exp_in_units``: no pass of its
    own), else q·kᵀ/√D + mask and 1."""
    scores = _matmul(q3, k3.transpose(1, 2), compute)
    scale = 1.0 / math.sqrt(q3.shape[-1])
    if mask is None:
        return scores, scale
    view = scores.mul_(scale).view(shape4)
    if mask.dtype == torch.bool:
        view.masked_fill_(mask.logical_not(), float("-inf"))
    else:
        view.add_(mask)
    return scores, 1.0


def gpu_pair_numerators(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: Optional[torch.Tensor], alpha: float, *,
                        half_operands: bool = True) -> torch.Tensor:
    """Unnormalised dense and sparse retrievals of one query chunk, with their normalisers.

    q (B, H, Lq, D), k (B, H, Lk, D), v (B, H, Lk, Dv), mask rank 4 or None →
    X (B·H·Lq, 2, Dp) in the compute dtype: X[:, 0] ∝ Σ_i e^{g_i} [v_i, 1, …],
    X[:, 1] ∝ Σ_i [g_i − θ]_+^{1/(α−1)} [v_i, 1, …], each up to a positive per-row factor that
    its numerator and normaliser share (the dense map's e^{−θ_k}, the sparse map's power of
    √D from working in the scores' units): only their ratios mean anything. Columns :Dv are
    the numerators and column Dv the normalisers (0 for a fully masked row). Dp = Dv rounded
    up past Dv + 1 to a multiple of 8 (aligned rows for the tensor cores). half_operands=False
    keeps float16 and bfloat16 inputs' matmul operands and probabilities in float32 (the
    readout's retrievals, which promise float32 accuracy; the guided call rounds P as flash
    attention does).
    """
    from .sparse import entmax_bisect  # noqa: PLC0415 (sparse imports nothing from here)

    batch, heads, lq, d = q.shape
    lk, dv = k.shape[2], v.shape[-1]
    rows = batch * heads
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    operand = _operand_dtype(q.dtype) if half_operands else compute
    q3 = q.to(operand).reshape(rows, lq, d)
    k3 = k.to(operand).reshape(rows, lk, d)
    v3 = v.to(operand).reshape(rows, lk, dv)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(compute)
    scores, unit = _scores(q3, k3, mask, (batch, heads, lq, lk), compute)

    probs = torch.empty(rows, lq, 2, lk, dtype=operand, device=q.device)
    dense, sparse = probs[:, :, 0], probs[:, :, 1]
    bisection = alpha not in (1.5, 2.0)
    if bisection:
        row_max = scores.amax(dim=-1, keepdim=True)
    else:
        top = scores.topk(candidate_count(lk), dim=-1).values    # sorted, descending
        row_max = top[..., :1]
    if mask is not None:
        # A fully masked row has maximum −inf: shift it by 0 so its gaps stay −inf.
        row_max = torch.nan_to_num(row_max, nan=float("nan"), posinf=float("inf"), neginf=0.0)
    if bisection:
        # gaps g = unit·(s − max) = (−unit·max) + unit·s: ≤ 0 with maximum 0.
        gaps = torch.add(row_max * -unit, scores, alpha=unit, out=scores)
        torch.exp(gaps, out=dense)
        sparse.copy_(entmax_bisect(gaps, alpha))
    else:
        # The threshold in the scores' own units (x = s − max; the gaps are unit·x): the
        # unit is applied by the dense map's exp alone (_exp_in_units), the sparse map is
        # normalised by its own sum and needs none.
        theta = _threshold_from_top(top, row_max, unit, alpha, mask is not None)
        # One pass forms u = s − (max + θ_k), and both maps come from it. The dense map is
        # exp(unit·u) = exp(g)·e^{−unit·θ_k}: a per-row factor (unit·θ_k ∈ [−1/(α−1), 0], so
        # ≤ e², no overflow; a fully masked row's θ_k ≈ −2⁴⁰ leaves its u at −inf) that its own
        # normaliser (the padded column of P·V) divides out.
        u = torch.sub(scores, torch.add(row_max, theta), out=scores)
        _exp_in_units(u, unit, out=dense)
        rounds = refine_rounds(lk, alpha)
        if rounds:
            # Longer rows: the refinement's δ ≥ 0 above θ_k, sparse map [u − δ]_+.
            delta = _refine(u, unit, alpha, rounds)
            if mask is not None:
                # A fully masked row's δ is NaN: 0 there (fmax takes the number).
                delta = torch.fmax(delta, _zero(delta.dtype, delta.device))
            torch.sub(u, delta, out=sparse).clamp_(min=0.0)
        else:
            # Short rows: θ_k is exact, sparse map [u]_+. maximum with a 0-dim zero: a binary
            # op writes the operand dtype directly (clamp with a scalar bound refuses a
            # differently typed out= on CPU).
            torch.maximum(u, _zero(u.dtype, u.device), out=sparse)
        if alpha == 1.5:
            sparse.square_()
    padded = ((dv + 1 + 7) // 8) * 8
    tail = _value_tail(padded - dv, operand, q.device).expand(rows, lk, padded - dv)
    v_aug = torch.cat([v3, tail], dim=-1)
    pair = _matmul(probs.view(rows, 2 * lq, lk), v_aug, compute)
    return pair.view(rows * lq, 2, padded)


def _split(pair: torch.Tensor, dv: int):
    numer = pair[..., :dv]                        # (N, 2, Dv)
    norm = pair[..., dv:dv + 1]                   # (N, 2, 1)
    return numer, norm


def gpu_dense_sparse(q, k, v, mask, alpha) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense, sparse) retrievals (B, H, Lq, Dv) in the compute dtype, sync-free."""
    with ieee_float32_matmuls(q.device):
        return _dense_sparse(q, k, v, mask, alpha)


def _dense_sparse(q, k, v, mask, alpha):
    batch, heads, lq, _ = q.shape
    dv = v.shape[-1]
    numer, norm = _split(gpu_pair_numerators(q, k, v, mask, alpha, half_operands=False), dv)
    out = numer / norm.clamp(min=_NORMALISER_FLOOR)
    out = out.view(batch, heads, lq, 2, dv)
    return out[..., 0, :], out[..., 1, :]


def _signed_inverse_normalisers(norm: torch.Tensor, masked: bool) -> torch.Tensor:
    """(N, 2, 1) normalisers [a_d, a_s] → (N, 1, 2) coefficients [−1/a_d, 1/a_s], one division.
    Live rows have a_d ≥ 1 and a_s > 0; only fully masked rows (normaliser 0, possible only
    with a mask) need the floor."""
    if masked:
        norm = norm.clamp(min=_NORMALISER_FLOOR)
    return torch.div(_signs(norm.dtype, norm.device), norm).view(-1, 1, 2)


def _zeta_zero_coefficient(gram: torch.Tensor, coef: torch.Tensor, scale: float,
                           eta: float) -> torch.Tensor:
    """Turn ``coef`` (N, 1, 2) = [−1/a_d, 1/a_s] into [−1/a_d, f] in place, for ζ = 0, where
    f is the per-row factor with GAG output = f · (sparse numerator); returns ``coef``.

    With p = ⟨n_d, n_s⟩, q = ‖n_s‖², normalisers a_d, a_s (s = n_s/a_s, d = n_d/a_d):
    c = ⟨s − d, s⟩/‖s‖² = 1 − p·a_s/(q·a_d) and ‖s‖ = √q/a_s, so c·‖s‖ = z/√q with
    z = q/a_s − p/a_d = coef · [p, q] (one 1 × 2 by 2 × 1 product per row), and
    f = (1 + λ·c·min(1, η/(|c|·‖s‖)))/a_s = 1/a_s + λ·clamp(z/√q, ±η)/√q. ``gram`` from
    ``_gram`` (q > 0). 5 launches (4 for η = ∞). A zero sparse retrieval gives z = 0 and a
    finite f.
    """
    root = torch.rsqrt(gram[:, 1:2, 1:2])                       # 1/√q (q > 0: _gram)
    z = torch.bmm(coef, gram[:, :, 1:2]).mul_(root)             # z/√q, (N, 1, 1)
    if not math.isinf(eta):
        z = z.clamp_(min=-eta, max=eta)
    coef[:, :, 1:2].addcmul_(z, root, value=scale)
    return coef


def _general_rule(dense: torch.Tensor, sparse: torch.Tensor, scale: float, eta: float,
                  zeta: float) -> torch.Tensor:
    """The GAG rule for any ζ ∈ [0, 1] on normalised retrievals (N, Dv) → (N, Dv), sync-free.

    Dot products are taken on Δ = O_s − O_d itself (not expanded from the Gram matrix, whose
    ‖s‖² − 2⟨d, s⟩ + ‖d‖² cancels when Δ is small)."""
    delta = sparse - dense
    sparse_sq = torch.linalg.vecdot(sparse, sparse).unsqueeze(-1)
    along = torch.linalg.vecdot(delta, sparse).unsqueeze(-1)
    c = torch.where(sparse_sq > 0, along / sparse_sq.clamp(min=torch.finfo(sparse.dtype).tiny),
                    0.0)
    guidance_sq = (1.0 - zeta * zeta) * c * c * sparse_sq
    if zeta:
        delta_sq = torch.linalg.vecdot(delta, delta).unsqueeze(-1)
        guidance_sq = guidance_sq + (zeta * zeta) * delta_sq
    if math.isinf(eta):
        gain = torch.full_like(c, scale)
    else:
        norm_g = guidance_sq.sqrt()
        gain = scale * torch.where(norm_g > eta, eta / norm_g.clamp(min=1e-30), 1.0)
    out = sparse * (1.0 + gain * ((1.0 - zeta) * c))
    if zeta:
        out = out.addcmul_(gain * zeta, delta)
    return out


def _normalised(numer: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = numer / norm.clamp(min=_NORMALISER_FLOOR)
    return out[:, 0], out[:, 1]


def _gram(numer: torch.Tensor) -> torch.Tensor:
    """(N, 2, 2) Gram matrices of the two numerators, plus the dtype's smallest normal number on
    the diagonal (in the same batched matmul, baddbmm's input): ‖n_s‖² > 0 even for a zero
    retrieval, so 1/√q needs no clamp; it moves no q ≥ 2⁻¹⁰⁰ by more than 2⁻²⁶ of itself."""
    tiny_eye = _constant(("tiny_eye", numer.dtype, str(numer.device)),
                         lambda: torch.eye(2, dtype=numer.dtype, device=numer.device).mul_(
                             torch.finfo(numer.dtype).tiny))
    return torch.baddbmm(tiny_eye, numer, numer.transpose(1, 2))


def gpu_gag(q, k, v, mask, alpha, scale, eta, zeta, out_dtype) -> torch.Tensor:
    """GAG output (B, H, Lq, Dv) in ``out_dtype`` for one query chunk, sync-free."""
    with ieee_float32_matmuls(q.device):
        return _gag(q, k, v, mask, alpha, scale, eta, zeta, out_dtype)


def _gag(q, k, v, mask, alpha, scale, eta, zeta, out_dtype):
    batch, heads, lq, _ = q.shape
    dv = v.shape[-1]
    numer, norm = _split(gpu_pair_numerators(q, k, v, mask, alpha), dv)
    out = torch.empty(batch * heads * lq, dv, dtype=out_dtype, device=q.device)
    if zeta == 0.0:
        coef = _signed_inverse_normalisers(norm, mask is not None)
        factor = _zeta_zero_coefficient(_gram(numer), coef, scale, eta)[:, 0, 1:2]
        torch.mul(numer[:, 1], factor, out=out)
    else:
        dense, sparse = _normalised(numer, norm)
        out.copy_(_general_rule(dense, sparse, scale, eta, zeta))
    return out.view(batch, heads, lq, dv)


def gpu_correction(q, k, v, mask, alpha, scale, eta, zeta) -> torch.Tensor:
    """GAG output minus the dense output, (B, H, Lq, Dv) in the compute dtype, sync-free."""
    with ieee_float32_matmuls(q.device):
        return _correction(q, k, v, mask, alpha, scale, eta, zeta)


def _correction(q, k, v, mask, alpha, scale, eta, zeta):
    batch, heads, lq, _ = q.shape
    dv = v.shape[-1]
    numer, norm = _split(gpu_pair_numerators(q, k, v, mask, alpha), dv)
    if zeta == 0.0:
        # f·n_s − n_d/a_d as one (1 × 2)·(2 × Dv) product per row: the coefficients [−1/a_d, f]
        # are made in place, the numerators are read once.
        coef = _signed_inverse_normalisers(norm, mask is not None)
        _zeta_zero_coefficient(_gram(numer), coef, scale, eta)
        return torch.bmm(coef, numer).view(batch, heads, lq, dv)
    dense, sparse = _normalised(numer, norm)
    return _general_rule(dense, sparse, scale, eta, zeta).sub_(dense).view(batch, heads, lq, dv)
