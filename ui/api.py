"""The UI's client of the public API (``openai`` SDK for chat and models, ``httpx`` for the render preview).

The API key lives here, server-side; it is never put into a component value, so it never reaches the
browser. The base URL may be a callable: mounted on the gateway the port is known only once uvicorn
has started.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

log = logging.getLogger(__name__)


class APIFailure(RuntimeError):
    """The API refused or failed; the message is readable by a clinician (the gateway's own message when it sent one)."""


@dataclass
class RenderResult:
    images: list[str]
    records: list[dict[str, Any]]


_PARAM_PREFIX = re.compile(r"^(messages\[\d+\]\.)?content\[\d+\](\.[a-z_]+)*: ")


def _message(resp: httpx.Response) -> str:
    """The gateway's error message without the JSON path of the part (meaningless to a clinician)."""
    try:
        err = resp.json().get("error", {})
        msg = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        msg = None
    return _PARAM_PREFIX.sub("", msg) if msg else f"the server answered HTTP {resp.status_code}"


def pinned_context(certfile: str | Path) -> ssl.SSLContext:
    """A TLS context that trusts exactly the certificate(s) in ``certfile`` and no public CA.

    For the UI mounted on the gateway: it calls the gateway's own HTTPS port over the loopback, where
    the certificate's host name (``gateway.hospital.local``) cannot match ``127.0.0.1``, so the host name
    is not checked; the chain must still end in that very certificate (``VERIFY_X509_PARTIAL_CHAIN`` lets
    a CA-issued leaf be its own anchor), so nothing else on the loopback can pose as the gateway.
    """
    ctx = ssl.create_default_context(cafile=str(certfile))
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


class APIClient:
    """Async calls to the gateway with a server-held key.

    ``verify``: ``True`` (the system's CAs), a CA bundle path, or an ``ssl.SSLContext`` (e.g.
    :func:`pinned_context`).
    """

    def __init__(self, api_url: str | Callable[[], str], api_key: str, *, timeout: float = 600.0,
                 verify: bool | str | ssl.SSLContext = True):  # fmt: skip
        self._url = api_url
        self._key = api_key
        self._timeout = timeout
        self._verify = verify
        self._clients: dict[str, tuple[openai.AsyncOpenAI, httpx.AsyncClient]] = {}

    @property
    def base_url(self) -> str:
        url = self._url() if callable(self._url) else self._url
        if not url:
            raise APIFailure("the API is not reachable yet (the server is still starting); try again in a moment")
        return url.rstrip("/")

    def _pair(self) -> tuple[openai.AsyncOpenAI, httpx.AsyncClient]:
        url = self.base_url
        if url not in self._clients:
            http = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=5.0),
                headers={"Authorization": f"Bearer {self._key}"},
                verify=self._verify,
            )
            sdk = openai.AsyncOpenAI(base_url=url, api_key=self._key, max_retries=1, timeout=self._timeout,
                                     http_client=openai.DefaultAsyncHttpxClient(verify=self._verify))  # fmt: skip
            self._clients[url] = (sdk, http)
        return self._clients[url]

    async def models(self) -> list[str]:
        """Model ids from ``/v1/models`` (base model and fine-tuned adapters)."""
        sdk, _ = self._pair()
        try:
            page = await sdk.models.list()
        except openai.APIError as e:
            raise APIFailure(f"could not list the models: {getattr(e, 'message', type(e).__name__)}") from None
        return [m.id for m in page.data]

    async def version(self) -> str:
        """The server's version (``/version`` at the root, beside ``/v1``); ``unknown`` when unavailable."""
        _, http = self._pair()
        root = self.base_url.removesuffix("/v1")
        try:
            r = await http.get(f"{root}/version", timeout=5.0)
            return str(r.json().get("infimed", "unknown")) if r.status_code == 200 else "unknown"
        except (httpx.HTTPError, ValueError):
            return "unknown"

    async def render(self, parts: list[dict[str, Any]]) -> RenderResult:
        """What the model sees for ``parts`` (``POST /v1/infimed/render``); a refusal raises :class:`APIFailure` with its reason."""
        _, http = self._pair()
        try:
            r = await http.post(f"{self.base_url}/infimed/render", json={"content": parts})
        except httpx.HTTPError as e:
            raise APIFailure(f"the render service did not answer ({type(e).__name__})") from None
        if r.status_code != 200:
            raise APIFailure(_message(r))
        data = r.json()
        return RenderResult(images=list(data.get("images", [])), records=list(data.get("records", [])))

    async def stream_chat(self, messages: list[dict[str, Any]], *, model: str, request_id: str,
                          params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        """Stream ``chat.completion.chunk`` dicts. Closing the iterator (Stop) closes the HTTP stream,
        which makes the gateway abort the generation in the engine."""
        sdk, _ = self._pair()
        extra = {
            k: params[k] for k in ("ignore_eos", "top_k", "repetition_penalty") if params.get(k) not in (None, False)
        }
        sdk_params = {
            k: v for k, v in params.items() if k in ("temperature", "top_p", "max_tokens", "seed") and v is not None
        }
        try:
            stream = await sdk.chat.completions.create(model=model, messages=messages, stream=True, extra_body=extra or None,
                                                      extra_headers={"X-Request-Id": request_id}, **sdk_params)  # fmt: skip
        except openai.APIStatusError as e:
            raise APIFailure(_message(e.response)) from None
        except openai.APIError as e:
            raise APIFailure(f"the model server did not answer ({type(e).__name__})") from None
        try:
            async for chunk in stream:
                yield chunk.model_dump(exclude_unset=True)
        except openai.APIError as e:
            raise APIFailure(f"the answer stream broke off ({type(e).__name__})") from None
        finally:
            await stream.close()

    async def aclose(self) -> None:
        for sdk, http in self._clients.values():
            await sdk.close()
            await http.aclose()
        self._clients.clear()
