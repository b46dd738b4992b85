"""Killing the engine: chat gets 503 and /ready says not ready; the supervisor restarts it and service
recovers. Runs last in the session (see tests/conftest.py), so it cannot disturb other tests."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.engine_kill, pytest.mark.slow]


def _engine_pid(gateway_pid: int) -> int:
    for child in psutil.Process(gateway_pid).children(recursive=True):
        try:
            if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
                return child.pid
        except psutil.NoSuchProcess:
            continue
    raise AssertionError("no vLLM engine process under the gateway")


def test_engine_kill_gives_503_then_recovers(gateway):
    headers = {"Authorization": f"Bearer {gateway.api_key}"}
    body = {"model": gateway.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    http = httpx.Client(base_url=gateway.root, headers=headers, timeout=30)
    assert http.post("/v1/chat/completions", json=body).status_code == 200

    pid = _engine_pid(gateway.proc.pid)
    os.killpg(os.getpgid(pid), signal.SIGKILL)

    saw_503 = saw_not_ready = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (saw_503 and saw_not_ready):
        r = http.post("/v1/chat/completions", json=body)
        if r.status_code == 503:
            assert r.json()["error"]["type"] == "service_unavailable"
            saw_503 = True
        saw_not_ready |= http.get("/ready").status_code == 503
        time.sleep(0.2)
    assert saw_503 and saw_not_ready
    assert http.get("/health").status_code == 200  # the gateway itself stays alive

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and http.get("/ready").status_code != 200:
        time.sleep(1)
    assert http.get("/ready").status_code == 200, "the engine was not restarted"
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    assert _engine_pid(gateway.proc.pid) != pid
