"""Routing to vLLM engines by model name; engines serving the same name are replicas.

Each engine's ``/v1/models`` is polled; a request for model M goes to the least-busy healthy engine
that serves M (ties broken round-robin). The gateway never imports vLLM: it speaks HTTP only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field

import httpx

log = logging.getLogger(__name__)


@dataclass
class Engine:
    url: str  # base URL without /v1, e.g. http://127.0.0.1:8101
    models: list[str] = field(default_factory=list)
    healthy: bool = False
    in_flight: int = 0
    last_error: str | None = None


class EngineRouter:
    def __init__(self, urls: list[str], *, client: httpx.AsyncClient, poll_interval: float = 5.0):
        self.engines = [Engine(url=u.rstrip("/").removesuffix("/v1")) for u in urls]
        self.client = client
        self.poll_interval = poll_interval
        self._rr = itertools.count()
        self._task: asyncio.Task | None = None

    def set_urls(self, urls: list[str]) -> None:
        """Replace the engine list (the launcher calls this when it restarts an engine on a new port)."""
        known = {e.url: e for e in self.engines}
        self.engines = [known.get(u.rstrip("/").removesuffix("/v1")) or Engine(url=u.rstrip("/").removesuffix("/v1")) for u in urls]

    async def refresh(self) -> None:
        await asyncio.gather(*(self._probe(e) for e in self.engines))

    async def _get_models(self, e: Engine) -> httpx.Response:
        """``GET /v1/models``, tried a second time after a connection-level failure (not a timeout): a
        kept-alive connection that the engine closes as the probe goes out is no outage."""
        try:
            return await self.client.get(f"{e.url}/v1/models", timeout=3.0)
        except httpx.TimeoutException:
            raise
        except httpx.TransportError:
            return await self.client.get(f"{e.url}/v1/models", timeout=3.0)

    async def _probe(self, e: Engine) -> None:
        try:
            r = await self._get_models(e)
            r.raise_for_status()
            e.models = [m["id"] for m in r.json().get("data", [])]
            e.healthy = True
            e.last_error = None
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            if e.healthy:
                log.warning("engine %s is not reachable: %s", e.url, type(exc).__name__)
            e.healthy = False
            e.last_error = type(exc).__name__

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.poll_interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # --- queries
    @property
    def ready(self) -> bool:
        return any(e.healthy and e.models for e in self.engines)

    def model_names(self) -> list[str]:
        names: list[str] = []
        for e in self.engines:
            if e.healthy:
                names += [m for m in e.models if m not in names]
        return names

    def pick(self, model: str) -> Engine | None:
        """The engine for ``model`` (None when no healthy engine serves it)."""
        candidates = [e for e in self.engines if e.healthy and model in e.models]
        if not candidates:
            return None
        low = min(e.in_flight for e in candidates)
        best = [e for e in candidates if e.in_flight == low]
        return best[next(self._rr) % len(best)]

    def any_engine(self) -> Engine | None:
        healthy = [e for e in self.engines if e.healthy]
        return healthy[0] if healthy else None
