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

from .adapters import comfy_compat
from .adapters.shared import SharedObject

_log = logging.getLogger("comfyui_gag")

WRAPPER_KEY = "gag_readout"
MESSAGE_TYPE = "gag.readout"   # the front-end event web/js/gag_readout.js listens to

# From bench/digits/readout_study.py (bench/results_readout.md; summary in bench/RESULTS.md):
# on the digits model the best judge accuracy and FD came at median gains ×1.66–×1.99 (λ 2–3)
# in both regimes (4 steps CFG 1; 20 steps CFG 3). At ×2.66 (λ 5) GAG was still better than no
# GAG without CFG; at ×3.3 (λ 7) FD was 1.7× the best; at ×4.3 (λ 10, the paper's default) both
# regimes were worse than no GAG. So: hint from ×3, between the last good and the first bad.
HINT_GAIN = 3.0
GOOD_GAIN = (1.6, 2.0)

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
    backend: str = ""                 # what computed the guided calls (``backend_text``)

    def line(self) -> str:
        o = self.overall
        groups = ", ".join(f"{name} {_times(f.median)}" for name, f in self.groups.items())
        return (f"GAG: attention gain {_times(o.median)} median, {_times(o.p95)} p95, cap active "
                f"on {_percent(o.capped)} of tokens ({self.layers} "
                f"layer{'s' * (self.layers != 1)}, {len(self.steps)} "
                f"step{'s' * (len(self.steps) != 1)}"
                + (f"; {groups}" if len(self.groups) > 1 else "") + ")"
                + (f"; backend: {self.backend}" if self.backend else ""))

    def suggested_scales(self) -> Optional[tuple[float, float]]:
        """λ range expected to give a median gain in GOOD_GAIN: the gain grows linearly with λ
        while the cap does not bind, so λ·(target − 1)/(median − 1). None when that is
        undefined (λ = 0, no gain above 1)."""
        excess = self.overall.median - 1.0
        if self.scale <= 0 or excess <= 1e-6:
            return None
        low, high = ((g - 1.0) * self.scale / excess for g in GOOD_GAIN)
        return _nice(low), _nice(high)

    def hint(self) -> Optional[str]:
        if self.overall.median < HINT_GAIN:
            return None
        text = f"GAG is multiplying attention outputs by {_times(self.overall.median)}"
        scales = self.suggested_scales()
        if scales is not None:
            text += f" — try scale {scales[0]:g}–{scales[1]:g}"
        return text + f" (about ×{GOOD_GAIN[0]:g}–×{GOOD_GAIN[1]:g} worked best in our tests)"

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
            "hint_gain": HINT_GAIN, "good_gain": list(GOOD_GAIN),
        }


def backend_text(device: torch.device) -> str:
    """What computes guided attention on ``device``, for the readout: the fused kernel's
    self-check decisions for that device (``gag_core.kernels.selfcheck``; one part per dtype,
    head dim and kernel path checked), e.g. "fused kernel (float16 D64 short rows: agrees …)",
    else "PyTorch path (GPU policy)" / "(CPU policy)" (``gag_core.gpu_policy.torch_policy``)."""
    from ..gag_core.gpu_policy import torch_policy
    from ..gag_core.kernels.selfcheck import decisions
    device = torch.device(device)
    policy = f"PyTorch path ({torch_policy(device).upper()} policy)"
    parts = []
    for decision in decisions():
        name, dtype, head_dim, path = decision.key
        if name != str(device) and not name.endswith(f"({device})"):
            continue
        what = "fused kernel" if decision.backend == "fused" else policy
        parts.append(f"{what} ({str(dtype).replace('torch.', '')} D{head_dim} {path} rows: "
                     f"{decision.reason})")
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
        self.last: Optional[RunReadout] = None

    def record(self, layer, gain: torch.Tensor, capped: torch.Tensor) -> None:
        """File one call's gains (any shape, flattened) and cap mask for ``layer`` (a LayerRef
        or None)."""
        self._pending.append((layer, gain.reshape(-1), capped.reshape(-1)))

    def begin_run(self) -> None:
        self._pending.clear()
        self._steps = []
        self.collecting = True

    def end_step(self, step: int) -> None:
        if self._pending:
            self._steps.append((int(step), list(self._pending)))
            self._pending.clear()

    def abandon_run(self) -> None:
        self.collecting = False
        self._pending.clear()
        self._steps = []

    def end_run(self, *, scale: float, total_steps: int,
                backend: Optional[str] = None) -> Optional[RunReadout]:
        """The run's figures, or None when no guided call ran (window outside the run, λ
        schedule off, no selected layer reached). ``backend``: what computed the guided calls;
        None asks ``backend_text`` for the device the gains were recorded on."""
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
        figures = torch.stack([_reduce(gains, capped) for gains, capped in pools]).cpu().tolist()
        if backend is None:
            backend = backend_text(flat[0][1].device)
        as_figures = [GainFigures(*row) for row in figures]
        result = RunReadout(
            overall=as_figures[-1],
            groups=dict(zip(group_order, as_figures[len(steps):-1])),
            steps=[(step, f) for (step, _), f in zip(steps, as_figures)],
            layers=len(layers), total_steps=int(total_steps), scale=float(scale),
            values=sum(int(g.numel()) for g in everything[0]), backend=backend)
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
            result = readout.end_run(scale=self.runtime.settings.scale, total_steps=total_steps)
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
