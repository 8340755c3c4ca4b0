"""Fixed λ against target gain on the digits UNet and the digits DiT, two regimes, several seeds.

    python bench/digits/target_gain_study.py --model unet     # UNet (cross-attention)
    python bench/digits/target_gain_study.py --model dit      # DiT, text and joint mode
    python bench/digits/target_gain_study.py --report         # results_target_gain.md from both

For each model and regime (4 steps CFG 1; 20 steps CFG 3, as evaluate.py) it samples a
class-balanced batch per seed through ComfyUI's sampler with GAG installed by the pack's API
(η 15, ζ 0, α 1.5, layers "paper" on the UNet, "all" on the DiT), once per fixed λ and once per
target gain (GAG Model Patch's target_gain), reads the readout of each run and scores the samples
with the judge (accuracy ↑, FD to the held-out digits ↓), as evaluate.py does. The unpatched model
is the "no GAG" row.

Each --model run writes its rows to bench/digits/target_gain_<model>.json; --report reads both
and writes bench/results_target_gain.md with the verdict the issue asks for: does one target gain
land within noise of the best fixed λ in every (model, mode, regime) cell, where no single fixed
λ does? "Within noise": the mean differs from the best row's mean by at most the two rows'
spreads combined (√(sd₁² + sd₂²), sample sd over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_model as digits  # noqa: E402
import evaluate  # noqa: E402

HERE = Path(__file__).resolve().parent
REPORT = digits.REPO_ROOT / "bench" / "results_target_gain.md"

FIXED = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
TARGETS = (1.1, 1.3, 1.6, 2.0, 2.5)
MODES = {"unet": ("text",), "dit": ("text", "joint")}
LAYERS = {"unet": "paper", "dit": "all"}


def _floats(text: str) -> list[float]:
    return [float(s) for s in text.split(",") if s.strip()]


def run_model(args) -> None:
    torch.set_num_threads(args.threads)
    started = time.time()
    pack = evaluate.import_pack()
    import importlib
    readout = importlib.import_module(pack.__name__ + ".nodes.gain_readout")
    dit = args.model == "dit"
    generator = evaluate.Generator(pack, digits.DIT_WEIGHTS if dit else digits.UNET_WEIGHTS,
                                   dit=dit)
    judge = digits.load_judge()
    real_stats = evaluate.held_out_stats(judge)
    seeds = list(range(args.seeds))
    regimes = [("few", f"{evaluate.FEW_STEPS} steps, CFG 1", evaluate.FEW_STEPS, 1.0,
                args.samples),
               ("multi", f"{evaluate.MULTI_STEPS} steps, CFG {evaluate.MULTI_CFG:g}",
                evaluate.MULTI_STEPS, evaluate.MULTI_CFG, args.multi_samples)]
    out = {"model": args.model, "seeds": seeds, "command": " ".join(sys.argv[1:]),
           "torch": torch.__version__, "regimes": {}}
    for regime, title, steps, cfg, samples in regimes:
        labels = digits.balanced_labels(samples)
        configs = [("none", "no GAG", None)]
        for mode in MODES[args.model]:
            base = dict(eta=15.0, zeta=0.0, layers=LAYERS[args.model], mode=mode)
            configs += [(mode, f"λ {s:g}", dict(base, scale=s)) for s in _floats(args.fixed)]
            configs += [(mode, f"target ×{t:g}", dict(base, target_gain=t))
                        for t in _floats(args.targets)]
        rows = []
        for mode, name, gag in configs:
            key = f"tg_{args.model}_{regime}_{mode}_{name}"
            method = evaluate.Method(name, key, cfg, gag)
            model = generator.model_for(method)
            accs, fds, runs = evaluate.score_seeds(
                generator, method, model, labels, seeds=seeds, steps=steps, judge=judge,
                real_stats=real_stats, readout=readout)
            medians = [run.overall.median if run else 1.0 for run in runs]
            scales = [run.target.scale_median for run in runs
                      if run is not None and run.target is not None]
            row = dict(mode=mode, name=name, kind="none" if gag is None else
                       ("target" if "target_gain" in gag else "fixed"),
                       value=0.0 if gag is None else gag.get("target_gain", gag.get("scale")),
                       acc=accs, fd=fds, gain=sum(medians) / len(medians),
                       lam=sum(scales) / len(scales) if scales else None)
            rows.append(row)
            print(f"[{time.time() - started:5.0f}s] {args.model} {regime:5s} {mode:5s} "
                  f"{name:12s} gain ×{row['gain']:.2f}"
                  + (f" (λ {row['lam']:.2f})" if row["lam"] is not None else "")
                  + f"  acc {evaluate.fmt(accs, 3)}  FD {evaluate.fmt(fds, 1)}", flush=True)
        out["regimes"][regime] = dict(title=f"{title} ({samples} samples per seed)", rows=rows)
    out["minutes"] = round((time.time() - started) / 60, 1)
    (HERE / f"target_gain_{args.model}.json").write_text(json.dumps(out, indent=1) + "\n")


# --- the report --------------------------------------------------------------------------------

def _ms(values):
    return digits.mean_and_spread(values)


def within_noise(row, best, metric) -> bool:
    (m1, s1), (m2, s2) = _ms(row[metric]), _ms(best[metric])
    return abs(m1 - m2) <= math.hypot(s1, s2) + 1e-12


def cells(data: dict) -> list[tuple[str, str, str, list]]:
    """(model, mode, regime, rows incl. the no-GAG row) for every cell."""
    out = []
    for model, d in data.items():
        for regime, r in d["regimes"].items():
            modes = sorted({row["mode"] for row in r["rows"] if row["mode"] != "none"})
            for mode in modes:
                rows = [row for row in r["rows"] if row["mode"] in ("none", mode)]
                out.append((model, mode, regime, rows))
    return out


def report(path: Path = REPORT) -> str:
    data = {}
    for model in ("unet", "dit"):
        file = HERE / f"target_gain_{model}.json"
        if file.is_file():
            data[model] = json.loads(file.read_text())
    lines = ["# Target gain against fixed λ on the digits UNet and the digits DiT", "",
             "Commands: " + "; ".join(
                 f"`python bench/digits/target_gain_study.py {d['command']}` ({d['minutes']} min"
                 f", 1 CPU thread, shared 2-core machine, torch {d['torch']})"
                 for d in data.values()) + ", then `--report`.",
             "",
             "Models: the digits UNet (bench/results_digits.md; GAG on layers \"paper\", its "
             "cross-attention) and the digits DiT (ComfyUI's FLUX class at tiny size, "
             "bench/digits/train_dit.py; GAG on all 4 blocks, text mode = image queries → class "
             "tokens, joint mode = the whole joint attention). Judge, FD and sampler as in "
             "evaluate.py; GAG η 15, ζ 0, α 1.5. Class-balanced samples, seeds "
             f"{next(iter(data.values()))['seeds'] if data else []}; accuracy and FD: mean ± "
             "sample sd over seeds. Gain: the readout's median gain (mean over seeds); λ: the "
             "median λ target-gain mode chose. Fewer samples than results_digits.md (CPU "
             "budget), so FD's floor is higher; compare rows within a table. Bold: the best "
             "row; † within noise of it (|Δmean| ≤ √(sd₁² + sd₂²)).", ""]
    verdict_rows = []
    by_setting: dict = {}
    for model, mode, regime, rows in cells(data):
        title = data[model]["regimes"][regime]["title"]
        label = f"{'UNet' if model == 'unet' else 'DiT'}" + (
            f" {mode} mode" if model == "dit" else "")
        lines += [f"## {label}, {title}", "",
                  "| setting | median gain | λ | judge accuracy ↑ | FD ↓ |", "|---|---|---|---|---|"]
        best = {"acc": max(rows, key=lambda r: _ms(r["acc"])[0]),
                "fd": min(rows, key=lambda r: _ms(r["fd"])[0])}
        guided = [r for r in rows if r["kind"] != "none"]
        best_guided = {"acc": max(guided, key=lambda r: _ms(r["acc"])[0]),
                       "fd": min(guided, key=lambda r: _ms(r["fd"])[0])}
        for r in rows:
            cols = []
            for metric, digits_after in (("acc", 3), ("fd", 1)):
                text = evaluate.fmt(r[metric], digits_after)
                if r is best[metric]:
                    text = f"**{text}**"
                elif within_noise(r, best[metric], metric):
                    text += " †"
                cols.append(text)
            lam = "—" if r["kind"] == "none" else (f"{r['lam']:.2f}" if r["lam"] is not None
                                                   else f"{r['value']:g}")
            lines.append(f"| {r['name']} | ×{r['gain']:.2f} | {lam} | {cols[0]} | {cols[1]} |")
        lines.append("")
        cell = f"{label}, {regime}"
        for metric in ("acc", "fd"):
            for r in guided:
                key = (r["kind"], r["value"], metric)
                by_setting.setdefault(key, []).append(
                    (cell, within_noise(r, best_guided[metric], metric)))
        verdict_rows.append((cell, best, best_guided))
    # The verdict.
    lines += ["## Verdict", "",
              "Per cell, the best guided setting (fixed λ or target) by accuracy and by FD, and "
              "whether no GAG beats every guided setting:", "",
              "| cell | best accuracy (guided) | best FD (guided) | best FD overall |",
              "|---|---|---|---|"]
    for cell, best, best_guided in verdict_rows:
        lines.append(f"| {cell} | {best_guided['acc']['name']} "
                     f"({evaluate.fmt(best_guided['acc']['acc'], 3)}) | "
                     f"{best_guided['fd']['name']} ({evaluate.fmt(best_guided['fd']['fd'], 1)})"
                     f" | {best['fd']['name']} ({evaluate.fmt(best['fd']['fd'], 1)}) |")
    lines += ["", "In how many cells each setting is within noise of the best guided setting "
              "(of the cells it ran in):", "",
              "| setting | cells | accuracy | FD | both |", "|---|---|---|---|---|"]
    settings = sorted({(k[0], k[1]) for k in by_setting}, key=lambda k: (k[0] != "fixed", k[1]))
    for kind, value in settings:
        acc = by_setting[(kind, value, "acc")]
        fd = by_setting[(kind, value, "fd")]
        both = sum(a[1] and f[1] for a, f in zip(acc, fd))
        name = f"λ {value:g}" if kind == "fixed" else f"target ×{value:g}"
        lines.append(f"| {name} | {len(acc)} | {sum(ok for _, ok in acc)} | "
                     f"{sum(ok for _, ok in fd)} | {both} |")
    lines += ["", "The λ target-gain mode chose for each target (median over the run's calls, "
              "mean over seeds), per cell: the same target is a different λ on each model and "
              "mode.", "", "| target | " + " | ".join(c for c, _, _ in verdict_rows) + " |",
              "|---|" + "---|" * len(verdict_rows)]
    targets = sorted({k[1] for k in by_setting if k[0] == "target"})
    for value in targets:
        cols = []
        for model, mode, regime, rows in cells(data):
            row = next((r for r in rows if r["kind"] == "target" and r["value"] == value), None)
            cols.append("—" if row is None or row["lam"] is None else f"{row['lam']:.2f}")
        lines.append(f"| ×{value:g} | " + " | ".join(cols) + " |")
    lines.append("")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("unet", "dit"))
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--multi-samples", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fixed", default=None, help="comma-separated λ values")
    parser.add_argument("--targets", default=",".join(f"{t:g}" for t in TARGETS))
    args = parser.parse_args(argv)
    if args.model:
        if args.fixed is None:
            args.fixed = ",".join(f"{s:g}" for s in FIXED)
        run_model(args)
    if args.report:
        print(report())
    if not args.model and not args.report:
        parser.error("give --model unet|dit, --report, or both")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
