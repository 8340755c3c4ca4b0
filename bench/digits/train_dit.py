"""Train the digits study's joint-attention DiT on CPU, seeded: ComfyUI's FLUX.1 class at tiny
size (bench/digits/digits_model.py DIT_CONFIG), class given only as text tokens.

    python bench/digits/train_dit.py        # 2000 steps: 8.9 min on one thread of a busy 2-core machine

Flow matching in ComfyUI's FLOW parametrisation (what FluxSchnell samples with): x_σ = (1 − σ)·x₀
+ σ·ε, the model sees x_σ and σ and predicts v = ε − x₀ (ComfyUI's denoised = x_σ − σ·v). σ is
drawn logit-normal (SD3's choice: more weight on the middle of the path, where shape forms).
10% of the labels are the empty class (for CFG). Same data split as the UNet (train split only).

Writes bench/digits/digits_dit.safetensors (DiT as ``unet.*``, ClassTokens as ``tokens.*``, EMA
weights) and bench/digits/train_dit_log.json (losses, timing, settings).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_model as digits  # noqa: E402
from train import (class_tokens, draw_batch, fit_with_ema, import_comfy_cpu,  # noqa: E402
                   named_parameters)


def init_weights(model: torch.nn.Module) -> None:
    """PyTorch's default initialisers (ComfyUI's layers skip them: weights normally come from a
    checkpoint), RMS-norm gains at 1."""
    rms_norm = getattr(torch.nn, "RMSNorm", ())
    for module in model.modules():
        for kind in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm):
            if isinstance(module, kind):
                kind.reset_parameters(module)
                break
        else:
            # FLUX's q/k RMS norms: torch's RMSNorm on newer ComfyUI (gain "weight"), ComfyUI's
            # own (gain "scale") on older ones.
            for name in ("weight", "scale"):
                gain = getattr(module, name, None)
                if isinstance(gain, torch.nn.Parameter) and (
                        isinstance(module, rms_norm) or "norm" in type(module).__name__.lower()):
                    with torch.no_grad():
                        gain.fill_(1.0)


def train_dit(train_x, train_y, *, seed: int, steps: int, batch: int, lr: float,
              ema_decay: float, drop_prob: float, log_every: int):
    import comfy.model_management
    # ComfyUI's training switch: autograd-safe RoPE (the inference path's fused op has no
    # backward) and no in-place updates of tensors autograd still needs.
    comfy.model_management.in_training = True
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    base = digits.build_dit_base_model()
    dit = base.diffusion_model
    init_weights(dit)
    dit.requires_grad_(True)  # ComfyUI builds its models for inference, gradients off
    tokens = class_tokens(generator)
    x0_all = digits.image_to_model_space(train_x)
    pooled = torch.zeros(batch, digits.DIT_POOLED_DIM)

    def step_loss(step):
        x0, labels = draw_batch(x0_all, train_y, batch=batch, drop_prob=drop_prob,
                                generator=generator)
        sigma = torch.sigmoid(torch.randn(batch, generator=generator)).clamp(1e-3, 1.0)
        noise = torch.randn(x0.shape, generator=generator)
        s = sigma.view(-1, 1, 1, 1)
        noisy = (1.0 - s) * x0 + s * noise
        # FluxSchnell's model sampling: timestep = σ (multiplier 1); FLUX scales it by 1000 inside.
        # FLUX's blocks add their residuals in place (x += …) to tensors their own norms saved
        # for the backward pass; saving copies keeps the gradient exact.
        with torch.autograd.graph.saved_tensors_hooks(torch.clone, lambda t: t):
            prediction = dit(noisy, sigma, tokens(labels), y=pooled)
            return ((prediction - (noise - x0)) ** 2).mean()

    dit.train()
    return fit_with_ema(named_parameters(dit, tokens), step_loss, steps=steps, lr=lr,
                        ema_decay=ema_decay, log_every=log_every)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema", type=float, default=0.998)
    parser.add_argument("--drop-prob", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=digits.HERE)
    parser.add_argument("--comfyui", type=Path, default=None, metavar="PATH")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import_comfy_cpu(args.comfyui)
    from safetensors.torch import save_file
    import comfyui_version

    train_x, train_y, _, _ = digits.load_split()
    ema, log, seconds = train_dit(train_x, train_y, seed=args.seed, steps=args.steps,
                                  batch=args.batch, lr=args.lr, ema_decay=args.ema,
                                  drop_prob=args.drop_prob, log_every=100)
    args.out.mkdir(parents=True, exist_ok=True)
    # Saved under the released FLUX checkpoints' names (q/k norm gains "…_norm.scale"), which
    # ComfyUI maps to its module names on load (digits_model.load_dit_generator).
    ema = {(k[:-len(".weight")] + ".scale" if k.startswith("unet.") and k.endswith("_norm.weight")
            else k): v for k, v in ema.items()}
    save_file({k: v.contiguous() for k, v in ema.items()},
              str(args.out / digits.DIT_WEIGHTS.name),
              metadata={"format": "bench/digits/digits_model.py DIT_CONFIG (ComfyUI FluxSchnell); "
                                  "unet.* = diffusion_model, tokens.* = ClassTokens"})
    info = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "train_size": len(train_y), "torch": torch.__version__,
            "comfyui": comfyui_version.__version__, "seconds": round(seconds, 1),
            "dit_parameters": sum(v.numel() for k, v in ema.items() if k.startswith("unet.")),
            "loss_log": log}
    (args.out / "train_dit_log.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"done: {seconds:.0f}s", flush=True)


if __name__ == "__main__":
    main()
