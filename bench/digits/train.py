"""Train the digits study's two networks on CPU, seeded: the judge classifier, then the
class-conditional diffusion UNet (ComfyUI's own UNetModel, SD1.5 layout, shrunk).

    python bench/digits/train.py            # ~10 min on one CPU core; writes the two .safetensors
    python bench/digits/train.py --part judge   # the judge alone (~10 s)

Writes bench/digits/digits_judge.safetensors, bench/digits/digits_unet.safetensors (UNet and class
tokens, EMA weights) and bench/digits/train_log.json (losses, accuracies, timings, settings).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_model as digits  # noqa: E402


def import_comfy_cpu(comfyui=None):
    sys.path.insert(0, str(digits.REPO_ROOT / "bench"))
    import comfy_env  # the bench scripts' ComfyUI finder
    comfy_env.import_comfy(cpu=True, path=comfyui)


def random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 1):
    """Shift each image by up to max_shift pixels in x and y (background fill), for the judge."""
    padded = F.pad(images, [max_shift] * 4, value=-1.0)
    size = images.shape[-1]
    out = torch.empty_like(images)
    offsets = torch.randint(0, 2 * max_shift + 1, (images.shape[0], 2), generator=generator)
    for dy in range(2 * max_shift + 1):
        for dx in range(2 * max_shift + 1):
            chosen = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
            out[chosen] = padded[chosen, :, dy:dy + size, dx:dx + size]
    return out


def train_judge(train_x, train_y, test_x, test_y, *, seed: int, epochs: int):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    judge = digits.Judge()
    optimizer = torch.optim.Adam(judge.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        judge.train()
        order = torch.randperm(len(train_y), generator=generator)
        for batch in order.split(64):
            logits = judge(random_shift(train_x[batch], generator))
            loss = F.cross_entropy(logits, train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    judge.eval()
    with torch.no_grad():
        test_acc = (judge(test_x).argmax(-1) == test_y).float().mean().item()
        train_acc = (judge(train_x).argmax(-1) == train_y).float().mean().item()
    return judge, train_acc, test_acc


def class_tokens(generator: torch.Generator) -> digits.ClassTokens:
    """The class-token table, drawn N(0, 1) from ``generator`` (start token first)."""
    tokens = digits.ClassTokens()
    with torch.no_grad():
        tokens.start.normal_(generator=generator)
        tokens.tokens.normal_(generator=generator)
    return tokens


def named_parameters(network: torch.nn.Module, tokens: torch.nn.Module) -> dict:
    """Every trained parameter under its saved name: ``unet.*`` the network, ``tokens.*`` the
    class tokens."""
    return dict(list(("unet." + n, p) for n, p in network.named_parameters())
                + list(("tokens." + n, p) for n, p in tokens.named_parameters()))


def draw_batch(x0_all: torch.Tensor, train_y: torch.Tensor, *, batch: int, drop_prob: float,
               generator: torch.Generator):
    """A random training batch: images x0 [batch, C, H, W] and labels [batch], a ``drop_prob``
    share of them the empty class (what CFG's unconditional branch sees)."""
    idx = torch.randint(0, len(train_y), (batch,), generator=generator)
    labels = train_y[idx].clone()
    labels[torch.rand(batch, generator=generator) < drop_prob] = digits.NULL_CLASS
    return x0_all[idx], labels


def fit_with_ema(named: dict, step_loss, *, steps: int, lr: float, ema_decay: float,
                 log_every: int):
    """The training loop both digits generators share: AdamW, warm-up over min(200, steps/10)
    steps then cosine down to 10% of ``lr``, gradient norm clipped at 1, and an EMA of every
    parameter (decay ramped up as (1+step)/(10+step) so early weights wash out).

    ``step_loss(step)`` draws a batch and returns its scalar loss. Returns (ema state dict under
    the names of ``named``, loss log every ``log_every`` steps, seconds)."""
    params = list(named.values())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = min(200, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(warmup, 1))
        * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    ema = {k: v.detach().clone() for k, v in named.items()}
    log, running, started = [], 0.0, time.time()
    for step in range(steps):
        loss = step_loss(step)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            for k, p in named.items():
                ema[k].mul_(decay).add_(p.detach(), alpha=1 - decay)
        running += loss.item()
        if (step + 1) % log_every == 0:
            log.append({"step": step + 1, "loss": running / log_every,
                        "seconds": round(time.time() - started, 1)})
            print(f"step {step + 1}/{steps}  loss {running / log_every:.4f}  "
                  f"{time.time() - started:.0f}s", flush=True)
            running = 0.0
    return ema, log, time.time() - started


def train_unet(train_x, train_y, *, seed: int, steps: int, batch: int, lr: float,
               ema_decay: float, drop_prob: float, log_every: int, min_snr_gamma: float = 5.0):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    base = digits.build_base_model()
    unet = base.diffusion_model
    # ComfyUI's layers skip initialisation (weights normally come from a checkpoint), so run
    # PyTorch's default initialisers explicitly, class by class.
    for module in unet.modules():
        for kind in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(module, kind):
                kind.reset_parameters(module)
                break
    tokens = class_tokens(generator)
    sigmas = base.model_sampling.sigmas.float()  # SD1.5 discrete schedule, index = timestep
    x0_all = digits.image_to_model_space(train_x)

    def step_loss(step):
        x0, labels = draw_batch(x0_all, train_y, batch=batch, drop_prob=drop_prob,
                                generator=generator)
        t = torch.randint(0, len(sigmas), (batch,), generator=generator)
        sigma = sigmas[t].view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=generator)
        # ComfyUI's EPS parametrisation: x = x0 + σε, the UNet sees x/√(σ²+1) and predicts ε.
        noisy_input = (x0 + sigma * noise) / torch.sqrt(sigma * sigma + 1.0)
        prediction = unet(noisy_input, t.float(), context=tokens(labels))
        # Min-SNR-γ weighting (Hang et al. 2023) for ε-prediction: weight min(SNR, γ)/SNR with
        # SNR = 1/σ². Without it the large ε-errors of the nearly clean steps dominate the
        # gradient and the high-noise steps, where samples get their shape, train slowly.
        weight = (min_snr_gamma * sigma.view(-1) ** 2).clamp(max=1.0)
        return ((prediction - noise) ** 2).mean(dim=(1, 2, 3)).mul(weight).mean()

    unet.train()
    return fit_with_ema(named_parameters(unet, tokens), step_loss, steps=steps, lr=lr,
                        ema_decay=ema_decay, log_every=log_every)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema", type=float, default=0.998)
    parser.add_argument("--drop-prob", type=float, default=0.1, help="share of empty-prompt labels (for CFG)")
    parser.add_argument("--min-snr-gamma", type=float, default=5.0)
    parser.add_argument("--judge-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--part", choices=("all", "judge", "unet"), default="all",
                        help="train both (default) or one; each is seeded on its own, so training "
                             "one part alone gives the same weights as in a full run")
    parser.add_argument("--out", type=Path, default=digits.HERE)
    parser.add_argument("--comfyui", type=Path, default=None, metavar="PATH",
                        help="ComfyUI checkout (default: $COMFYUI_PATH, ../.. of the pack, "
                             "~/ComfyUI)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    import_comfy_cpu(args.comfyui)
    from safetensors.torch import save_file

    train_x, train_y, test_x, test_y = digits.load_split()
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "train_log.json"
    info = json.loads(log_path.read_text()) if log_path.is_file() and args.part != "all" else {}
    info.update({"train_size": len(train_y), "test_size": len(test_y), "torch": torch.__version__})
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    judge_seconds = unet_seconds = 0.0
    if args.part in ("all", "judge"):
        started = time.time()
        judge, judge_train_acc, judge_test_acc = train_judge(
            train_x, train_y, test_x, test_y, seed=args.seed, epochs=args.judge_epochs)
        judge_seconds = time.time() - started
        print(f"judge: train accuracy {judge_train_acc:.4f}, held-out accuracy "
              f"{judge_test_acc:.4f} ({judge_seconds:.0f}s)", flush=True)
        save_file({k: v.contiguous() for k, v in judge.state_dict().items()},
                  str(args.out / digits.JUDGE_WEIGHTS.name))
        info.update({"judge_settings": settings, "judge_train_accuracy": judge_train_acc,
                     "judge_test_accuracy": judge_test_acc, "judge_seconds": round(judge_seconds, 1)})
    if args.part in ("all", "unet"):
        ema, log, unet_seconds = train_unet(train_x, train_y, seed=args.seed, steps=args.steps,
                                            batch=args.batch, lr=args.lr, ema_decay=args.ema,
                                            drop_prob=args.drop_prob, log_every=100,
                                            min_snr_gamma=args.min_snr_gamma)
        save_file({k: v.contiguous() for k, v in ema.items()},
                  str(args.out / digits.UNET_WEIGHTS.name),
                  metadata={"format": "bench/digits/digits_model.py UNET_CONFIG; unet.* = "
                                      "diffusion_model, tokens.* = ClassTokens"})
        info.update({"settings": settings, "unet_seconds": round(unet_seconds, 1),
                     "unet_parameters": sum(v.numel() for k, v in ema.items()
                                            if k.startswith("unet.")),
                     "loss_log": log})
    log_path.write_text(json.dumps(info, indent=1) + "\n")
    print(f"done: judge {judge_seconds:.0f}s, unet {unet_seconds:.0f}s", flush=True)


if __name__ == "__main__":
    main()
