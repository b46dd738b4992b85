"""Shared set-up of the serving benchmarks: one vLLM engine (tiny model) and one gateway process."""

from __future__ import annotations

import base64
import io
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def png_url(size: int = 112, shade: int = 90) -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (shade, shade, shade))
    ImageDraw.Draw(img).ellipse((size // 4, size // 4, size // 2, size // 2), fill=(230, 230, 230))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def dicom_url() -> str:
    import pydicom.data

    return "data:application/dicom;base64," + base64.b64encode(Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()).decode()


def _wait(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s")


@contextmanager
def _affinity(cpus: set[int] | None):
    """Processes started inside inherit ``cpus`` (this process's own set is restored after)."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def engine_and_gateway(
    model_dir: Path | None = None,
    *,
    engine_threads: int = 1,
    gateway_args: list[str] | None = None,
    engine_cpus: set[int] | None = None,
    gateway_cpus: set[int] | None = None,
):
    """Yield (engine_url, gateway_url, api_key, gateway_pid, model_name).

    ``engine_cpus`` / ``gateway_cpus`` pin the engine's processes (API server, scheduler, worker: its OpenMP
    threads bound to the first of them) and the gateway's to those CPUs (Linux).
    """
    from core.tiny import ensure_tiny_model
    from serve.launcher import free_port

    model_dir = model_dir or ensure_tiny_model(Path.home() / ".cache" / "infimed-tests" / "models")
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(engine_threads), VLLM_CPU_KVCACHE_SPACE="1", VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1")
    engine_env = dict(env)
    if engine_cpus:
        engine_env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in sorted(engine_cpus)[:engine_threads])
    log = tempfile.NamedTemporaryFile(prefix="bench-engine-", suffix=".log", delete=False)
    with _affinity(engine_cpus):
        engine = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--served-model-name", "tiny",
         "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
         "--limit-mm-per-prompt", '{"image": 8, "video": 0}', "--disable-uvicorn-access-log"],
        env=engine_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    gw = None
    try:
        print(f"starting the engine (log {log.name})…", file=sys.stderr)
        _wait(f"http://127.0.0.1:{port}/v1/models", engine, 900, "engine")
        key = "imk_bench_" + secrets.token_hex(8)
        ready = Path(tempfile.mkdtemp()) / "ready"
        with _affinity(gateway_cpus):
            gw = subprocess.Popen(
                [sys.executable, "-m", "infimed", "--log-level", "WARNING", "serve", "--engine-url", f"http://127.0.0.1:{port}",
                 "--model", str(model_dir), "--port", "0", "--ready-file", str(ready), "--no-ui", *(gateway_args or [])],
                env=dict(env, INFIMED_API_KEY=key, INFIMED_RATE_LIMIT_PER_MINUTE="0"), start_new_session=True,
            )  # fmt: skip
        t0 = time.monotonic()
        while not (ready.exists() and ready.read_text().strip()):
            if gw.poll() is not None or time.monotonic() - t0 > 60:
                raise RuntimeError("gateway did not start")
            time.sleep(0.2)
        url = ready.read_text().strip()
        _wait(url + "/ready", gw, 60, "gateway")
        yield f"http://127.0.0.1:{port}", url, key, gw.pid, "tiny"
    finally:
        for p in (gw, engine):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
