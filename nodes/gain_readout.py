"""The effective-strength readout: how hard GAG pushed during a sampling run, told to the user.

While a sampler runs a GAG-patched model, every guided attention call hands its gains
(``gag_core.readout``: 1 + λ·min(1, η/‖g‖)·c and whether η bound, for 64 evenly spaced query
rows and every head) to the model's ``GainReadout``, which only keeps the tensors (no
device-to-host read per layer). The sampler's step callback closes a step; at the end of the run
the per-step, per-group and overall figures are reduced on the device and read back once. Then:

* one INFO record in ComfyUI's log, e.g.
  ``GAG: attention gain ×2.1 median, ×3.8 p95, cap active on 0% of tokens (7 layers, 20 steps;
  input ×2.3, output ×1.9); backend: PyTorch path (GPU policy)``, followed on the same line by
  a hint when the median gain is in the range that hurt images in the digits study
  (``HINT_GAIN``). The backend part says what computed the guided calls on the run's device
  (``backend_text``): the fused kernel or the PyTorch path, with the self-check's reason where
  the kernel was checked (issue 20), else the PyTorch path's policy;
* the same figures and the backend, on short lines, as ComfyUI's progress text on the GAG Model Patch node, and
  the per-step figures as a ``gag.readout`` message that web/js/gag_readout.js plots there.

The gain rows are recomputed on the PyTorch path beside the guided call, whatever backend
computed the call itself (the PyTorch path or the fused kernel): the readout covers every
backend and never changes an output. The run is found through an OUTER_SAMPLE wrapper
(``comfy.patcher_extension.WrappersMP``), which wraps one whole ``CFGGuider.sample`` call.
Without a server (scripts, tests) only the log line is written; nothing here can make sampling
fail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from ..gag_core.gpu_policy import torch_policy
from ..gag_core.kernels import selfcheck
from ..gag_core.target_gain import MAX_TARGET_SCALE
from .adapters import comfy_compat
from .adapters.shared import SharedObject

_log = logging.getLogger("comfyui_gag")

WRAPPER_KEY = "gag_readout"
MESSAGE_TYPE = "gag.readout"   # the front-end event web/js/gag_readout.js listens to

@dataclass(frozen=True)
class GainBand:
    """What the digits evidence says about the median gain on one kind of model: the band that
    did best (``good``) and the gain from which the readout adds a hint (``hint_from``)."""
    good: tuple[float, float]
    hint_from: float
    evidence: str


# From bench/digits/target_gain_study.py (bench/results_target_gain.md, summary in
# bench/RESULTS.md): fixed λ and target gain on two trained models, two regimes (4 steps CFG 1;
# 20 steps CFG 3), three seeds. Keyed by the kind of guided attention (``band_key``).
GAIN_BANDS = {
    # Digits UNet (cross-attention). Without CFG accuracy and FD were best at ×1.6–×2.0 (0.963
    # and 53.7 against 0.903 and 99.9 without GAG); ×2.5–×2.7 still beat no GAG; ×4.3 (λ 10)
    # was worse than no GAG. With CFG 3 every gain raised FD over CFG alone (41.2 → 48.6 at
    # ×1.1, 106 at ×2) and accuracy stayed within noise up to ×2.
    "unet": GainBand(good=(1.6, 2.0), hint_from=3.0, evidence="the digits UNet without CFG"),
    # Digits DiT (FLUX class), text mode: accuracy rose at ×1.1–×1.3 (0.984 → 0.999–1.000) and
    # FD rose at every gain (26.6 → 40.5 at ×1.1, 72 at ×1.3); from ×2 accuracy gained
    # nothing over no GAG (0.983) and FD was 7× higher.
    "dit text": GainBand(good=(1.1, 1.3), hint_from=2.0,
                         evidence="the digits DiT in text mode, for accuracy"),
    # Digits DiT, joint mode: no gain helped; ×1.1 kept accuracy (0.980 against 0.984) at 4×
    # the FD, and from ×1.3 accuracy fell (0.952; 0.874 at ×1.6).
    "dit joint": GainBand(good=(1.05, 1.1), hint_from=1.5,
                          evidence="the digits DiT in joint mode, where text mode did better"),
}
HINT_GAIN = GAIN_BANDS["unet"].hint_from      # the UNet band, kept under the old names
GOOD_GAIN = GAIN_BANDS["unet"].good

# torch.quantile takes at most 2^24 values; larger pools are thinned evenly first.
_QUANTILE_LIMIT = 2 ** 24


@dataclass(frozen=True)
class GainFigures:
    """Median and 95th percentile of the gain over heads and sampled tokens, and the share of
    them where the η cap bound."""
    median: float
    p95: float
    capped: float

    def as_dict(self) -> dict:
        return {"median": self.median, "p95": self.p95, "capped": self.capped}


@dataclass(frozen=True)
class TargetFigures:
    """Target-gain mode over a run: the target, the median λ the calls used, and the shares of
    (call, batch row) pairs where the target was out of reach: λ held at its bound (``bound``)
    or a median gain coefficient ≤ 0, which no λ ≥ 0 lifts above ×1 (``unreachable``)."""
    target: float
    scale_median: float
    bound: float
    unreachable: float
    max_scale: float

    def missed(self) -> float:
        return self.bound + self.unreachable

    def as_dict(self) -> dict:
        return {"target": self.target, "scale_median": self.scale_median, "bound": self.bound,
                "unreachable": self.unreachable, "max_scale": self.max_scale}


@dataclass(frozen=True)
class RunReadout:
    """What one sampling run did: overall, per layer group (model order) and per guided step
    (0-based sampler step index)."""
    overall: GainFigures
    groups: dict[str, GainFigures]
    steps: list[tuple[int, GainFigures]]
    layers: int
    total_steps: int
    scale: float                      # the node's λ (before any schedule ramp)
    values: int                       # gain values pooled into ``overall``
    target: Optional[TargetFigures] = None   # target-gain mode only
    band: GainBand = GAIN_BANDS["unet"]      # the evidence for this kind of model
    backend: str = ""                 # what computed the guided calls (``backend_text``)

    def target_text(self) -> Optional[str]:
        """Target against achieved, and where the target was out of reach, why and how far."""
        t = self.target
        if t is None:
            return None
        text = (f"target {_times(t.target)}, achieved {_times(self.overall.median)} "
                f"(λ median {t.scale_median:.3g})")
        reasons = []
        if t.bound:
            reasons.append(f"λ held at its bound {t.max_scale:g} on {_percent(t.bound)} of calls")
        if t.unreachable:
            reasons.append(f"GAG's direction did not point along the retrieval (median gain "
                           f"coefficient ≤ 0) on {_percent(t.unreachable)} of calls, λ 0 there")
        if reasons:
            text += f"; not reachable: {'; '.join(reasons)}"
        return text

    def line(self) -> str:
        o = self.overall
        groups = ", ".join(f"{name} {_times(f.median)}" for name, f in self.groups.items())
        return (f"GAG: attention gain {_times(o.median)} median, {_times(o.p95)} p95, cap active "
                f"on {_percent(o.capped)} of tokens ({self.layers} "
                f"layer{'s' * (self.layers != 1)}, {len(self.steps)} "
                f"step{'s' * (len(self.steps) != 1)}"
                + (f"; {groups}" if len(self.groups) > 1 else "") + ")"
                + (f"; {self.target_text()}" if self.target else "")
                + (f"; backend: {self.backend}" if self.backend else ""))

    def suggested_scales(self) -> Optional[tuple[float, float]]:
        """λ range expected to give a median gain in the model's good band: the gain grows
        linearly with λ while the cap does not bind, so λ·(target − 1)/(median − 1). None when
        that is undefined (λ = 0, no gain above 1) or in target-gain mode."""
        excess = self.overall.median - 1.0
        if self.target is not None or self.scale <= 0 or excess <= 1e-6:
            return None
        low, high = ((g - 1.0) * self.scale / excess for g in self.band.good)
        return _nice(low), _nice(high)

    def hint(self) -> Optional[str]:
        band = self.band
        good = f"×{band.good[0]:g}–×{band.good[1]:g}"
        if self.overall.median < band.hint_from:
            if self.target is not None and self.target.missed() > 0.5:
                return (f"the target gain was out of reach on {_percent(self.target.missed())} "
                        f"of guided calls: these layers give GAG little to push on")
            return None
        text = f"GAG is multiplying attention outputs by {_times(self.overall.median)}"
        if self.target is not None:
            text += f" — try target_gain {band.good[0]:g}–{band.good[1]:g}"
        else:
            scales = self.suggested_scales()
            if scales is not None:
                text += f" — try scale {scales[0]:g}–{scales[1]:g}"
        return text + f" (about {good} worked best on {band.evidence} in our tests)"

    def text(self) -> str:
        """What the node shows: the log line's figures on short lines (nodes are narrow), and
        the hint, if any."""
        o = self.overall
        lines = [f"GAG attention gain {_times(o.median)} median, {_times(o.p95)} p95",
                 f"cap active on {_percent(o.capped)} of tokens",
                 f"{self.layers} layer{'s' * (self.layers != 1)}, {len(self.steps)} "
                 f"step{'s' * (len(self.steps) != 1)}"]
        if len(self.groups) > 1:
            lines[-1] += ": " + ", ".join(f"{name} {_times(f.median)}"
                                          for name, f in self.groups.items())
        if self.target is not None:
            lines.append(self.target_text())
        if self.backend:
            lines.append(f"backend: {self.backend}")
        hint = self.hint()
        return "\n".join(lines + ([hint] if hint else []))

    def as_dict(self) -> dict:
        return {
            "line": self.line(), "text": self.text(), "hint": self.hint(),
            "overall": self.overall.as_dict(),
            "groups": {name: f.as_dict() for name, f in self.groups.items()},
            "steps": [dict(step=i, **f.as_dict()) for i, f in self.steps],
            "layers": self.layers, "total_steps": self.total_steps, "scale": self.scale,
            "backend": self.backend,
            "hint_gain": self.band.hint_from, "good_gain": list(self.band.good),
            "target": self.target.as_dict() if self.target else None,
        }


def backend_text(device: torch.device) -> str:
    """What computes guided attention on ``device``, for the readout: the fused kernel's
    self-check decisions for that device (``gag_core.kernels.selfcheck``; one part per dtype,
    head dim and kernel path checked), e.g. "fused kernel (float16 D64 short rows: agrees …)",
    and why the kernel could not take calls there ("PyTorch path (GPU policy) (fused kernel not
    used: triton cannot be imported …)"); else "PyTorch path (GPU policy)" / "(CPU policy)"
    (``gag_core.gpu_policy.torch_policy``)."""
    device = torch.device(device)
    policy = f"PyTorch path ({torch_policy(device).upper()} policy)"
    parts = []

    def on_this_device(name: str) -> bool:
        return name == str(device) or name.endswith(f"({device})")

    for decision in selfcheck.decisions():
        name, dtype, head_dim, path = decision.key
        if not on_this_device(name):
            continue
        what = "fused kernel" if decision.backend == "fused" else policy
        parts.append(f"{what} ({str(dtype).replace('torch.', '')} D{head_dim} {path} rows: "
                     f"{decision.reason})")
    for name, reason in selfcheck.declined():
        if on_this_device(name):
            parts.append(f"{policy} (fused kernel not used: {reason})")
    return "; ".join(parts) if parts else policy


def _times(gain: float) -> str:
    """×2.1; two decimals below ×2, where gains of a few percent would all read ×1.0."""
    return f"×{gain:.2f}" if gain < 2 else f"×{gain:.1f}"


def _percent(share: float) -> str:
    if share == 0:
        return "0%"
    if share < 0.001:
        return "<0.1%"
    return f"{share * 100:.1f}%" if share < 0.1 else f"{share * 100:.0f}%"


def _nice(scale: float) -> float:
    """Round a suggested λ for display: steps of 0.1 below 1, of 0.5 below 10, then of 1."""
    if scale < 1:
        return max(0.1, round(scale, 1))
    if scale < 10:
        return round(scale * 2) / 2
    return float(round(scale))


def _group_of(layer) -> str:
    return getattr(layer, "group", None) or "all"


class GainReadout(SharedObject):
    """Gains recorded by one model's guided attention calls during the current sampling run.

    ``record`` only appends tensors to a list (it reads nothing back, so it neither stalls the
    device nor breaks a torch.compile graph); ``end_step`` files them under the sampler step;
    ``end_run`` reduces everything on the device and reads it back once.
    """

    def __init__(self):
        self.collecting = False
        # One list object for the readout's lifetime (cleared in place), so a compiled graph
        # that appends to it keeps appending to the right one.
        self._pending: list = []
        self._steps: list[tuple[int, list]] = []
        self._targets: list = []   # target-gain mode: (λ (B,), median a (B,)) per call
        self.last: Optional[RunReadout] = None

    def record(self, layer, gain: torch.Tensor, capped: torch.Tensor) -> None:
        """File one call's gains (any shape, flattened) and cap mask for ``layer`` (a LayerRef
        or None)."""
        self._pending.append((layer, gain.reshape(-1), capped.reshape(-1)))

    def record_target(self, scale: torch.Tensor, median: torch.Tensor) -> None:
        """File one target-gain call's λ and median gain coefficient per batch row (kept as
        tensors, read back with the rest at the end of the run)."""
        self._targets.append((scale.reshape(-1), median.reshape(-1)))

    def begin_run(self) -> None:
        self._pending.clear()
        self._steps = []
        self._targets = []
        self.collecting = True

    def end_step(self, step: int) -> None:
        if self._pending:
            self._steps.append((int(step), list(self._pending)))
            self._pending.clear()

    def abandon_run(self) -> None:
        self.collecting = False
        self._pending.clear()
        self._steps = []
        self._targets = []

    def end_run(self, *, scale: float, total_steps: int, target: float = 0.0,
                max_scale: float = MAX_TARGET_SCALE, band: GainBand = GAIN_BANDS["unet"],
                backend: Optional[str] = None) -> Optional[RunReadout]:
        """The run's figures, or None when no guided call ran (window outside the run, λ
        schedule off, no selected layer reached). ``target``: the target gain in target-gain
        mode (0 = off), ``max_scale`` its λ bound; ``band``: the evidence for the hint;
        ``backend``: what computed the guided calls (None asks ``backend_text`` for the device
        the gains were recorded on)."""
        self.collecting = False
        if self._pending:  # calls after the last step callback (or a sampler without callbacks)
            last = self._steps[-1][0] + 1 if self._steps else 0
            self.end_step(last)
        steps, self._steps = self._steps, []
        if not steps:
            return None
        flat = [record for _, records in steps for record in records]
        layers = {layer for layer, _, _ in flat}
        group_order = list(dict.fromkeys(_group_of(layer) for layer, _, _ in flat))
        # One pool per step, then per group (model order), then all: reduced on the device,
        # stacked, read back in one transfer.
        pools: list[tuple[list, list]] = []
        for _, records in steps:
            pools.append(([g for _, g, _ in records], [c for _, _, c in records]))
        for group in group_order:
            mine = [record for record in flat if _group_of(record[0]) == group]
            pools.append(([g for _, g, _ in mine], [c for _, _, c in mine]))
        everything = ([g for _, g, _ in flat], [c for _, _, c in flat])
        pools.append(everything)
        reduced = [_reduce(gains, capped) for gains, capped in pools]
        targets, self._targets = self._targets, []
        if target and targets:
            reduced.append(_reduce_target(targets, target, max_scale))
        figures = torch.stack(reduced).cpu().tolist()
        target_figures = None
        if target and targets:
            target_figures = TargetFigures(target, *figures.pop(), max_scale=max_scale)
        if backend is None:
            backend = backend_text(flat[0][1].device)
        as_figures = [GainFigures(*row) for row in figures]
        result = RunReadout(
            overall=as_figures[-1],
            groups=dict(zip(group_order, as_figures[len(steps):-1])),
            steps=[(step, f) for (step, _), f in zip(steps, as_figures)],
            layers=len(layers), total_steps=int(total_steps), scale=float(scale),
            values=sum(int(g.numel()) for g in everything[0]), target=target_figures,
            band=band, backend=backend)
        self.last = result
        return result


def _reduce(gains: list, capped: list) -> torch.Tensor:
    """(3,) float64 on the gains' device: median, 95th percentile, share capped."""
    values = torch.cat([g.to(torch.float64) for g in gains])
    flags = torch.cat(capped)
    pooled = values
    if pooled.numel() > _QUANTILE_LIMIT:
        pooled = pooled[::-(-pooled.numel() // _QUANTILE_LIMIT)]
    quantiles = torch.quantile(pooled, torch.tensor([0.5, 0.95], dtype=pooled.dtype,
                                                    device=pooled.device))
    return torch.cat([quantiles, flags.to(torch.float64).mean().reshape(1)])


def _reduce_target(targets: list, target: float, max_scale: float) -> torch.Tensor:
    """(3,) float64: median λ, share of (call, row) pairs where λ hit its bound, share where
    the median gain coefficient was ≤ 0."""
    scales = torch.cat([s.to(torch.float64) for s, _ in targets])
    medians = torch.cat([m.to(torch.float64) for _, m in targets])
    positive = medians > 0
    bound = positive & ((target - 1.0) > max_scale * medians)
    return torch.stack([scales.median(), bound.to(torch.float64).mean(),
                        (~positive).to(torch.float64).mean()]).to(scales.device)


# --- the sampling-run hook and the report --------------------------------------------------

def report(result: RunReadout, node_id: Optional[str]) -> None:
    """Log the run's line (with the hint, if any: one record per run); show the summary on the
    node ``node_id`` when a server runs."""
    hint = result.hint()
    _log.info(result.line() + (f" — {hint}" if hint else ""))
    server = comfy_compat.prompt_server()
    if server is None or node_id is None:
        return
    sid = getattr(server, "client_id", None)
    send_text = getattr(server, "send_progress_text", None)
    if callable(send_text):
        send_text(result.text(), node_id, sid)
    send_sync = getattr(server, "send_sync", None)
    if callable(send_sync):
        send_sync(MESSAGE_TYPE, dict(result.as_dict(), node=str(node_id)), sid)


class ReadoutWrapper(SharedObject):
    """OUTER_SAMPLE wrapper: starts a readout for the run, ends a step on each sampler step
    callback, and reports at the end. Reporting errors are logged, never raised."""

    # CFGGuider.outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, ...)
    _CALLBACK_INDEX = 5
    _SIGMAS_INDEX = 3

    def __init__(self, runtime, node_id: Optional[str] = None):
        self.runtime = runtime
        self.node_id = None if node_id is None else str(node_id)

    def __call__(self, executor, *args, **kwargs):
        readout = self.runtime.readout
        if readout is None:
            return executor(*args, **kwargs)
        args = list(args)
        if len(args) > self._CALLBACK_INDEX:
            original = args[self._CALLBACK_INDEX]
        else:
            original = kwargs.get("callback")

        def step_done(step, *rest):
            readout.end_step(step)
            if original is not None:
                return original(step, *rest)

        if len(args) > self._CALLBACK_INDEX:
            args[self._CALLBACK_INDEX] = step_done
        else:
            kwargs["callback"] = step_done
        sigmas = (args[self._SIGMAS_INDEX] if len(args) > self._SIGMAS_INDEX
                  else kwargs.get("sigmas"))
        total_steps = max(0, len(sigmas) - 1) if sigmas is not None else 0
        readout.begin_run()
        try:
            out = executor(*args, **kwargs)
        except BaseException:
            readout.abandon_run()
            raise
        try:
            settings = self.runtime.settings
            band = GAIN_BANDS.get(getattr(self.runtime, "band_key", "unet"), GAIN_BANDS["unet"])
            result = readout.end_run(scale=settings.scale, total_steps=total_steps,
                                     target=settings.target_gain, band=band)
            if result is not None:
                report(result, self.node_id)
        except Exception:  # the image is done; a readout problem must not lose it
            _log.warning("GAG: the strength readout failed; sampling was not affected",
                         exc_info=True)
        return out


def install_readout(model_patcher, runtime, node_id: Optional[str] = None) -> bool:
    """Put the run hook on ``model_patcher`` (a clone), replacing one an earlier GAG left; with
    ``runtime.readout`` None, only remove it. False when this ComfyUI has no OUTER_SAMPLE
    wrappers (the runtime then collects nothing)."""
    wrapper_type = comfy_compat.outer_sample_wrapper_type()
    if wrapper_type is None or not comfy_compat.patcher_has_wrappers(model_patcher):
        if runtime.readout is not None:
            runtime.readout = None
        return False
    model_patcher.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
    if runtime.readout is None:
        return False
    model_patcher.add_wrapper_with_key(wrapper_type, WRAPPER_KEY,
                                       ReadoutWrapper(runtime, node_id))
    return True


def last_readout(model_patcher) -> Optional[RunReadout]:
    """The figures of the last run sampled with this GAG-patched model (for scripts and bench)."""
    wrapper_type = comfy_compat.outer_sample_wrapper_type()
    getter = getattr(model_patcher, "get_wrappers", None)
    if wrapper_type is None or getter is None:
        return None
    for wrapper in getter(wrapper_type, WRAPPER_KEY):
        readout = getattr(getattr(wrapper, "runtime", None), "readout", None)
        if readout is not None:
            return readout.last
    return None
