"""A small in-process OpenAI-compatible server for tests and demos (FastAPI + uvicorn in a thread).

It answers ``POST /v1/chat/completions`` with whatever a ``responder(body) -> str`` returns, and
``GET /v1/models`` with the configured model ids. ``fail_first`` scripts failures: the first requests
get those HTTP statuses (e.g. ``[429, 500]``) before the responder is used, which is how the client's
retries are tested. The port is assigned by the OS.

Example::

    with FakeOpenAIServer(lambda body: "yes") as srv:
        client = OpenAIClient(srv.base_url, "k")
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

Responder = Callable[[dict[str, Any]], str]


class FakeOpenAIServer:
    """Context manager running the fake server on ``127.0.0.1:<free port>``; ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        responder: Responder,
        *,
        models: list[str] | None = None,
        owned_by: str = "fake",
        fail_first: list[int] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.responder = responder
        self.model_ids = models or ["fake-model"]
        self.owned_by = owned_by
        self.fail_first = list(fail_first or [])
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []  # bodies of chat requests that reached the responder
        self.statuses: list[int] = []  # status of every chat request, in arrival order
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _app(self) -> Any:
        app = FastAPI()

        def unauthorised(request: Request) -> JSONResponse | None:
            if self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}":
                return None
            return JSONResponse({"error": {"message": "bad key", "type": "auth", "param": None, "code": 401}}, 401)

        @app.get("/v1/models")
        def models(request: Request) -> Any:
            denied = unauthorised(request)
            if denied is not None:
                return denied
            data = [{"id": m, "object": "model", "created": 0, "owned_by": self.owned_by} for m in self.model_ids]
            return {"object": "list", "data": data}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            denied = unauthorised(request)
            if denied is not None:
                return denied
            body = await request.json()
            with self._lock:
                status = self.fail_first.pop(0) if self.fail_first else 200
                self.statuses.append(status)
            if status != 200:
                err = {"error": {"message": f"scripted {status}", "type": "fake", "param": None, "code": status}}
                return JSONResponse(err, status_code=status, headers={"retry-after": "0"})
            with self._lock:
                self.requests.append(body)
            # In a worker thread: a slow responder must not block the event loop (requests overlap).
            text = await run_in_threadpool(self.responder, body)
            return {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", self.model_ids[0]),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": max(1, len(text.split())), "total_tokens": 2},
            }

        return app

    def __enter__(self) -> FakeOpenAIServer:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
