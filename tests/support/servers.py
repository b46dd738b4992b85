"""In-process HTTP servers for tests: a uvicorn thread on an OS-assigned loopback port, and a fake
OpenAI-compatible engine that records what the gateway forwards (for tests that need no real vLLM)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


class ServerThread:
    def __init__(self, app, **config):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> ServerThread:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if time.monotonic() - t0 > 20:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        scheme = "https" if self.server.config.ssl_certfile else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def fake_engine(name: str = "m", *, bodies: list | None = None, delay: float = 0.0, hits: list | None = None) -> FastAPI:
    """An engine answering ``/v1/models`` and ``/v1/chat/completions`` (after ``delay`` seconds)."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.body()
        if bodies is not None:
            bodies.append(body)
        if hits is not None:
            hits.append(name)
        if json.loads(body or b"{}").get("stream"):

            async def sse():
                for i in range(1000):
                    yield f'data: {{"id": "c", "object": "chat.completion.chunk", "choices": [{{"index": 0, "delta": {{"content": "t{i} "}}}}]}}\n\n'
                    await asyncio.sleep(0.01)
                yield "data: [DONE]\n\n"

            return StreamingResponse(sse(), media_type="text/event-stream")
        if delay:
            await asyncio.sleep(delay)
        return JSONResponse({"id": "chatcmpl-" + request.headers.get("x-request-id", "x"), "object": "chat.completion", "created": 0,
                             "model": name, "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})  # fmt: skip

    return app
