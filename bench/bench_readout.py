"""What the strength readout costs: one guided attention call with and without its gain sample,
and a whole sampling run of the digits model with the readout on and off, side by side.

    python bench/bench_readout.py            # CPU, ~1 min
    python bench/bench_readout.py --device cuda

The attention shapes are SDXL's cross-attention at 1024² (first and second transformer levels)
and FLUX's text-mode retrieval at 1024² (image queries → 512 text keys). Times are medians of
--repeats calls, interleaved (plain, with readout, plain, …) so drift hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from gag_core import gag_attention  # noqa: E402
from gag_core.readout import READOUT_QUERIES, attention_gain  # noqa: E402

SHAPES = {  # name: (B, H, Lq, Lk, D)
    "SDXL cross 1024², level 1 (Lq 4096, Lk 77)": (2, 10, 4096, 77, 64),
    "SDXL cross 1024², level 2 (Lq 1024, Lk 77)": (2, 20, 1024, 77, 64),
    "FLUX text mode 1024² (Lq 4096, Lk 512)": (1, 24, 4096, 512, 128),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_op(fn, device, repeats):
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def attention_costs(device, dtype, repeats, shapes):
    rows = []
    for name, (b, h, lq, lk, d) in shapes.items():
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(b, h, n, d, generator=g).to(device, dtype) for n in (lq, lk, lk))
        guided = lambda: gag_attention(q, k, v, backend="torch")
        gain = lambda: attention_gain(q, k, v, scale=10.0, eta=15.0, zeta=0.0, alpha=1.5)
        guided(), gain()  # warm-up
        t_guided, t_gain = [], []
        for _ in range(repeats):
            t_guided.append(time_op(guided, device, 1))
            t_gain.append(time_op(gain, device, 1))
        rows.append((name, statistics.median(t_guided), statistics.median(t_gain)))
    return rows


def sampling_cost(repeats):
    """Seconds per 20-step CFG-3 run of the digits model (200 samples), readout off and on."""
    sys.path.insert(0, str(REPO_ROOT / "bench" / "digits"))
    import digits_model as digits
    import evaluate
    pack = evaluate.import_pack()
    generator = evaluate.Generator(pack)
    labels = digits.balanced_labels(200)
    models = {flag: pack.nodes.api.apply_gag(generator.patcher, scale=3.0, readout=flag)
              for flag in (False, True)}
    method = evaluate.Method("GAG", "gag", evaluate.MULTI_CFG, {})
    times = {False: [], True: []}
    outputs = {}
    for _ in range(repeats):
        for flag in (False, True):
            t0 = time.perf_counter()
            outputs[flag] = generator.sample(method, labels, seed=0, steps=evaluate.MULTI_STEPS,
                                             model=models[flag])
            times[flag].append(time.perf_counter() - t0)
    identical = torch.equal(outputs[False], outputs[True])
    return statistics.median(times[False]), statistics.median(times[True]), identical


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-sampling", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    print(f"device {device}, {dtype}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{READOUT_QUERIES} sampled query rows per call")
    print("| attention call | guided (PyTorch path) | gain sample | ratio |")
    print("|---|---|---|---|")
    for name, t_guided, t_gain in attention_costs(device, dtype, args.repeats, SHAPES):
        print(f"| {name} | {t_guided * 1e3:.1f} ms | {t_gain * 1e3:.2f} ms | "
              f"{t_gain / t_guided * 100:.1f}% |")
    if not args.skip_sampling and device.type == "cpu":
        off, on, identical = sampling_cost(max(3, args.repeats // 2))
        print(f"\ndigits model, 20 steps CFG 3, 200 samples, GAG λ 3: readout off {off:.2f} s, "
              f"on {on:.2f} s ({(on / off - 1) * 100:+.1f}%), samples bit-identical: {identical}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
