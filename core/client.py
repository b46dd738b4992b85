"""The one OpenAI-compatible client wrapper: bounded concurrency, retries with backoff, an on-disk cache.

Used by the evaluation harness and curation's judge scorer against any OpenAI-compatible endpoint
(our gateway, a raw vLLM server, a hosted API). It wraps the official ``openai`` package with its own
retries switched off, so a 429 is visible here and retried with our backoff (``Retry-After`` honoured).

Example::

    from core.client import OpenAIClient, ChatRequest, image_part

    client = OpenAIClient("http://localhost:8000/v1", "sk-…", concurrency=4, cache_dir="runs/cache")
    msg = [{"role": "user", "content": [image_part("xray.png"), {"type": "text", "text": "Normal?"}]}]
    answer = client.chat(msg, model="infimed-4b", temperature=0).text
    for i, result in client.map_chat([ChatRequest(msg, "infimed-4b")] * 3, progress="eval"):
        ...  # result is a ChatResult or the Exception that ended its retries

Messages may contain patient data: they never reach a log record. Logs carry the model name, the
first characters of the request's cache key, status codes and attempt numbers only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Keyword arguments ``chat.completions.create`` accepts directly; anything else travels in ``extra_body``
# (vLLM's ``top_k``, ``repetition_penalty``, ``chat_template_kwargs`` …).
_SDK_PARAMS = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "n",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "extra_headers",
        "extra_query",
    }
)
_RETRY_STATUS = frozenset({408, 409, 425, 429})
# The SDK logs request options (message bodies included) at DEBUG, and httpx2/httpcore2 log traffic:
# none of it may reach a log record, whatever level the root logger runs at.
_QUIET_LOGGERS = ("openai", "httpx", "httpcore", "httpx2", "httpcore2")


@dataclass(frozen=True)
class ChatResult:
    """One chat completion: the first choice's text and what came with it."""

    text: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    request_id: str | None
    raw: dict[str, Any]
    cached: bool = False


@dataclass(frozen=True)
class ChatRequest:
    """One request for :meth:`OpenAIClient.map_chat` (``params`` as for :meth:`OpenAIClient.chat`)."""

    messages: list[dict[str, Any]]
    model: str
    params: dict[str, Any] = field(default_factory=dict)


def request_key(messages: list[dict[str, Any]], *, model: str, params: dict[str, Any]) -> str:
    """sha256 of (model, messages, params) in canonical JSON: the cache key of one request."""
    blob = json.dumps(
        {"v": CACHE_VERSION, "model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class OpenAIClient:
    """Thread-safe wrapper around ``openai.OpenAI`` for chat completions.

    ``base_url`` includes ``/v1`` as the openai SDK expects; it and ``api_key`` default to
    ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``. ``concurrency`` bounds the threads of :meth:`map_chat`;
    ``max_retries`` counts retries after the first try on 408/409/425/429, 5xx, connection errors and
    timeouts (other 4xx fail at once). ``cache_dir`` enables the on-disk cache of successful results.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        concurrency: int = 8,
        max_retries: int = 3,
        timeout: float = 120.0,
        cache_dir: str | Path | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        import openai  # deferred: importing openai costs ~0.3 s, and core stays light at import

        if concurrency < 1:
            raise ValueError("concurrency must be ≥ 1")
        if max_retries < 0:
            raise ValueError("max_retries must be ≥ 0")
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not self.base_url:
            raise ValueError("no endpoint: pass base_url (…/v1) or set OPENAI_BASE_URL")
        # Local servers (our gateway without auth, raw vLLM) accept any key; the SDK insists on one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._openai = openai
        for name in _QUIET_LOGGERS:
            lg = logging.getLogger(name)
            if lg.getEffectiveLevel() < logging.WARNING:
                lg.setLevel(logging.WARNING)
        self._sdk = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=timeout)
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "errors": 0}

    # ---------------------------------------------------------------- public API
    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> ChatResult:
        """One chat completion (cached when ``cache_dir`` is set); raises the SDK's error after retries."""
        key = request_key(messages, model=model, params=params)
        hit = self._cache_get(key)
        if hit is not None:
            self._bump("cache_hits")
            return hit
        result = self._call_with_retries(messages, model=model, params=params, key=key)
        self._cache_put(key, result)
        return result

    def map_chat(
        self, requests: Iterable[ChatRequest], *, progress: str | None = None
    ) -> Iterator[tuple[int, ChatResult | Exception]]:
        """Run requests with at most ``concurrency`` in flight; yield ``(index, result)`` as they finish.

        ``index`` is the request's position in ``requests``. A request whose retries are exhausted (or
        that fails with a non-retryable error) yields its exception instead of raising, so one bad item
        never ends a long run. ``progress`` is the label of a tqdm progress bar (none when ``None``).
        """
        total = len(requests) if hasattr(requests, "__len__") else None  # type: ignore[arg-type]
        bar = None
        if progress is not None:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=progress, unit="req", dynamic_ncols=True)
        it = iter(enumerate(requests))
        pending: dict[Future[ChatResult], int] = {}
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-client")

        def submit_next() -> bool:
            try:
                i, req = next(it)
            except StopIteration:
                return False
            pending[pool.submit(self.chat, req.messages, model=req.model, **req.params)] = i
            return True

        try:
            # Keep the queue short so a huge (lazy) iterable is never materialised.
            while len(pending) < 2 * self.concurrency and submit_next():
                pass
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    exc = fut.exception()
                    if bar is not None:
                        bar.update(1)
                    yield i, (exc if isinstance(exc, Exception) else fut.result())
                    submit_next()
        finally:
            # A consumer that stops early (or Ctrl-C) must not wait for requests nobody will read.
            pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()

    def models(self) -> list[str]:
        """Model ids the endpoint serves (``GET /v1/models``)."""
        return [m["id"] for m in self.model_cards()]

    def model_cards(self) -> list[dict[str, Any]]:
        """The raw ``/v1/models`` entries (``id``, ``owned_by`` …), with the same retries as chat."""
        page = self._with_retries(lambda: self._sdk.models.list(), what="models", key="models")
        return [m.model_dump() for m in page.data]

    # ---------------------------------------------------------------- internals
    def _call_with_retries(
        self, messages: list[dict[str, Any]], *, model: str, params: dict[str, Any], key: str
    ) -> ChatResult:
        sdk_kwargs = {k: v for k, v in params.items() if k in _SDK_PARAMS}
        extra = {k: v for k, v in params.items() if k not in _SDK_PARAMS and k != "extra_body"}
        extra.update(params.get("extra_body") or {})
        if extra:
            sdk_kwargs["extra_body"] = extra

        def call() -> ChatResult:
            resp = self._sdk.chat.completions.create(messages=messages, model=model, **sdk_kwargs)  # type: ignore[arg-type]
            return _to_result(resp)

        self._bump("requests")
        return self._with_retries(call, what=f"chat model={model}", key=key)

    def _with_retries(self, fn: Any, *, what: str, key: str) -> Any:
        openai = self._openai
        attempt = 0
        while True:
            try:
                return fn()
            except (openai.APIConnectionError, openai.APIStatusError) as e:  # APITimeoutError is a connection error
                status = getattr(e, "status_code", None)
                retryable = status is None or status in _RETRY_STATUS or status >= 500
                if not retryable or attempt >= self.max_retries:
                    self._bump("errors")
                    log.warning(
                        "%s req=%s failed (status=%s, attempt %d): %s",
                        what,
                        key[:12],
                        status,
                        attempt + 1,
                        type(e).__name__,
                    )
                    raise
                delay = self._backoff(attempt, e)
                attempt += 1
                self._bump("retries")
                log.info(
                    "%s req=%s status=%s: retry %d/%d in %.2fs",
                    what,
                    key[:12],
                    status,
                    attempt,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)

    def _backoff(self, attempt: int, err: Exception) -> float:
        delay = self.backoff_base * (2**attempt) * (1 + 0.25 * random.random())
        response = getattr(err, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:  # an HTTP date: keep our own backoff
                pass
        return min(delay, self.backoff_max)

    def _bump(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> ChatResult | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return ChatResult(
                text=data["text"],
                finish_reason=data.get("finish_reason"),
                usage=data.get("usage"),
                request_id=data.get("request_id"),
                raw=data.get("raw") or {},
                cached=True,
            )
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("cache entry %s unreadable; requesting again", path.name[:12])
            return None

    def _cache_put(self, key: str, result: ChatResult) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "text": result.text,
            "finish_reason": result.finish_reason,
            "usage": result.usage,
            "request_id": result.request_id,
            "raw": result.raw,
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:12]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _to_result(resp: Any) -> ChatResult:
    raw = resp.model_dump() if hasattr(resp, "model_dump") else dict(resp)
    choices = raw.get("choices") or []
    first = choices[0] if choices else {}
    message = first.get("message") or {}
    text = message.get("content") or ""
    return ChatResult(
        text=text,
        finish_reason=first.get("finish_reason"),
        usage=raw.get("usage"),
        request_id=getattr(resp, "_request_id", None) or raw.get("id"),
        raw=raw,
        cached=False,
    )


# ---------------------------------------------------------------- image parts
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def image_part(image: str | Path | bytes | Any, *, mime: str | None = None) -> dict[str, Any]:
    """An OpenAI ``image_url`` content part holding the image as a PNG or JPEG data URL.

    ``image`` is a file path, raw bytes or a PIL image. PNG and JPEG bytes pass through unchanged;
    anything else PIL can decode (and every PIL image) is encoded as PNG. ``mime`` forces the
    declared type (``image/png`` or ``image/jpeg``) for bytes whose type is known to the caller.
    """
    if isinstance(image, (str, Path)):
        data = Path(image).read_bytes()
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        data, mime = _encode_png(image), "image/png"
    if mime is None:
        mime = next((m for magic, m in _MAGIC if data.startswith(magic)), None)
    if mime not in ("image/png", "image/jpeg"):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as im:
                data, mime = _encode_png(im), "image/png"
        except UnidentifiedImageError as e:
            raise ValueError("image_part: not an image PIL can decode (for DICOM use core.dicom.dicom_part)") from e
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}


def _encode_png(im: Any) -> bytes:
    if im.mode not in ("RGB", "RGBA", "L", "LA", "I;16", "P"):
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
