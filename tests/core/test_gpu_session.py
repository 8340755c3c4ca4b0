"""bench/gpu_session.py, the one command of the first GPU session: its steps run in their own
processes, a failure or timeout does not stop the next step, the budget and a missing ComfyUI
are reported as such, and summary.md says all of it. Real subprocesses; the GPU steps in their
CPU-sized (--smoke) form."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "gpu_session.py"
_SPEC = importlib.util.spec_from_file_location("bench_gpu_session", _PATH)
gpu_session = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = gpu_session
_SPEC.loader.exec_module(gpu_session)


def _rows(out: Path) -> dict:
    """{step: (status, log)} from summary.md's table."""
    rows = {}
    for line in (out / "summary.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("step", "---"):
            rows[cells[0]] = (cells[1], cells[3])
    return rows


def test_the_validation_step_runs_and_is_summarised(tmp_path):
    assert gpu_session.main(["--smoke", "--steps", "validate", "--out", str(tmp_path)]) == 0
    assert _rows(tmp_path) == {"validate": ("passed", "validate.log")}
    log = (tmp_path / "validate.log").read_text()
    assert log.startswith("$ ") and "validate_kernel.py --interpret" in log
    assert "all 1 cases passed" in log
    summary = (tmp_path / "summary.md").read_text()
    assert "# GPU session (smoke, CPU)" in summary and "- python " in summary


def test_failures_timeouts_budget_and_missing_comfyui_are_each_reported(tmp_path, monkeypatch):
    Step = gpu_session.Step
    steps = (Step("fails", (), ("-c", "raise SystemExit(3)"), 60),
             Step("comfy", (), ("-c", "pass"), 60, needs_comfyui=True),
             Step("passes", (), ("-c", "print('fine')"), 60),
             Step("hangs", (), ("-c", "import time; time.sleep(60)"), 6),
             Step("late", (), ("-c", "pass"), 60))
    monkeypatch.setattr(gpu_session, "STEPS", steps)
    monkeypatch.setattr(gpu_session, "comfyui_reason", lambda: "ComfyUI not found (here)")
    # 60 s of budget, and no step starts with under 54.5 s left: "fails" and "passes" take a
    # fraction of a second, "hangs" is stopped after its 6 s, which leaves too little for "late".
    monkeypatch.setattr(gpu_session, "_MIN_STEP_SECONDS", 54.5)
    rc = gpu_session.main(["--smoke", "--out", str(tmp_path), "--budget", "60",
                           "--steps", "fails,comfy,passes,hangs,late"])
    assert rc == 1
    rows = _rows(tmp_path)
    assert rows["fails"] == ("failed (exit 3)", "fails.log")
    assert rows["hangs"] == ("timed out after 6 s", "hangs.log")
    assert rows["comfy"] == ("not run: ComfyUI not found (here)", "—")
    assert rows["passes"][0] == "passed" and "fine" in (tmp_path / "passes.log").read_text()
    assert rows["late"][0].startswith("not run: ") and "budget left" in rows["late"][0]


def test_without_a_gpu_only_smoke_runs_and_unknown_steps_are_refused(tmp_path, capsys):
    import torch
    if not torch.cuda.is_available():
        assert gpu_session.main(["--out", str(tmp_path)]) == 2
        assert "--smoke" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_session.main(["--smoke", "--steps", "validate,bogus"])
    assert "unknown or empty ['bogus']" in capsys.readouterr().err
