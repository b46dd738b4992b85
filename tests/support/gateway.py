"""Start the real product — `infimed serve` (gateway + supervised vLLM engine + UI) — for tests.

One process group per gateway (``start_new_session=True``), OS-assigned ports (``--port 0`` and a ready
file), and a stop that SIGINTs the group (the gateway stops its engine) then SIGKILLs what is left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class GatewayHandle:
    root: str  # http://127.0.0.1:PORT
    api_key: str
    model: str
    lora: str | None
    log_path: Path
    engine_log: Path
    ui_password: str
    proc: subprocess.Popen
    model_dir: Path
    adapter_dir: Path | None
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def client(self, **kw):
        import openai

        kw = {"base_url": self.base_url, "api_key": self.api_key, "max_retries": 0, "timeout": 120} | kw
        return openai.OpenAI(**kw)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"`infimed serve` exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"gateway not ready after {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")


def stop_group(proc: subprocess.Popen) -> None:
    """SIGINT the gateway's group (it stops its engine), then SIGKILL whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def launch_gateway(
    d: Path,
    model_dir: Path,
    *,
    served_name: str,
    lora: tuple[str, Path] | None = None,
    engine_args: tuple[str, ...] = ("--max-model-len", "2048"),
) -> Iterator[GatewayHandle]:
    """`infimed serve --model MODEL_DIR [--lora NAME=PATH]` on OS-assigned ports; stopped on exit."""
    d.mkdir(parents=True, exist_ok=True)
    ready = d / "ready.txt"
    log_path = d / "gateway.log"
    engine_log = d / "engine.log"
    key = "imk_test_" + secrets.token_urlsafe(16)
    ui_password = secrets.token_urlsafe(12)
    env = dict(os.environ, INFIMED_API_KEY=key, INFIMED_UI_PASSWORD=ui_password, INFIMED_LOG_LEVEL="INFO",
               INFIMED_UI_DATA_DIR=str(d / "ui-data"),
               OMP_NUM_THREADS=os.environ.get("INFIMED_ENGINE_THREADS", "2"))  # fmt: skip
    cmd = [
        sys.executable, "-m", "infimed", "serve",
        "--model", str(model_dir), "--served-model-name", served_name,
        "--port", "0", "--ready-file", str(ready), "--engine-log", str(engine_log), "--max-images", "8",
    ]  # fmt: skip
    if lora is not None:
        cmd += ["--lora", f"{lora[0]}={lora[1]}"]
    cmd += ["--", *engine_args]
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.monotonic()
        while not ready.exists() or not ready.read_text().strip():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"`infimed serve` exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}\n{engine_log.read_text()[-4000:] if engine_log.exists() else ''}"
                )
            if time.monotonic() - t0 > 900:
                raise RuntimeError(f"`infimed serve` not ready after 900 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        root = ready.read_text().strip()
        wait_ready(root, proc, 120, log_path)
        yield GatewayHandle(root=root, api_key=key, model=served_name, lora=lora[0] if lora else None,
                            log_path=log_path, engine_log=engine_log, ui_password=ui_password, proc=proc,
                            model_dir=model_dir, adapter_dir=lora[1] if lora else None)  # fmt: skip
    finally:
        stop_group(proc)
