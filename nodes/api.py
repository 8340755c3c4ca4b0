"""Apply GAG to a ComfyUI model from Python: what the GAG Model Patch node calls, and what
scripts, benchmarks and other packs can call directly (README, "Using GAG from Python":
``apply_gag``, and ``last_readout`` for the figures of a patched model's last run)."""

from __future__ import annotations

from typing import Optional

from ..gag_core import PAPER
from ..gag_core.layer_spec import parse_layer_spec, resolve_layers
from .adapters import all_presets, available_layers, find_family, hook_of, model_name
from .adapters.diagnose import wrapped_model_refusal
from .gain_readout import install_readout, last_readout
from .guidance import GuidanceRuntime
from .settings import GAGSettings, LayerChoice, Schedule

__all__ = ["patch_model", "apply_gag", "layer_selection_text", "last_readout"]


def layer_selection_text(family, choice: LayerChoice, model_patcher) -> str:
    """The selection text a layer choice means for this model's family."""
    if choice.preset == "custom":
        return choice.custom
    if choice.preset not in family.presets:
        raise ValueError(f"layer preset {choice.preset!r} does not apply to "
                         f"{family.display_name} models ({model_name(model_patcher)}); its "
                         f"presets are {', '.join(family.presets)}, or 'custom'")
    return family.presets[choice.preset]


def _family_of(model_patcher):
    """``find_family``, with models another pack wrapped (Nunchaku) refused by that pack's
    name first: their class alone would only say "unsupported", or match a family whose
    attention GAG then never reaches."""
    diffusion_model = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    try:
        family = find_family(model_patcher)
    except ValueError as unsupported:
        refusal = wrapped_model_refusal(diffusion_model)
        if refusal:
            raise ValueError(refusal) from unsupported
        raise
    refusal = wrapped_model_refusal(diffusion_model, family.id)
    if refusal:
        raise ValueError(refusal)
    return family


def patch_model(model_patcher, settings: GAGSettings, *, readout: bool = True,
                report_to: Optional[str] = None):
    """A clone of ``model_patcher`` with GAG installed as ``settings`` say; the input is untouched.

    readout: after each sampling run, log how strongly GAG pushed (nodes/gain_readout.py); it never
    changes the samples. report_to: the id of the GAG Model Patch node that shows it in the
    browser.

    Raises ValueError for a model no family supports (naming the pack that wrapped it, such as
    Nunchaku, where that is why), a preset or mode that does not apply to its family, or a
    selection that names layers the model does not have.
    """
    family = _family_of(model_patcher)
    mode = family.resolve_mode(settings.layers.mode)
    text = layer_selection_text(family, settings.layers, model_patcher)
    layers = resolve_layers(parse_layer_spec(text), available_layers(family, model_patcher),
                            model_name(model_patcher))
    hook = hook_of(family)
    patched = model_patcher.clone()
    hook.uninstall(patched)
    runtime = GuidanceRuntime(settings, patched.get_model_object("model_sampling"),
                              readout=readout)
    runtime.band_key = "unet" if family.hook == "unet" else f"dit {mode}"
    hook.install(patched, family, layers, runtime, mode)
    install_readout(patched, runtime, report_to)
    return patched


def apply_gag(model_patcher, *, scale: float = PAPER.scale, eta: float = PAPER.eta,
              zeta: float = PAPER.zeta, alpha: float = PAPER.alpha, layers: str = "paper", mode: str = "auto",
              start_percent: float = 0.0, end_percent: float = 1.0, ramp: str = "constant",
              readout: bool = True, target_gain: float = 0.0):
    """Keyword form of ``patch_model``. ``layers`` is a preset name or a custom selection text;
    ``target_gain`` > 0 sets λ per call for that median gain (``scale`` is then unused)."""
    if layers == "custom":
        raise ValueError("layers='custom' is the node's switch to its text box; pass the "
                         "selection text itself, e.g. layers='input 4-8, output 0-5'")
    is_preset = layers in all_presets()
    choice = LayerChoice(preset=layers if is_preset else "custom",
                         custom="" if is_preset else layers, mode=mode)
    settings = GAGSettings(scale=scale, eta=eta, zeta=zeta, alpha=alpha, layers=choice,
                           schedule=Schedule(start_percent, end_percent, ramp),
                           target_gain=target_gain)
    return patch_model(model_patcher, settings, readout=readout)
