"""Relate GAG's strength readout (the median attention gain) to sample quality on the digits model.

    python bench/digits/readout_study.py                       # ~15 min on 2 busy CPU cores
    python bench/digits/readout_study.py --samples 200 --seeds 1 --scales 3,10   # a quick look

For each λ in --scales (4 steps CFG 1) and --multi-scales (20 steps CFG 3, ten times the cost per
sample, hence fewer λ and --multi-samples), the two regimes of evaluate.py, samples a
class-balanced batch per seed through ComfyUI's sampler with GAG (η 15, ζ 0, layers "paper")
installed by the pack's API, reads the readout of that run (nodes/gain_readout.py: median and 95th
percentile of the gain 1 + λ·min(1, η/‖g‖)·c over heads and tokens, share of tokens where the
cap binds) and scores the samples with the judge (accuracy ↑, FD to held-out real digits ↓), as
evaluate.py does. The unpatched model is the λ = 0 reference row (gain ×1 by definition).

Writes a markdown table (--out, default bench/results_readout.md). The rule taken from it is
nodes/gain_readout.py HINT_GAIN / GOOD_GAIN.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_model as digits  # noqa: E402
import evaluate  # noqa: E402

DEFAULT_SCALES = (0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 30.0)
DEFAULT_MULTI_SCALES = (1.0, 2.0, 3.0, 5.0, 10.0)


def _scales(text: str) -> list[float]:
    return [float(s) for s in text.split(",") if s.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scales", default=",".join(f"{s:g}" for s in DEFAULT_SCALES))
    parser.add_argument("--multi-samples", type=int, default=200)
    parser.add_argument("--multi-scales",
                        default=",".join(f"{s:g}" for s in DEFAULT_MULTI_SCALES))
    parser.add_argument("--out", type=Path,
                        default=digits.REPO_ROOT / "bench" / "results_readout.md")
    args = parser.parse_args(argv)
    for name in ("samples", "multi_samples"):
        count = getattr(args, name)
        if count < 10 or count % digits.NUM_CLASSES:
            parser.error(f"--{name.replace('_', '-')} must be a positive multiple of 10; got {count}")
    torch.set_num_threads(args.threads)
    started = time.time()

    pack = evaluate.import_pack()
    readout = importlib.import_module(pack.__name__ + ".nodes.gain_readout")
    generator = evaluate.Generator(pack)
    judge = digits.load_judge()
    real_stats = evaluate.held_out_stats(judge)
    seeds = list(range(args.seeds))

    regimes = [("few", f"{evaluate.FEW_STEPS} steps, CFG 1", evaluate.FEW_STEPS, 1.0,
                args.samples, _scales(args.scales)),
               ("multi", f"{evaluate.MULTI_STEPS} steps, CFG {evaluate.MULTI_CFG:g}",
                evaluate.MULTI_STEPS, evaluate.MULTI_CFG, args.multi_samples,
                _scales(args.multi_scales))]
    tables = {}
    for regime, title, steps, cfg, samples, scales in regimes:
        labels = digits.balanced_labels(samples)
        rows = []
        for scale in [0.0] + scales:
            gag = None if scale == 0 else dict(scale=scale, eta=15.0, zeta=0.0, layers="paper")
            method = evaluate.Method(f"λ {scale:g}", f"readout_{regime}_{scale:g}", cfg, gag)
            model = generator.model_for(method)
            accs, fds, runs = evaluate.score_seeds(
                generator, method, model, labels, seeds=seeds, steps=steps, judge=judge,
                real_stats=real_stats, readout=readout)
            medians = [run.overall.median if run else 1.0 for run in runs]
            p95s = [run.overall.p95 if run else 1.0 for run in runs]
            capped = [run.overall.capped if run else 0.0 for run in runs]
            row = dict(scale=scale, acc=accs, fd=fds, median=sum(medians) / len(medians),
                       p95=sum(p95s) / len(p95s), capped=sum(capped) / len(capped))
            rows.append(row)
            print(f"[{time.time() - started:5.0f}s] {regime:5s} λ {scale:5g}  gain ×"
                  f"{row['median']:.2f} (p95 ×{row['p95']:.2f}, capped {row['capped']:.3f})  "
                  f"acc {evaluate.fmt(accs, 3)}  FD {evaluate.fmt(fds, 1)}", flush=True)
        tables[regime] = (f"{title} ({samples} samples per seed)", rows)

    total = time.time() - started
    lines = [
        "# Digits: GAG's readout (median attention gain) against sample quality", "",
        f"Command: `python bench/digits/readout_study.py --samples {args.samples} --seeds "
        f"{args.seeds} --scales {args.scales} --multi-samples {args.multi_samples} "
        f"--multi-scales {args.multi_scales}` ({total / 60:.1f} min, {args.threads} CPU "
        f"thread(s) on a shared 2-core machine, torch {torch.__version__}). Model, judge and "
        f"sampler as in `bench/results_digits.md`; GAG η 15, ζ 0, α 1.5, layers \"paper\" "
        f"(input+output). Class-balanced samples, seeds {seeds}; "
        f"accuracy and FD: mean ± sample sd over seeds; gain figures: the readout of each run "
        f"(64 sampled query rows per call cover every token of this 8×8 latent), mean over seeds.",
        "",
    ]
    for regime, (title, rows) in tables.items():
        best_acc = max(rows, key=lambda r: sum(r["acc"]) / len(r["acc"]))
        best_fd = min(rows, key=lambda r: sum(r["fd"]) / len(r["fd"]))
        lines += [f"## {title}", "",
                  "| λ | median gain | p95 gain | cap active | judge accuracy ↑ | FD ↓ |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            acc, fd = evaluate.fmt(r["acc"], 3), evaluate.fmt(r["fd"], 1)
            if r is best_acc:
                acc = f"**{acc}**"
            if r is best_fd:
                fd = f"**{fd}**"
            name = "0 (no GAG)" if r["scale"] == 0 else f"{r['scale']:g}"
            lines.append(f"| {name} | ×{r['median']:.2f} | ×{r['p95']:.2f} | "
                         f"{r['capped'] * 100:.1f}% | {acc} | {fd} |")
        lines.append("")
    lines += [f"Hint rule in nodes/gain_readout.py: HINT_GAIN = ×{readout.HINT_GAIN:g}, "
              f"GOOD_GAIN = ×{readout.GOOD_GAIN[0]:g}–×{readout.GOOD_GAIN[1]:g}.", ""]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
