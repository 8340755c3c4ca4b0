"""Everything the first GPU session must run, as one command that fits the device tool's limits.

    python bench/gpu_session.py                   # every step that fits in --budget seconds
    python bench/gpu_session.py --steps unet,dit  # the step benchmarks alone (need ComfyUI)
    python bench/gpu_session.py --smoke           # the same plumbing on CPU, CI-sized

Steps, most important first (``STEPS``):

* ``tests``: the core tests that change on a GPU (the GPU policy's TF32 case, the kernel under
  torch.compile with inductor, dispatch and self-check, the kernels compiled ahead of time);
* ``validate``: ``bench/validate_kernel.py``: the fused kernel and the GPU policy against the
  float64 reference on the GPU, the self-check's decisions, then every path's measured time per
  shape next to the cost model's estimate;
* ``unet``, ``dit``: ``bench/bench_unet.py`` and ``bench/bench_dit.py``, a full SDXL and FLUX
  step with and without GAG. They import ComfyUI (``$COMFYUI_PATH``, bench/comfy_env.py) and
  are reported as not run where there is none.

Each step runs in its own process under its own timeout (cut to what is left of ``--budget``);
a step that fails or times out does not stop the next. Each step's output goes to
``<out>/<step>.log`` and a table of what ran, how long and how it ended to ``<out>/summary.md``
(at most five files: the device tool brings back eight). ``<out>`` is ``--out``, else ``$OUT``
(the device tool's folder), else ``bench/gpu_session_out``. Exit status 0 when every step that
ran passed, 1 otherwise. The tables go into bench/RESULTS.md by hand, with device and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "bench"))


@dataclass(frozen=True)
class Step:
    name: str
    gpu: tuple              # argv after the Python interpreter, on a GPU
    smoke: tuple            # the same step's CPU-sized variant
    timeout: int            # seconds on a GPU (an H100 or H200)
    needs_comfyui: bool = False


_GPU_TESTS = ("tests/core/test_gpu_policy.py", "tests/core/test_compile.py",
              "tests/core/test_kernel_dispatch.py", "tests/core/test_kernel_selfcheck.py",
              "tests/core/test_kernel_compile.py")

STEPS = (
    Step("tests", ("-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *_GPU_TESTS),
         ("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/core/test_kernel_dispatch.py"),
         150),
    Step("validate", ("bench/validate_kernel.py",),
         ("bench/validate_kernel.py", "--interpret", "--no-timing", "--cases", "short-float16-alpha1.5"),
         200),
    Step("unet", ("bench/bench_unet.py",), ("bench/bench_unet.py", "--smoke"), 240,
         needs_comfyui=True),
    Step("dit", ("bench/bench_dit.py",), ("bench/bench_dit.py", "--smoke"), 300,
         needs_comfyui=True),
)
# Below this many seconds of budget a step is not started (it could not finish usefully).
_MIN_STEP_SECONDS = 20


def out_folder(explicit: Optional[str]) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    return REPO_ROOT / "bench" / "gpu_session_out"


def environment_lines() -> list:
    """Python, torch, Triton and the device, for the summary's header."""
    import torch
    lines = [f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
             f"- python {platform.python_version()}, torch {torch.__version__}"]
    try:
        import triton
        lines.append(f"- triton {triton.__version__}")
    except Exception as exc:  # noqa: BLE001 (any import failure is worth a line)
        lines.append(f"- triton: not importable ({type(exc).__name__})")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"- device: {props.name}, compute capability {props.major}.{props.minor}, "
                     f"{props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
    else:
        lines.append("- device: no CUDA GPU")
    return lines


def comfyui_reason() -> Optional[str]:
    """None where bench/comfy_env.py finds a ComfyUI checkout, else why a step cannot run."""
    import comfy_env
    try:
        comfy_env.comfyui_path()
    except SystemExit as exc:
        return str(exc)
    return None


def run_step(step: Step, smoke: bool, seconds: float, log: Path) -> tuple:
    """(status, seconds taken) of one step, its output in ``log``."""
    argv = [sys.executable, *(step.smoke if smoke else step.gpu)]
    start = time.monotonic()
    with log.open("w") as handle:
        handle.write("$ " + " ".join(argv) + "\n")
        handle.flush()
        try:
            proc = subprocess.run(argv, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=seconds, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            status = "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {seconds:.0f} s"
    return status, time.monotonic() - start


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join(step.name for step in STEPS),
                        help="comma-separated steps, run in the order of STEPS")
    parser.add_argument("--budget", type=float, default=540.0,
                        help="seconds for all steps together (default 540: a 600-s device call)")
    parser.add_argument("--out", default=None, help="folder for the logs and summary.md")
    parser.add_argument("--smoke", action="store_true", help="CPU-sized variants of the steps")
    args = parser.parse_args(argv)
    known = {step.name for step in STEPS}
    asked = [name.strip() for name in args.steps.split(",") if name.strip()]
    unknown = sorted(set(asked) - known)
    if unknown or not asked:
        parser.error(f"--steps: unknown or empty {unknown or asked}; choose from "
                     f"{', '.join(step.name for step in STEPS)}")
    import torch
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_session.py: no CUDA GPU here; --smoke runs the CPU-sized variants",
              file=sys.stderr)
        return 2
    out = out_folder(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    rows, failed = [], False
    for step in (s for s in STEPS if s.name in asked):
        left = deadline - time.monotonic()
        reason = comfyui_reason() if step.needs_comfyui else None
        log = None
        if reason is not None:
            status, seconds = f"not run: {reason}", 0.0
        elif left < _MIN_STEP_SECONDS:
            status, seconds = f"not run: {max(left, 0):.0f} s of the budget left", 0.0
        else:
            log = out / f"{step.name}.log"
            status, seconds = run_step(step, args.smoke, min(step.timeout, left), log)
            failed |= status != "passed"
        rows.append((step.name, status, seconds, log.name if log else "—"))
        print(f"{step.name}: {status} ({seconds:.0f} s)", flush=True)
    summary = ["# GPU session" + (" (smoke, CPU)" if args.smoke else ""), "",
               *environment_lines(), "", "| step | status | seconds | log |",
               "| --- | --- | --- | --- |"]
    summary += [f"| {name} | {status} | {seconds:.0f} | {log} |"
                for name, status, seconds, log in rows]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    print(f"summary: {out / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
