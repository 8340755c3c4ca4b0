"""Evaluate guidance methods on the shipped digits diffusion model with ComfyUI's real sampler.

    python bench/digits/evaluate.py                   # ~6 min on 2 idle CPU cores
    python bench/digits/evaluate.py --samples 200 --seeds 1 --out /tmp/quick.md   # a quick look

Every method samples the same class-balanced batch (--samples images, labels 0..9 cycling) from the
same starting noise per seed, through comfy.sample.sample on a ModelPatcher; GAG and PLADIS are
installed by the pack's own API (nodes.api.apply_gag), exactly as the GAG node patches a real UNet.
The judge (bench/digits/digits_model.py Judge, trained on the training split only) scores:

  accuracy  share of samples the judge assigns to the class they were conditioned on
  FD        Fréchet distance between judge features (64-d) of the samples and of the 450 held-out
            real digits (lower is better; the held-out vs training-split floor is reported)

Writes the markdown table (--out, default bench/results_digits.md), one PNG grid per method and
regime (bench/digits/samples/<regime>_<method>.png: one row per class) and
bench/digits/regression.json (what tests/comfy/test_digits_regression.py checks against).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_model as digits  # noqa: E402

SAMPLER = "euler"
SCHEDULER = "normal"
MULTI_STEPS = 20
MULTI_CFG = 3.0
FEW_STEPS = 4

# The regression check (small, fast): recorded here by evaluate.py, re-measured by the CI test.
REGRESSION = dict(samples=200, seed=1234, steps=FEW_STEPS, cfg=1.0)


def import_pack(comfyui=None):
    """The repository imported as package comfyui_gag (as ComfyUI loads it), with its API;
    ``comfyui``: the ComfyUI checkout (default: bench/comfy_env.py's search)."""
    import importlib
    sys.path.insert(0, str(digits.REPO_ROOT / "bench"))
    import comfy_env
    pack = comfy_env.import_pack(cpu=True, path=comfyui)
    importlib.import_module(pack.__name__ + ".nodes.api")
    importlib.import_module(pack.__name__ + ".nodes.adapters.unet_hook")
    return pack


@dataclass(frozen=True)
class Method:
    name: str
    key: str                     # file-name friendly
    cfg: float
    gag: Optional[dict] = None   # keyword arguments for nodes.api.apply_gag, None = unpatched


def pladis_args(scale: float) -> dict:
    return dict(scale=scale, eta=float("inf"), zeta=1.0, layers="paper")


def multi_step_methods() -> list[Method]:
    return [
        Method("plain (CFG 1)", "plain", 1.0),
        Method(f"CFG {MULTI_CFG:g}", "cfg", MULTI_CFG),
        Method(f"CFG {MULTI_CFG:g} + PLADIS λ=1 (scale 2)", "cfg_pladis1", MULTI_CFG, pladis_args(1.0)),
        Method(f"CFG {MULTI_CFG:g} + GAG paper (λ=10 η=15 ζ=0, input+output)", "cfg_gag", MULTI_CFG,
               dict(layers="paper")),
        Method(f"CFG {MULTI_CFG:g} + GAG ζ=0.5", "cfg_gag_zeta05", MULTI_CFG, dict(zeta=0.5)),
        Method(f"CFG {MULTI_CFG:g} + GAG λ=3", "cfg_gag_l3", MULTI_CFG, dict(scale=3.0)),
        Method(f"CFG {MULTI_CFG:g} + GAG all layers", "cfg_gag_all", MULTI_CFG, dict(layers="all")),
    ]


def few_step_methods() -> list[Method]:
    return [
        Method("plain", "plain", 1.0),
        Method("PLADIS λ=1 (scale 2)", "pladis1", 1.0, pladis_args(1.0)),
        Method("PLADIS λ=10", "pladis10", 1.0, pladis_args(10.0)),
        Method("GAG paper (λ=10 η=15 ζ=0, input+output)", "gag", 1.0, dict(layers="paper")),
        Method("GAG ζ=0.5", "gag_zeta05", 1.0, dict(zeta=0.5)),
        Method("GAG λ=3", "gag_l3", 1.0, dict(scale=3.0)),
        Method("GAG λ=30", "gag_l30", 1.0, dict(scale=30.0)),
        Method("GAG all layers", "gag_all", 1.0, dict(layers="all")),
        Method("GAG input only", "gag_input", 1.0, dict(layers="input")),
        Method("GAG output only", "gag_output", 1.0, dict(layers="output")),
        Method("GAG middle only", "gag_middle", 1.0, dict(layers="middle")),
    ]


class Generator:
    """The shipped model and its class tokens, with a cache of patched clones per method."""

    def __init__(self, pack, weights: Path = digits.UNET_WEIGHTS, *, dit: bool = False):
        """``dit``: the joint-attention DiT (digits_model.load_dit_generator) instead of the
        UNet; its conditionings carry FLUX's (zero) pooled vector."""
        self.pack = pack
        if dit:
            self.patcher, self.tokens = digits.load_dit_generator(weights)
            self.extras = digits.dit_conditioning_extras
        else:
            self.patcher, self.tokens = digits.load_generator(weights)
            self.extras = lambda count: {}
        self._patched: dict = {}

    def model_for(self, method: Method):
        if method.gag is None:
            return self.patcher
        if method.key not in self._patched:
            self._patched[method.key] = self.pack.nodes.api.apply_gag(self.patcher, **method.gag)
        return self._patched[method.key]

    @torch.no_grad()
    def sample(self, method: Method, labels: torch.Tensor, *, seed: int, steps: int,
               model=None) -> torch.Tensor:
        """Images (N, 1, 16, 16) in [−1, 1] (clamped), conditioned on labels; `model` overrides
        the method's patched model."""
        import comfy.sample
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((len(labels),) + digits.LATENT_SHAPE, generator=generator)
        positive = [[self.tokens(labels), self.extras(len(labels))]]
        negative = [[self.tokens(torch.full_like(labels, digits.NULL_CLASS)),
                     self.extras(len(labels))]]
        out = comfy.sample.sample(model or self.model_for(method), noise, steps, method.cfg, SAMPLER,
                                  SCHEDULER, positive, negative, torch.zeros_like(noise),
                                  seed=seed, disable_pbar=True)
        model_space = self.patcher.model.latent_format.process_in(out)  # undo the latent scaling
        return digits.model_space_to_image(model_space).clamp(-1.0, 1.0)


def score(judge, images, labels, real_stats) -> tuple[float, float]:
    preds, feats = digits.judge_images(judge, images)
    accuracy = (preds == labels).double().mean().item()
    return accuracy, digits.frechet_distance(digits.feature_stats(feats), real_stats)


def held_out_stats(judge):
    """The judge's feature statistics of the held-out real digits (what FD is measured against)."""
    _, _, test_x, _ = digits.load_split()
    return digits.feature_stats(digits.judge_images(judge, test_x)[1])


def score_seeds(generator: Generator, method: Method, model, labels: torch.Tensor, *,
                seeds: list, steps: int, judge, real_stats, readout):
    """``method`` sampled once per seed on ``model`` and scored: (accuracies, FDs, readouts), one
    each per seed; a readout is nodes/gain_readout.py's last_readout of that run (None where
    ``method`` runs without GAG)."""
    accs, fds, runs = [], [], []
    for seed in seeds:
        images = generator.sample(method, labels, seed=seed, steps=steps, model=model)
        acc, fd = score(judge, images, labels, real_stats)
        accs.append(acc)
        fds.append(fd)
        runs.append(readout.last_readout(model) if method.gag else None)
    return accs, fds, runs


def save_grid(images: torch.Tensor, labels: torch.Tensor, path: Path, per_class: int = 10,
              zoom: int = 2) -> None:
    """One row per class, per_class samples each, white background, zoomed for viewing."""
    from PIL import Image
    rows = []
    for c in range(digits.NUM_CLASSES):
        chosen = images[labels == c][:per_class]
        rows.append(torch.cat(list(chosen[:, 0]), dim=1))
    grid = torch.cat(rows, dim=0)
    pixels = ((1.0 - (grid + 1.0) / 2.0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels, mode="L")
    image = image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)


def diagnose_cap(generator: Generator, *, samples: int = 100, seed: int = 99) -> dict:
    """How the shipped model's cross-attention compares with the paper's η = 15.

    Runs a plain 20-step sample with a recording attn2 replace on every cross-attention (it returns
    the ordinary softmax output, so sampling is unchanged) and collects, per head and token:
    ‖O_s‖, ‖g‖ for ζ = 0 and ζ = 1, and the share of them above η = 15."""
    dense_sparse_attention = sys.modules[generator.pack.__name__ + ".gag_core"].dense_sparse_attention
    records = {"sparse_norm": [], "g0": [], "g1": [], "c": []}

    def record(q, k, v, extra):
        heads = extra["n_heads"]
        split = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
        dense, sparse = dense_sparse_attention(split(q), split(k), split(v), alpha=1.5)
        delta = sparse - dense
        norm = sparse.norm(dim=-1, keepdim=True)
        unit = sparse / norm.clamp(min=1e-12)
        along = (delta * unit).sum(-1, keepdim=True)
        records["sparse_norm"].append(norm.flatten())
        records["g0"].append(along.abs().flatten())
        records["g1"].append(delta.norm(dim=-1).flatten())
        records["c"].append((along / norm.clamp(min=1e-12)).flatten())
        return dense.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1).to(q.dtype)

    patched = generator.patcher.clone()
    pack = generator.pack
    for ref in pack.nodes.adapters.unet_hook.available_layers(None, patched):
        patched.set_model_attn2_replace(record, ref.group, ref.block, ref.sub)
    generator.sample(Method("diagnostic", "diagnostic", MULTI_CFG), digits.balanced_labels(samples),
                     seed=seed, steps=MULTI_STEPS, model=patched)
    cat = {k: torch.cat(v).double() for k, v in records.items()}
    # torch.quantile takes at most 2^24 values: use an evenly strided subsample.
    q = lambda x, p: torch.quantile(x[::max(1, x.numel() // 1_000_000)], p).item()
    return {
        "sparse_norm_median": q(cat["sparse_norm"], 0.5),
        "sparse_norm_p99": q(cat["sparse_norm"], 0.99),
        "g_zeta0_median": q(cat["g0"], 0.5), "g_zeta0_p99": q(cat["g0"], 0.99),
        "g_zeta1_median": q(cat["g1"], 0.5), "g_zeta1_p99": q(cat["g1"], 0.99),
        "c_median": q(cat["c"], 0.5),
        "share_g_zeta0_above_15": (cat["g0"] > 15).double().mean().item(),
        "share_g_zeta1_above_15": (cat["g1"] > 15).double().mean().item(),
    }


def fmt(values, digits_after: int) -> str:
    mean, spread = digits.mean_and_spread(values)
    return f"{mean:.{digits_after}f} ± {spread:.{digits_after}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=digits.REPO_ROOT / "bench" / "results_digits.md")
    parser.add_argument("--grids", type=Path, default=digits.HERE / "samples")
    parser.add_argument("--regression", type=Path, default=digits.HERE / "regression.json")
    parser.add_argument("--only", choices=("multi", "few"), default=None)
    parser.add_argument("--unet", type=Path, default=digits.UNET_WEIGHTS)
    parser.add_argument("--judge", type=Path, default=digits.JUDGE_WEIGHTS)
    parser.add_argument("--comfyui", type=Path, default=None, metavar="PATH",
                        help="ComfyUI checkout (default: $COMFYUI_PATH, ../.. of the pack, "
                             "~/ComfyUI)")
    args = parser.parse_args(argv)
    if args.samples < 10 or args.samples % digits.NUM_CLASSES:
        parser.error(f"--samples must be a positive multiple of 10; got {args.samples}")
    torch.set_num_threads(args.threads)
    started = time.time()

    pack = import_pack(args.comfyui)
    generator = Generator(pack, args.unet)
    judge = digits.load_judge(args.judge)
    train_x, train_y, test_x, test_y = digits.load_split()
    real_preds, real_feats = digits.judge_images(judge, test_x)
    real_stats = digits.feature_stats(real_feats)
    judge_accuracy = (real_preds == test_y).double().mean().item()
    _, train_feats = digits.judge_images(judge, train_x)
    floor = digits.frechet_distance(digits.feature_stats(train_feats), real_stats)
    labels = digits.balanced_labels(args.samples)
    seeds = list(range(args.seeds))

    regimes = [("multi", f"{MULTI_STEPS} steps, CFG", MULTI_STEPS, multi_step_methods()),
               ("few", f"{FEW_STEPS} steps, no CFG (CFG 1)", FEW_STEPS, few_step_methods())]
    if args.only:
        regimes = [r for r in regimes if r[0] == args.only]
    tables = {}
    for regime, title, steps, methods in regimes:
        rows = []
        for method in methods:
            accs, fds, secs = [], [], []
            for seed in seeds:
                t0 = time.time()
                images = generator.sample(method, labels, seed=seed, steps=steps)
                secs.append(time.time() - t0)
                acc, fd = score(judge, images, labels, real_stats)
                accs.append(acc)
                fds.append(fd)
                if seed == seeds[0]:
                    save_grid(images, labels, args.grids / f"{regime}_{method.key}.png")
            rows.append((method, accs, fds, secs))
            print(f"[{time.time() - started:5.0f}s] {regime:5s} {method.name:55s} "
                  f"acc {fmt(accs, 3)}  FD {fmt(fds, 2)}", flush=True)
        tables[regime] = (title, steps, rows)

    diag = diagnose_cap(generator)
    print(f"[{time.time() - started:5.0f}s] diagnostics {diag}", flush=True)

    # The regression numbers: plain and GAG paper, few-step regime, fixed seed.
    reg_labels = digits.balanced_labels(REGRESSION["samples"])
    regression = {"config": REGRESSION, "accuracy": {}}
    for method in (Method("plain", "plain", 1.0), Method("GAG paper", "gag", 1.0, dict(layers="paper"))):
        images = generator.sample(method, reg_labels, seed=REGRESSION["seed"], steps=REGRESSION["steps"])
        regression["accuracy"][method.key] = score(judge, images, reg_labels, real_stats)[0]
    if args.only is None and args.samples == 1000:
        args.regression.write_text(json.dumps(regression, indent=1) + "\n")

    total = time.time() - started
    command = "python bench/digits/evaluate.py" + (
        "" if (args.samples, args.seeds, args.only) == (1000, 3, None)
        else f" --samples {args.samples} --seeds {args.seeds}" + (f" --only {args.only}" if args.only else ""))
    train_log = json.loads((args.unet.parent / "train_log.json").read_text())
    lines = [
        "# Digits: guidance on a small trained diffusion model", "",
        f"Command: `{command}` ({total / 60:.1f} min, {args.threads} CPU thread(s) on a shared "
        f"2-core machine, torch "
        f"{torch.__version__}); model from `python bench/digits/train.py` "
        f"({train_log['settings']['steps']} steps, {train_log['unet_seconds'] / 60:.1f} min).", "",
        f"Model: ComfyUI's SD1.5 UNetModel shrunk ({train_log['unet_parameters']:,} parameters, 7 "
        f"cross-attention layers: input 1/3, middle, output 0–3), ε-prediction on SD1.5's "
        f"discrete schedule, conditioned only through cross-attention on 6 learned class tokens; "
        f"data = scikit-learn digits upsampled to 16×16 and folded into a 4×8×8 latent. "
        f"Sampler `{SAMPLER}`/`{SCHEDULER}` via comfy.sample.sample; GAG/PLADIS via "
        f"`nodes.api.apply_gag` (GAG defaults λ=10, η=15, ζ=0, α=1.5, layers \"paper\" = "
        f"input+output); PLADIS = apply_gag(ζ=1, η=∞), λ=1 matching PLADIS's own default scale 2.", "",
        f"Judge: a small CNN, held-out accuracy **{judge_accuracy:.4f}** on the 450 held-out real "
        f"digits. FD floor (judge features of the 1,347 training digits vs the held-out ones): "
        f"**{floor:.2f}**.", "",
        f"Each row: {args.samples} samples (class-balanced) per seed, seeds {seeds}, mean ± sample "
        f"standard deviation over seeds; every method starts from the same noise per seed.", "",
    ]
    for regime, (title, steps, rows) in tables.items():
        lines += [f"## {title}", "", "| method | judge accuracy ↑ | FD to held-out ↓ | s / run |",
                  "|---|---|---|---|"]
        for method, accs, fds, secs in rows:
            lines.append(f"| {method.name} | {fmt(accs, 3)} | {fmt(fds, 2)} | "
                         f"{sum(secs) / len(secs):.1f} |")
        lines += ["", f"Sample grids: `bench/digits/samples/{regime}_<method>.png` (first seed, "
                      f"one row per class 0–9).", ""]
    lines += [
        "## Does η = 15 bind in this model?", "",
        f"Recorded over a plain {MULTI_STEPS}-step CFG run, every cross-attention head and token: "
        f"‖O_s‖ median {diag['sparse_norm_median']:.2f} (99th pct {diag['sparse_norm_p99']:.2f}); "
        f"GAG's ‖g‖ with ζ=0 median {diag['g_zeta0_median']:.3f} (99th pct "
        f"{diag['g_zeta0_p99']:.3f}), with ζ=1 median {diag['g_zeta1_median']:.3f} (99th pct "
        f"{diag['g_zeta1_p99']:.3f}); share above η = 15: {diag['share_g_zeta0_above_15']:.4f} "
        f"(ζ=0), {diag['share_g_zeta1_above_15']:.4f} (ζ=1). Median c = ⟨Δ, O_s⟩/‖O_s‖² = "
        f"{diag['c_median']:.4f}, so GAG ζ=0 scales a typical sparse output by 1 + λc = "
        f"{1 + 10 * diag['c_median']:.3f}.", "",
        f"Regression check (tests/comfy/test_digits_regression.py): {REGRESSION['samples']} samples, "
        f"seed {REGRESSION['seed']}, {REGRESSION['steps']} steps, CFG 1: judge accuracy plain "
        f"{regression['accuracy']['plain']:.3f}, GAG paper {regression['accuracy']['gag']:.3f}.", "",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
