"""Backend selection for gag_attention: which path runs where, the GAG_BACKEND override, and
that gag_core works without Triton. No GPU needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import gag_core.kernels as kernels
from gag_core import gag_attention, normalize_mask
from gag_core.attention import _torch_path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _inputs(dtype=torch.float32, lq=8, lk=12, d=16, dv=16):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, lq, d, generator=gen).to(dtype)
    k = torch.randn(1, 2, lk, d, generator=gen).to(dtype)
    v = torch.randn(1, 2, lk, dv, generator=gen).to(dtype)
    return q, k, v


@pytest.fixture
def backend_env(monkeypatch):
    def set_env(value):
        if value is None:
            monkeypatch.delenv(kernels.ENV_VAR, raising=False)
        else:
            monkeypatch.setenv(kernels.ENV_VAR, value)
    set_env(None)
    return set_env


def test_cpu_calls_take_the_pytorch_path(backend_env):
    q, k, v = _inputs()
    assert kernels.select_backend(q, k, v, None, 1.5, _torch_path) is None
    auto = gag_attention(q, k, v, backend="auto")
    torch.testing.assert_close(auto, gag_attention(q, k, v, backend="torch"), rtol=0, atol=0)


@pytest.mark.parametrize("value", ["", "auto", "AUTO", " torch "])
def test_override_values_that_keep_cpu_on_torch(backend_env, value):
    backend_env(value)
    q, k, v = _inputs()
    assert kernels.select_backend(q, k, v, None, 1.5, _torch_path) is None


def test_override_fused_raises_with_the_reason(backend_env):
    backend_env("fused")
    q, k, v = _inputs()
    with pytest.raises(ValueError, match=r"GAG_BACKEND=fused.*CUDA.*cpu"):
        kernels.select_backend(q, k, v, None, 1.5, _torch_path)
    with pytest.raises(ValueError, match="GAG_BACKEND"):
        gag_attention(q, k, v)
    # backend="torch" never consults the selection, so the override cannot break it.
    assert torch.isfinite(gag_attention(q, k, v, backend="torch")).all()


def test_override_rejects_unknown_values(backend_env):
    backend_env("cuda")
    q, k, v = _inputs()
    with pytest.raises(ValueError, match=r"GAG_BACKEND must be one of auto, torch, fused.*'cuda'"):
        kernels.select_backend(q, k, v, None, 1.5, _torch_path)


def test_override_chooses_between_kernel_and_torch_where_the_kernel_applies(backend_env,
                                                                             monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed")
    from gag_core.kernels.triton_gag import fused_gag_attention
    # Pretend the inputs qualify (no CUDA device here) to check the override logic alone.
    monkeypatch.setattr(kernels, "fused_unavailable_reason", lambda *args: None)
    q, k, v = _inputs()
    # FUSED_BY_DEFAULT off: "auto" keeps the PyTorch path.
    monkeypatch.setattr(kernels, "FUSED_BY_DEFAULT", False)
    assert kernels.select_backend(q, k, v, None, 1.5, _torch_path) is None
    # On (the default): "auto" hands the call to the self-check (gag_core.kernels.selfcheck),
    # which runs the kernel only once it agreed and was faster on this device.
    monkeypatch.setattr(kernels, "FUSED_BY_DEFAULT", True)
    from gag_core.kernels.selfcheck import default_chooser
    assert kernels.select_backend(q, k, v, None, 1.5, _torch_path) == default_chooser(_torch_path).run
    # GAG_BACKEND=fused skips the check: the user's choice stands.
    backend_env("fused")
    assert kernels.select_backend(q, k, v, None, 1.5, _torch_path) is fused_gag_attention
    backend_env("torch")
    assert kernels.select_backend(q, k, v, None, 1.5, _torch_path) is None


class _RejectingFinder:
    """Makes ``import gag_core.kernels.triton_gag`` fail as a Triton that moved an API would."""

    def find_spec(self, name, path=None, target=None):
        if name.endswith("kernels.triton_gag"):
            raise AttributeError("module 'triton.language' has no attribute 'constexpr'")
        return None


def test_a_kernel_module_that_does_not_load_keeps_the_pytorch_path(backend_env, monkeypatch):
    # Inputs the kernel would take (pretended: no CUDA here), a kernel module that fails to
    # import: auto must run the PyTorch path and say why, GAG_BACKEND=fused must say why.
    from gag_core.kernels import selfcheck
    monkeypatch.setattr(kernels, "fused_unavailable_reason", lambda *args: None)
    monkeypatch.setattr(kernels, "FUSED_BY_DEFAULT", True)
    monkeypatch.setattr(selfcheck, "_default", None)
    for name in [n for n in sys.modules if n.endswith("kernels.triton_gag")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_RejectingFinder(), *sys.meta_path])
    q, k, v = _inputs()
    out = gag_attention(q, k, v)
    torch.testing.assert_close(out, gag_attention(q, k, v, backend="torch"), rtol=0, atol=0)
    [decision] = selfcheck.decisions()
    assert decision.backend == "torch"
    assert "the kernel failed (AttributeError: module 'triton.language'" in decision.reason
    backend_env("fused")
    with pytest.raises(ValueError, match=r"GAG_BACKEND=fused, but the fused GAG kernel does not "
                                         r"load with this Triton and PyTorch \(AttributeError"):
        gag_attention(q, k, v)


def test_a_gpu_call_the_kernel_cannot_take_is_said_once_with_its_reason(backend_env,
                                                                       monkeypatch, caplog):
    # "meta" (where the cost model traces, so normally silent) stands for a GPU without the
    # kernel here (no Triton, say); CPU calls say nothing.
    from gag_core.kernels import selfcheck
    monkeypatch.setattr(selfcheck, "_declines", {})
    monkeypatch.setattr(kernels, "_NEVER_FUSED_DEVICES", ("cpu",))
    reason = "triton cannot be imported (ImportError: No module named 'triton')"
    monkeypatch.setattr(kernels, "fused_unavailable_reason", lambda *args: reason)
    q, k, v = (t.to("meta") for t in _inputs(torch.float16))
    with caplog.at_level("INFO", logger="gag"):
        for _ in range(3):
            assert kernels.select_backend(q, k, v, None, 1.5, _torch_path) is None
    assert selfcheck.declined() == [("meta", reason)]
    said = [r.getMessage() for r in caplog.records if reason in r.getMessage()]
    assert said == [f"GAG attention on meta: PyTorch path — the fused kernel cannot take these "
                    f"calls: {reason}"]
    assert said[0] in selfcheck.backend_summary().splitlines()
    # Calls that say nothing, each with a reason not seen yet: a CPU call, a call traced on
    # meta by the cost model, and any call under GAG_BACKEND=torch (the user's choice).
    monkeypatch.setattr(kernels, "fused_unavailable_reason", lambda *args: "another reason")
    kernels.select_backend(*_inputs(), None, 1.5, _torch_path)
    monkeypatch.setattr(kernels, "_NEVER_FUSED_DEVICES", ("cpu", "meta"))
    kernels.select_backend(q, k, v, None, 1.5, _torch_path)
    monkeypatch.setattr(kernels, "_NEVER_FUSED_DEVICES", ("cpu",))
    backend_env("torch")
    kernels.select_backend(q, k, v, None, 1.5, _torch_path)
    assert selfcheck.declined() == [("meta", reason)]
    backend_env(None)                                 # the check itself: now it would be said
    kernels.select_backend(q, k, v, None, 1.5, _torch_path)
    assert selfcheck.declined() == [("meta", reason), ("meta", "another reason")]


@pytest.mark.parametrize("case, expected", [
    ("float64", "dtype torch.float64"),
    ("mixed", "different dtypes"),
    ("head_dim", "exceed"),
    ("no_keys", "no keys"),
    ("int_mask", "neither bool nor floating"),
    ("grad", "no backward"),
    ("cpu", "CUDA"),
])
def test_reasons_the_kernel_declines(case, expected):
    q, k, v = _inputs()
    mask = None
    if case == "float64":
        q, k, v = q.double(), k.double(), v.double()
    elif case == "mixed":
        v = v.half()
    elif case == "head_dim":
        q, k, v = _inputs(d=320, dv=16)
    elif case == "no_keys":
        k, v = k[:, :, :0], v[:, :, :0]
    elif case == "grad":
        q.requires_grad_(True)
    elif case == "int_mask":
        mask = normalize_mask(torch.ones(8, 12, dtype=torch.int32), 1, 2, 8, 12)
    reason = kernels.fused_unavailable_reason(q, k, v, mask, 1.5)
    assert reason is not None and expected in reason


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_gag_core_does_not_import_triton():
    # Importing (and running on CPU) must not pay for, or depend on, triton.
    proc = _run_python("""
        import sys, torch
        import gag_core
        gag_core.gag_attention(torch.randn(1, 1, 4, 8), torch.randn(1, 1, 5, 8),
                               torch.randn(1, 1, 5, 8))
        assert "triton" not in sys.modules, "gag_core imported triton"
    """)
    assert proc.returncode == 0, proc.stderr


def test_gag_core_works_where_triton_is_absent():
    proc = _run_python("""
        import sys, torch

        class NoTriton:
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ImportError("triton blocked for this test")
                return None

        sys.meta_path.insert(0, NoTriton())
        import gag_core
        from gag_core import kernels
        from gag_core.attention import _torch_path
        q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
        out = gag_core.gag_attention(q, k, v)
        assert out.shape == (1, 2, 4, 8) and torch.isfinite(out).all()
        assert kernels.triton_available() is False
        assert kernels.select_backend(q, k, v, None, 1.5, _torch_path) is None
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_kernel_config_picks_the_path_by_key_count():
    from gag_core.kernels.config import SHORT_MAX_KEYS, kernel_config
    assert kernel_config(1024, 77, 64, 64, torch.float16).path == "short"
    assert kernel_config(1024, SHORT_MAX_KEYS, 64, 64, torch.float16).path == "short"
    assert kernel_config(4608, SHORT_MAX_KEYS + 1, 128, 128, torch.bfloat16).path == "stream"
    # Random-score rows at Lk = 4608 list up to ~1200 candidates at α = 1.5.
    assert kernel_config(4608, 4608, 128, 128, torch.bfloat16).list_cap >= 1200
    with pytest.raises(ValueError, match="Lk <= 256"):
        kernel_config(16, 300, 64, 64, torch.float16, path="short")
    with pytest.raises(ValueError, match="path must be"):
        kernel_config(16, 30, 64, 64, torch.float16, path="fast")


def test_fused_operator_has_a_shape_only_fake_and_survives_a_second_import():
    pytest.importorskip("triton", reason="triton is not installed")
    import importlib.util

    from torch.fx.experimental.proxy_tensor import make_fx

    import gag_core
    from gag_core.kernels import triton_gag
    # ComfyUI imports the pack as its own package while tests import gag_core: the second copy
    # of the package must reuse the registered operator instead of failing to register it again.
    package_dir = Path(gag_core.__file__).parent
    spec = importlib.util.spec_from_file_location("second_copy_of_gag_core",
                                                  package_dir / "__init__.py",
                                                  submodule_search_locations=[str(package_dir)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    try:
        spec.loader.exec_module(package)
        second = importlib.import_module(f"{spec.name}.kernels.triton_gag")
        assert second is not triton_gag
    finally:
        for name in [n for n in sys.modules if n.startswith(spec.name)]:
            del sys.modules[name]
    q, k, v = _inputs(torch.bfloat16, lq=8, lk=12, d=16, dv=24)
    for module in (triton_gag, second):
        graph = make_fx(lambda q, k, v: module.fused_gag_attention(
            q, k, v, scale=10.0, eta=15.0, zeta=0.0, alpha=1.5), tracing_mode="fake")(q, k, v)
        calls = [n for n in graph.graph.nodes if n.op == "call_function"]
        assert [n.target for n in calls] == [torch.ops.gag_core.fused_gag_attention.default]
        fake_out = calls[0].meta["val"]
        assert fake_out.shape == (1, 2, 8, 24) and fake_out.dtype == torch.bfloat16


@pytest.mark.parametrize("props, expected", [
    (dict(name="Tesla T4", capability=(7, 5), hip=False, shared_memory=64 * 1024),
     "compute capability 7.5; the fused kernel needs 8.0"),
    (dict(name="AMD Instinct MI300X", capability=(9, 4), hip=True, shared_memory=64 * 1024),
     "ROCm/HIP"),
    (dict(name="tiny", capability=(8, 6), hip=False, shared_memory=16 * 1024),
     "KiB of shared memory per block"),
])
def test_gpus_the_kernel_refuses_say_why(props, expected):
    reason = kernels.device_unsupported_reason(**props, shape=(4464, 4608, 128, 128),
                                               dtype=torch.bfloat16)
    assert reason is not None and expected in reason and props["name"] in reason


def test_consumer_gpus_get_tiles_within_their_shared_memory():
    from gag_core.kernels.config import kernel_config, shared_memory_bytes
    limit = 99 * 1024  # sm_86 / sm_89 / sm_120 opt-in maximum per block
    # The D = 256 short tile needs ~139 KB: fine on an H100, streamed on a 99 KiB part.
    h100 = kernel_config(1024, 256, 256, 256, torch.float16, shared_memory_limit=227 * 1024)
    assert h100.path == "short" and shared_memory_bytes(h100, torch.float16) == 139264
    rtx = kernel_config(1024, 256, 256, 256, torch.float16, shared_memory_limit=limit)
    assert rtx.path == "stream" and shared_memory_bytes(rtx, torch.float16) <= limit
    for args in [(1024, 77, 64, 64, torch.float16), (4608, 4608, 128, 128, torch.bfloat16),
                 (4096, 512, 256, 256, torch.bfloat16), (1024, 77, 64, 64, torch.float32)]:
        config = kernel_config(*args, shared_memory_limit=limit)
        assert shared_memory_bytes(config, args[-1]) <= limit
    assert kernels.device_unsupported_reason(name="RTX 4090", capability=(8, 9), hip=False,
                                             shared_memory=limit, shape=(1024, 256, 256, 256),
                                             dtype=torch.float16) is None
