"""The gateway app: the only public door to the engines.

Routes (ARCHITECTURE.md): ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``,
``/v1/infimed/render`` and ``/metrics`` need a bearer key; ``/health``, ``/ready``, ``/version``,
``/openapi.json`` and ``/docs`` are open. Nothing else reaches vLLM.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import generate_latest
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.budget import PixelBudget
from serve.auth import KeyStore, RateLimiter
from serve.engines import EngineRouter
from serve.errors import APIError
from serve.images import ImageRewriter
from serve.metrics import GatewayMetrics
from serve.protocol import ChatCompletionRequest, CompletionRequest, RenderRequest, parse
from serve.settings import GatewaySettings

log = logging.getLogger("infimed.access")
_RID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


@dataclass
class Gateway:
    """Runtime state shared by the routes (one per app)."""

    settings: GatewaySettings
    router: EngineRouter
    keys: KeyStore
    limiter: RateLimiter
    metrics: GatewayMetrics
    rewriter: ImageRewriter
    http: httpx.AsyncClient
    slots: asyncio.Semaphore
    waiting: int = 0
    version: str = "0"


def _version() -> str:
    from infimed import __version__

    return __version__


async def require_key(request: Request) -> str:
    """The caller's key id; 401 without a valid bearer key, 429 past the key's rate limit."""
    gw: Gateway = request.app.state.gateway
    settings = gw.settings
    if settings.auth_disabled:
        request.state.key_id = "k_noauth"
        return "k_noauth"
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
    key_id = gw.keys.verify(token.strip())
    if key_id is None:
        raise APIError(401, "invalid or revoked API key", code="invalid_api_key")
    request.state.key_id = key_id
    ok, wait = gw.limiter.allow(key_id)
    if not ok:
        err = APIError(429, f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded for this key", code="rate_limit_exceeded")
        err.retry_after = wait  # type: ignore[attr-defined]
        raise err
    return key_id


Key = Annotated[str, Depends(require_key)]


def create_app(settings: GatewaySettings, *, budget: PixelBudget, engine_urls: list[str] | None = None,
               router: EngineRouter | None = None) -> FastAPI:  # fmt: skip
    """Build the FastAPI app. ``engine_urls`` (or ``router``) say where vLLM listens (loopback)."""
    # Idle connections expire after 2 s, before the engine's server closes them (uvicorn: 5 s, also the probe
    # interval): a request or probe never goes out on a connection being closed under it.
    http = httpx.AsyncClient(timeout=httpx.Timeout(settings.request_timeout, connect=5.0), limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=2.0))
    router = router or EngineRouter(engine_urls or settings.engine_urls, client=http)
    gw = Gateway(
        settings=settings,
        router=router,
        keys=KeyStore(settings.api_keys_file, settings.api_key),
        limiter=RateLimiter(settings.rate_limit_per_minute),
        metrics=GatewayMetrics(),
        rewriter=ImageRewriter(budget, max_images=settings.max_images, max_image_bytes=settings.max_image_bytes,
                               max_image_pixels=settings.max_image_pixels, workers=settings.render_workers,
                               cache_size=settings.render_cache_size, allowed_domains=settings.allowed_image_domains,
                               fetch_timeout=settings.remote_fetch_timeout, policy=settings.burned_in_policy),  # fmt: skip
        http=http,
        slots=asyncio.Semaphore(settings.max_concurrency),
        version=_version(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await gw.router.refresh()
        gw.router.start()
        yield
        await gw.router.stop()
        gw.rewriter.close()
        await gw.http.aclose()

    app = FastAPI(
        title="InfiMed gateway",
        version=gw.version,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.gateway = gw

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type", "X-Request-Id"])

    # ------------------------------------------------------------------ errors
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        gw.metrics.errors.labels(type=exc.code or exc.type).inc()
        headers = {"X-Request-Id": request.state.request_id} if hasattr(request.state, "request_id") else None
        if exc.status == 429 and getattr(exc, "retry_after", None):
            headers = (headers or {}) | {"Retry-After": str(int(exc.retry_after) + 1)}  # type: ignore[attr-defined]
        return exc.response(headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(x) for x in err["loc"] if x != "body") or None
        return await _api_error(request, APIError(400, f"{loc}: {err['msg']}" if loc else err["msg"], param=loc, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return await _api_error(request, APIError(exc.status_code, msg, code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error (request %s)", getattr(request.state, "request_id", "-"))
        return await _api_error(request, APIError(500, "internal error in the gateway; the request id is in the X-Request-Id header", code="internal_error"))

    # ------------------------------------------------------------------ middleware: request id, body limit, access log, metrics
    class Observe:
        """Request id, body-size guard, metrics and the access-log line, as plain ASGI.

        Plain ASGI rather than ``BaseHTTPMiddleware``: no extra task and memory stream per request,
        and streamed bodies pass straight through. The log line is written when the response has
        been sent (for a stream, at its end), so ``ms`` is the whole request.
        """

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            rid = headers.get(b"x-request-id", b"").decode("latin-1")
            if not rid or len(rid) > 128 or not set(rid) <= _RID_OK:
                rid = uuid.uuid4().hex
            state = scope.setdefault("state", {})
            state.update(request_id=rid, key_id="-", model="-", images=0, usage=None)
            path = scope["path"]
            route = _route_label(path)
            t0 = time.perf_counter()
            status = 500
            streaming = False
            rid_header = (b"x-request-id", rid.encode("latin-1"))

            async def send_with_id(message: dict[str, Any]) -> None:
                nonlocal status, streaming
                if message["type"] == "http.response.start":
                    status = message["status"]
                    out = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                    streaming = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in out)
                    message = {**message, "headers": [*out, rid_header]}
                await send(message)

            length = headers.get(b"content-length", b"").decode("latin-1")
            limit = body_limit(path)
            try:
                if length.isdigit() and int(length) > limit:
                    err = APIError(413, f"request body is {length} bytes, over this route's limit of {limit}", code="body_too_large")
                    await (await _api_error(Request(scope), err))(scope, receive, send_with_id)
                else:
                    await self.app(scope, receive, send_with_id)
            finally:
                dt = time.perf_counter() - t0
                gw.metrics.requests.labels(route=route, status=str(status)).inc()
                if not streaming:
                    gw.metrics.latency.labels(route=route).observe(dt)
                # One structured line per request: identifiers we generate and counts only — never content.
                if route not in ("/health", "/ready"):
                    usage = state.get("usage") or {}
                    log.info(json.dumps({"request_id": rid, "route": route, "method": scope["method"], "status": status,
                                         "key_id": state.get("key_id"), "model": state.get("model"), "ms": round(dt * 1000, 1),
                                         "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
                                         "images": state.get("images")}))  # fmt: skip

    app.add_middleware(Observe)

    # ------------------------------------------------------------------ dependencies

    def body_limit(path: str) -> int:
        """Per-route body limits: image-carrying routes get the large one, text routes the small one."""
        return settings.max_body_bytes if path in ("/v1/chat/completions", "/v1/infimed/render") else settings.max_text_body_bytes

    async def read_json(request: Request) -> Any:
        body = b""
        limit = body_limit(request.url.path)
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise APIError(413, f"request body is over this route's limit of {limit} bytes", code="body_too_large")
        if not body:
            raise APIError(400, "empty request body; send a JSON object", code="invalid_body")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON ({type(e).__name__})", code="invalid_json") from None

    async def acquire_slot():
        """A concurrency slot, waiting briefly in a short queue; 429 past it. Returns its release function."""
        if gw.slots.locked():
            if gw.waiting >= settings.queue_size:
                raise APIError(429, "the server is at capacity; retry shortly", code="server_busy")
            gw.waiting += 1
            gw.metrics.queued.set(gw.waiting)
            try:
                await asyncio.wait_for(gw.slots.acquire(), timeout=settings.queue_timeout)
            except TimeoutError:
                raise APIError(429, "the server is at capacity; retry shortly", code="server_busy") from None
            finally:
                gw.waiting -= 1
                gw.metrics.queued.set(gw.waiting)
        else:
            await gw.slots.acquire()
        gw.metrics.in_flight.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                gw.metrics.in_flight.dec()
                gw.slots.release()

        return release

    @asynccontextmanager
    async def slot():
        release = await acquire_slot()
        try:
            yield
        finally:
            release()

    def engine_for(model: str):
        engine = gw.router.pick(model)
        if engine is None:
            if not gw.router.ready:
                raise APIError(503, "the model engine is not available (starting or restarting); retry shortly", code="engine_unavailable")
            raise APIError(404, f"the model {model!r} does not exist; available: {', '.join(gw.router.model_names())}", param="model", code="model_not_found")
        return engine

    def cap_tokens(body: dict[str, Any]) -> None:
        for k in ("max_tokens", "max_completion_tokens"):
            if body.get(k) is not None and body[k] > settings.max_tokens_cap:
                raise APIError(400, f"{k} is {body[k]}, over this server's cap of {settings.max_tokens_cap}", param=k, code="max_tokens_too_large")

    # ------------------------------------------------------------------ routes: open
    @app.get("/health", tags=["probes"])
    async def health() -> dict[str, str]:
        """Liveness: the gateway process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["probes"])
    async def ready() -> JSONResponse:
        """Readiness: at least one engine answers and serves a model."""
        ok = gw.router.ready
        gw.metrics.engine_up.set(sum(1 for e in gw.router.engines if e.healthy))
        body = {"status": "ready" if ok else "not ready", "engines": [{"healthy": e.healthy, "models": e.models} for e in gw.router.engines]}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/version", tags=["probes"])
    async def version() -> dict[str, Any]:
        return {"infimed": gw.version, "models": gw.router.model_names()}

    # ------------------------------------------------------------------ routes: keyed
    @app.get("/metrics", tags=["observability"], response_class=PlainTextResponse)
    async def metrics(_: Key, engine: bool = False) -> Response:
        """Gateway metrics (Prometheus text); ``?engine=true`` returns the engine's own metrics."""
        if engine:
            e = gw.router.any_engine()
            if e is None:
                raise APIError(503, "no engine reachable", code="engine_unavailable")
            r = await gw.http.get(f"{e.url}/metrics", timeout=5.0)
            return Response(r.content, media_type=r.headers.get("content-type", "text/plain"))
        return Response(generate_latest(gw.metrics.registry), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", tags=["openai"])
    async def models(_: Key) -> dict[str, Any]:
        now = int(time.time())
        return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "infimed"} for m in gw.router.model_names()]}

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(request: Request, _: Key) -> Response:
        body = await read_json(request)
        req = parse(ChatCompletionRequest, body)
        request.state.model = req.model
        cap_tokens(body)
        engine = engine_for(req.model)
        release = await acquire_slot()  # held until the answer (or the last streamed chunk) is out
        try:
            rewritten = await gw.rewriter.rewrite(body)
            request.state.images = rewritten.images
            if rewritten.images:
                gw.metrics.images.inc(rewritten.images)
                gw.metrics.render_seconds.observe(rewritten.render_seconds)
            if rewritten.dicom_parts:
                gw.metrics.dicom_parts.inc(rewritten.dicom_parts)
            return await forward(request, engine, "/v1/chat/completions", rewritten.body, stream=bool(req.stream),
                                 records=rewritten.records, release=release)  # fmt: skip
        except BaseException:
            release()
            raise

    @app.post("/v1/completions", tags=["openai"])
    async def completions(request: Request, _: Key) -> Response:
        body = await read_json(request)
        req = parse(CompletionRequest, body)
        request.state.model = req.model
        cap_tokens(body)
        engine = engine_for(req.model)
        release = await acquire_slot()
        try:
            return await forward(request, engine, "/v1/completions", body, stream=bool(req.stream), records=[], release=release)
        except BaseException:
            release()
            raise

    @app.post("/v1/infimed/render", tags=["infimed"])
    async def render_preview(request: Request, _: Key) -> dict[str, Any]:
        """What the model sees: the rendered images (PNG data URLs) and render records for the given parts."""
        body = await read_json(request)
        req = parse(RenderRequest, body)
        async with slot():
            res = await gw.rewriter.rewrite({"messages": [{"role": "user", "content": req.content}]})
        images = [p["image_url"]["url"] for p in res.body["messages"][0]["content"] if p.get("type") == "image_url"]
        if not req.include_images:
            images = []
        else:
            images = [_as_png(u) for u in images]
        return {"object": "infimed.render", "images": images, "records": res.records}

    # ------------------------------------------------------------------ forwarding
    async def forward(request: Request, engine, path: str, body: dict[str, Any], *, stream: bool, records: list[dict[str, Any]],
                      release) -> Response:  # fmt: skip
        """Send to the engine. ``release`` frees the concurrency slot: at once for a JSON answer, at the
        end of the stream for SSE (the caller releases it if this raises)."""
        rid = request.state.request_id
        headers = {"Content-Type": "application/json", "X-Request-Id": rid}
        upstream = gw.http.build_request("POST", f"{engine.url}{path}", content=json.dumps(body).encode(), headers=headers)
        engine.in_flight += 1
        t0 = time.perf_counter()
        try:
            resp = await gw.http.send(upstream, stream=True)
        except httpx.HTTPError as e:
            engine.in_flight -= 1
            engine.healthy = False
            raise APIError(503, f"the model engine did not answer ({type(e).__name__}); retry shortly", code="engine_unavailable") from None
        if resp.status_code != 200 or not stream:
            try:
                content = await resp.aread()
            finally:
                await resp.aclose()
                engine.in_flight -= 1
                release()
            return _relay_json(request, resp.status_code, content, records)

        done = False
        completed = False

        async def cleanup() -> None:
            """Idempotent: runs from the stream's end, or as the response's background task when the
            client left before the stream started (the generator then never runs its own finally)."""
            nonlocal done
            if done:
                return
            done = True
            if not completed:
                # Client went away (or upstream failed): closing the upstream stream makes vLLM abort the request.
                gw.metrics.cancellations.inc()
            await resp.aclose()
            engine.in_flight -= 1
            release()
            gw.metrics.latency.labels(route=_route_label(path)).observe(time.perf_counter() - t0)

        async def relay():
            nonlocal completed
            first = True
            try:
                async for chunk in resp.aiter_raw():
                    if first:
                        gw.metrics.ttft.observe(time.perf_counter() - t0)
                        first = False
                    if records and b"data: [DONE]" in chunk:
                        head, _, tail = chunk.partition(b"data: [DONE]")
                        ext = {"id": f"infimed-{rid}", "object": "chat.completion.chunk", "created": int(time.time()),
                               "model": request.state.model, "choices": [], "infimed": {"render_records": records}}  # fmt: skip
                        yield head + b"data: " + json.dumps(ext).encode() + b"\n\n" + b"data: [DONE]" + tail
                        continue
                    yield chunk
                completed = True
            except httpx.HTTPError:
                log.warning(json.dumps({"request_id": rid, "event": "upstream_stream_error"}))
            finally:
                await cleanup()

        return StreamingResponse(relay(), status_code=200, media_type="text/event-stream", background=BackgroundTask(cleanup),
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    def _relay_json(request: Request, status: int, content: bytes, records: list[dict[str, Any]]) -> Response:
        try:
            data = json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if status != 200:
            # Pass the engine's message through in our error shape.
            msg = None
            if isinstance(data, dict):
                err = data.get("error", data)
                msg = err.get("message") if isinstance(err, dict) else str(err)
                if isinstance(msg, str) and msg.startswith("[{"):  # vLLM's pydantic errors as text
                    msg = msg[:500]
            code_status = status if 400 <= status < 500 else 502
            raise APIError(code_status, msg or f"the engine answered HTTP {status}", code="engine_error" if code_status == 502 else "invalid_request")
        if isinstance(data, dict):
            request.state.usage = data.get("usage")
            if records:
                data["infimed"] = {"render_records": records}
            return JSONResponse(data)
        raise APIError(502, "the engine sent a response that is not JSON", code="engine_error")

    return app


def _as_png(url: str) -> str:
    """Preview images always as PNG data URLs (a forwarded original may be JPEG/WebP)."""
    if url.startswith("data:image/png"):
        return url
    from PIL import Image

    data = base64.b64decode(url.split(",", 1)[1])
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _route_label(path: str) -> str:
    known = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/infimed/render", "/metrics", "/health", "/ready", "/version")
    return path if path in known else ("/ui" if path.startswith("/ui") else "other")


_DESCRIPTION = """
OpenAI-compatible API of the InfiMed medical vision-language model.

**DICOM extension.** An image part may carry a DICOM file:
`{"type": "image_url", "image_url": {"url": "data:application/dicom;base64,…", "dicom": {"window": "lung", "frames": "uniform:8"}}}`.
`window` is a preset (`lung` −600/1500, `mediastinum` 50/350, `soft_tissue` 40/400, `bone` 400/1800, `brain` 40/80),
`"auto"` (the file's own window, else a percentile window) or `{"center": c, "width": w}` in HU;
`composite: "ct3"` puts three CT windows into R, G, B; `frames` selects frames of a multi-frame file or slices of a
series (`"auto"`, `"uniform:N"` or a list of indices). Several parts with the same SeriesInstanceUID form one series,
sorted along the slice normal. The gateway decodes, windows, de-identifies and renders each image to the model's pixel
budget; responses carry `infimed.render_records` saying exactly what the model saw.
"""
