"""Start a real ComfyUI server in a subprocess for end-to-end tests, and always stop it.

The server runs from the ComfyUI checkout tests/conftest.py finds, in a fresh temporary base
directory (its own models/, custom_nodes/, user/, input/, output/, temp/), with this pack copied
into ``<base>/custom_nodes/comfyui-gag`` the way a user's ``git clone`` would place it, plus any
extra test-only custom-node folders. Nothing outside the temporary directory is written, and the
server process (with anything it spawned) is killed when the context ends, the test fails, or the
Python process exits or dies (Linux parent-death signal). The server runs one torch thread by
default: the tests' tiny models are 10-100x slower with OpenMP threads on a busy shared CPU.

Use it as a context manager::

    from tests.comfy.comfy_server import running_server
    with running_server(extra_custom_nodes=[TEST_NODE_PACK], frontend=True) as server:
        info = server.get_json("/object_info/GAGModelPatch")
        history = server.run_prompt(api_prompt)        # POST /prompt, wait on /history

or share one server between test modules with a session-scoped fixture (start-up costs
~8 s on two CPU cores, most of it importing ComfyUI)::

    @pytest.fixture(scope="session")
    def comfy_server():
        with shared_server(extra_custom_nodes=[TEST_NODE_PACK]) as server:
            yield server

``shared_server`` hands every caller with the same arguments the same running server and stops it
when the last caller leaves, so fixtures in several modules (each session-scoped) start it once.
Tests skip when no ComfyUI checkout is found.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_FOLDER_NAME = "comfyui-gag"  # the folder name a `git clone` of the repository produces
TEST_NODE_PACK = Path(__file__).resolve().parent / "test_node_pack"

# Files a user's clone would not carry, or that only tests and tools create.
_COPY_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache",
                                      ".hypothesis", ".ci", "*.egg-info")


class ServerError(RuntimeError):
    """The server failed to start, answered with an error, or a prompt failed; the message
    carries the reason and the end of the server log."""


class PromptError(ServerError):
    """A prompt was rejected by /prompt or failed while executing."""

    def __init__(self, message: str, details: Any = None):
        super().__init__(message)
        self.details = details


@dataclass
class ServerInfo:
    """A running ComfyUI server.

    url:       base URL, e.g. ``http://127.0.0.1:8188`` (no trailing slash)
    base_dir:  the server's --base-directory (models/, custom_nodes/, output/, … live here)
    log_path:  its stdout+stderr
    pack_dir:  where this pack sits inside base_dir/custom_nodes (None when not installed)
    pid:       the server process id
    """
    url: str
    base_dir: Path
    log_path: Path
    pack_dir: Optional[Path]
    pid: int
    _process: subprocess.Popen = field(repr=False, default=None)

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- HTTP -----------------------------------------------------------------------------
    def request(self, method: str, path: str, payload: Any = None,
                timeout: float = 30.0) -> tuple[int, bytes]:
        """(status, body) of one request; HTTP errors are returned, not raised."""
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_bytes(self, path: str, timeout: float = 30.0) -> bytes:
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerError(f"GET {path} answered {status}: {body[:500]!r}")
        return body

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        return json.loads(self.get_bytes(path, timeout))

    def post_json(self, path: str, payload: Any, timeout: float = 30.0) -> Any:
        status, body = self.request("POST", path, payload, timeout)
        if status != 200:
            raise ServerError(f"POST {path} answered {status}: {body[:2000]!r}")
        return json.loads(body) if body else None

    # --- prompts --------------------------------------------------------------------------
    def queue_prompt(self, prompt: dict, client_id: str = "gag-tests") -> str:
        """POST an API-format prompt; returns its prompt_id. A rejected prompt raises
        PromptError whose ``details`` holds the server's error and node_errors."""
        status, body = self.request("POST", "/prompt",
                                    {"prompt": prompt, "client_id": client_id})
        try:
            answer = json.loads(body)
        except ValueError:
            answer = body.decode(errors="replace")
        if status != 200:
            raise PromptError(f"/prompt rejected the prompt ({status}): "
                              f"{json.dumps(answer, indent=1)[:3000]}", answer)
        return answer["prompt_id"]

    def wait_for_history(self, prompt_id: str, timeout: float = 120.0) -> dict:
        """The /history entry of a finished prompt; PromptError when it failed, ServerError
        on timeout or when the server died meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                if entry["status"].get("status_str") == "error":
                    messages = [m for m in entry["status"].get("messages", [])
                                if m and m[0] == "execution_error"]
                    raise PromptError(f"prompt {prompt_id} failed: "
                                      f"{json.dumps(messages, indent=1)[:4000]}", entry)
                return entry
            if not self.is_running():
                raise ServerError(f"the server exited while running prompt {prompt_id}\n"
                                  f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerError(f"prompt {prompt_id} not finished after {timeout:.0f} s\n"
                                  f"{self.log_tail()}")
            time.sleep(0.1)

    def run_prompt(self, prompt: dict, timeout: float = 120.0) -> dict:
        """Queue ``prompt`` and wait for it; returns its /history entry."""
        return self.wait_for_history(self.queue_prompt(prompt), timeout)

    def output_files(self, history_entry: dict, node_id: str, kind: str = "images") -> list[Path]:
        """Paths of the files a node wrote, from a /history entry: ``kind`` "images" for
        SaveImage/PreviewImage, "latents" for SaveLatent."""
        images = history_entry.get("outputs", {}).get(str(node_id), {}).get(kind, [])
        root = {"output": self.output_dir, "temp": self.base_dir / "temp",
                "input": self.base_dir / "input"}
        return [root[img["type"]] / img.get("subfolder", "") / img["filename"] for img in images]


def find_comfyui() -> Path:
    """The ComfyUI checkout the test suite uses; skips the calling test when there is none."""
    if str(REPO_ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import COMFYUI_PATH, SKIP_NO_COMFY  # the one place that decides where it is
    if COMFYUI_PATH is None:
        import pytest
        pytest.skip(SKIP_NO_COMFY)
    return Path(COMFYUI_PATH)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git_visible_files(source: Path) -> Optional[list[str]]:
    """Files a clone of ``source`` would hold (tracked, plus new files git does not ignore),
    or None when ``source`` is not a git work tree."""
    if not (source / ".git").exists() or shutil.which("git") is None:
        return None
    listed = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=False)
    if listed.returncode != 0:
        return None
    return [f for f in listed.stdout.decode().split("\0") if f and (source / f).is_file()]


def install_pack_copy(custom_nodes_dir: Path, source: Path = REPO_ROOT,
                      name: str = PACK_FOLDER_NAME) -> Path:
    """Copy the pack into custom_nodes the way a clone would have it: the files git tracks or
    would track (nothing .gitignore excludes, no .git); without git, everything but caches."""
    target = custom_nodes_dir / name
    files = _git_visible_files(source)
    if files is None:
        shutil.copytree(source, target, ignore=_COPY_IGNORE, symlinks=False)
        return target
    for relative in files:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, destination)
    return target


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM the server when the test process dies
    without cleaning up (killed, crashed), so no server outlives a test run."""
    if sys.platform.startswith("linux"):
        import ctypes
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


_LIVE_PROCESSES: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def _stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
    # Children that outlived the leader are still in its group (it was a session leader).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with _LIVE_LOCK:
        _LIVE_PROCESSES.discard(process)


@atexit.register
def _stop_all_at_exit() -> None:
    for process in list(_LIVE_PROCESSES):
        _stop_process(process, grace=3.0)


def _wait_ready(info: ServerInfo, timeout: float) -> None:
    # main.py only starts listening after every node (core, extras, custom) is loaded, so the
    # first answer means /object_info is complete.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not info.is_running():
            raise ServerError(f"ComfyUI exited during start-up (code {info._process.returncode})"
                              f"\n{info.log_tail()}")
        with contextlib.suppress(OSError):
            status, _ = info.request("GET", "/system_stats", timeout=2.0)
            if status == 200:
                return
        time.sleep(0.1)
    raise ServerError(f"ComfyUI did not answer within {timeout:.0f} s\n{info.log_tail()}")


@contextlib.contextmanager
def running_server(extra_custom_nodes: Sequence[os.PathLike | str] = (), *,
                   install_pack: bool = True, frontend: bool = True,
                   extra_args: Sequence[str] = (), startup_timeout: float = 120.0,
                   keep_base_dir: bool = False, comfyui_path: Optional[Path] = None,
                   threads: Optional[int] = 1) -> Iterator[ServerInfo]:
    """Run a ComfyUI server for the duration of the ``with`` block.

    extra_custom_nodes: folders (custom node packs) linked into custom_nodes beside this pack,
        e.g. ``TEST_NODE_PACK``; each keeps its folder name. They are symlinks, so a test pack
        can import helpers that sit next to it in the repository.
    install_pack: place this pack in custom_nodes (False: a bare ComfyUI, to compare against).
    frontend: serve ComfyUI's web front end (needed for browser tests); False points
        --front-end-root at an empty folder, which is all an API-only test needs.
    extra_args: more main.py arguments.
    keep_base_dir: leave the temporary base directory (log, outputs) behind for debugging;
        also on when the environment variable GAG_KEEP_SERVER_DIR is set.
    threads: torch/OpenMP threads of the server (OMP_NUM_THREADS); None keeps the default.
        1 suits the tiny models of the tests.

    Yields a ServerInfo. The server is stopped, and the base directory removed, on exit from
    the block however it is left.
    """
    comfyui = Path(comfyui_path) if comfyui_path else find_comfyui()
    base_dir = Path(tempfile.mkdtemp(prefix="gag-comfy-"))
    keep = keep_base_dir or bool(os.environ.get("GAG_KEEP_SERVER_DIR"))
    process = None
    try:
        custom_nodes = base_dir / "custom_nodes"
        custom_nodes.mkdir()
        pack_dir = install_pack_copy(custom_nodes) if install_pack else None
        for folder in extra_custom_nodes:
            folder = Path(folder)
            (custom_nodes / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
        port = free_port()
        args = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                "--disable-auto-launch", "--base-directory", str(base_dir),
                "--database-url", "sqlite:///:memory:", "--disable-api-nodes",
                "--preview-method", "none"]
        if not frontend:
            empty = base_dir / "no_frontend"
            empty.mkdir()
            args += ["--front-end-root", str(empty)]
        args += list(extra_args)
        log_path = base_dir / "server.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        if threads:
            # Tiny test models gain nothing from intra-op threads, and on a shared CPU
            # OpenMP's waiting threads make each op 10-100x slower (measured: 4 tiny-SDXL steps
            # 23 s with 2 threads under load vs 0.26 s with 1).
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(args, cwd=comfyui, stdout=log_file,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True,
                                       preexec_fn=_die_with_parent)
        with _LIVE_LOCK:
            _LIVE_PROCESSES.add(process)
        info = ServerInfo(url=f"http://127.0.0.1:{port}", base_dir=base_dir, log_path=log_path,
                          pack_dir=pack_dir, pid=process.pid, _process=process)
        _wait_ready(info, startup_timeout)
        yield info
    finally:
        if process is not None:
            _stop_process(process)
        if not keep:
            shutil.rmtree(base_dir, ignore_errors=True)


_SHARED: dict[tuple, list] = {}  # key → [ServerInfo, users, ExitStack]
_SHARED_LOCK = threading.Lock()


@contextlib.contextmanager
def shared_server(extra_custom_nodes: Iterable[os.PathLike | str] = (), *, frontend: bool = True,
                  ) -> Iterator[ServerInfo]:
    """Like running_server, but callers with the same arguments share one server; it stops
    when the last of them leaves. Meant for session-scoped fixtures in several test modules."""
    key = (tuple(str(Path(p).resolve()) for p in extra_custom_nodes), frontend)
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None:
            stack = contextlib.ExitStack()
            info = stack.enter_context(running_server(list(extra_custom_nodes),
                                                      frontend=frontend))
            entry = _SHARED[key] = [info, 0, stack]
        entry[1] += 1
    try:
        yield entry[0]
    finally:
        with _SHARED_LOCK:
            entry[1] -= 1
            if entry[1] == 0:
                del _SHARED[key]
                entry[2].close()
