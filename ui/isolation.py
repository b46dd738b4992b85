"""Per-session isolation of what Gradio serves: files, session hashes and raw uploads.

Gradio 6 keeps one upload cache per server (``GRADIO_TEMP_DIR``, content-addressed: ``<sha256>/<name>``)
and serves any file in it, at ``…/gradio_api/file=PATH``, to any logged-in browser; it has no per-session
cache setting (only ``delete_cache`` by age and ``Blocks.unload``). Its upload request carries no session
hash either, so the cache itself cannot be split by session. This module makes it private per session
around Gradio:

- every session is bound to the login that opened it (the hash of its Gradio access-token cookie), and
  a session hash presented by another login is refused — by the handlers (:class:`SessionMismatch`)
  and, for the GET routes that carry one (``/queue/data``, ``/heartbeat/…``), by :class:`SessionGuard`;
- files in the cache are served only from the requesting login's own session folders
  (``<cache>/s/<random>/``, the exported reports); everything else there — raw uploads above all — is
  answered 404, whoever asks: nothing in the app fetches a raw upload back;
- Gradio's ``deep_link`` route (it returns a session's component values to anyone naming its hash) is
  not used by the app and is answered 404;
- raw uploads are de-identified and deleted within the upload event (``ui.ingest``); any left behind
  (a tab closed mid-upload) are swept after :data:`RAW_UPLOAD_MAX_AGE_S` (:func:`sweep_raw_uploads`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

RAW_UPLOAD_MAX_AGE_S = 600  # a raw upload lives for the upload event only; leftovers go after 10 min
_HEX_DIR = re.compile(r"^[0-9a-f]{32,128}$")  # Gradio's per-upload folders: the content hash
_FILE_ROUTES = ("/gradio_api/file=", "/file=", "/gradio_api/file/")


class SessionMismatch(PermissionError):
    """A session hash was presented by a login other than the one that opened the session."""


def login_keys(cookies: Any) -> frozenset[str]:
    """Hashes of the Gradio access-token cookies in ``cookies`` (a mapping, or Gradio's ``Obj``).

    One login (one browser) has one token, in two cookies (``access-token-…`` and its ``-unsecure-``
    twin); only hashes are kept, never the token.
    """
    items = cookies.items() if hasattr(cookies, "items") else dict(cookies or {}).items()
    return frozenset(
        hashlib.sha256(str(v).encode()).hexdigest()[:32] for k, v in items if str(k).startswith("access-token") and v
    )


def sweep_raw_uploads(cache: Path, max_age_s: float = RAW_UPLOAD_MAX_AGE_S) -> int:
    """Delete Gradio's per-upload folders (``<cache>/<hash>/``) older than ``max_age_s``; returns how many."""
    now, n = time.time(), 0
    try:
        entries = list(cache.iterdir())
    except FileNotFoundError:
        return 0
    for d in entries:
        try:
            if d.is_dir() and _HEX_DIR.match(d.name) and now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        except FileNotFoundError:
            continue
    if n:
        log.info("removed %d raw upload folder(s) left behind", n)
    return n


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


class SessionGuard:
    """ASGI wrapper of the mounted Gradio app enforcing the rules in the module docstring.

    ``owner_of(session_hash)`` gives the login keys bound to a session (empty when unknown);
    ``served_dirs(keys)`` the folders the login ``keys`` may download from.
    """

    def __init__(self, app: Any, *, cache: Path, owner_of: Callable[[str], frozenset[str]],
                 served_dirs: Callable[[frozenset[str]], Iterable[Path]]) -> None:  # fmt: skip
        self.app = app
        self.cache = Path(os.path.realpath(cache))
        self.owner_of = owner_of
        self.served_dirs = served_dirs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            await _not_found(send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: dict[str, Any]) -> bool:
        path: str = scope.get("path", "")
        if path.endswith("/gradio_api/deep_link"):
            return False
        keys: frozenset[str] | None = None

        def mine() -> frozenset[str]:
            nonlocal keys
            if keys is None:
                from starlette.requests import Request

                keys = login_keys(Request(scope).cookies)
            return keys

        # A session hash in the URL must belong to this login (queue stream, heartbeat).
        hashes = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [])
        if "/gradio_api/heartbeat/" in path:
            hashes.append(path.rsplit("/heartbeat/", 1)[1].strip("/"))
        for h in hashes:
            owner = self.owner_of(h)
            if owner and not owner & mine():
                log.warning("refused a request naming another login's session")
                return False
        for marker in _FILE_ROUTES:
            i = path.find(marker)
            if i < 0:
                continue
            target = Path(os.path.realpath(path[i + len(marker) :]))
            if not _inside(target, self.cache):
                return True  # not ours: Gradio's own allow/block lists decide
            return any(_inside(target, Path(os.path.realpath(d))) for d in self.served_dirs(mine()))
        return True


async def _not_found(send: Any) -> None:
    body = b'{"detail":"Not Found"}'
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def guard_mount(app: Any, path: str, **kw: Any) -> SessionGuard:
    """Wrap the ASGI app mounted at ``path`` on the Starlette/FastAPI ``app`` in a :class:`SessionGuard`."""
    from starlette.routing import Mount

    for route in app.router.routes:
        if isinstance(route, Mount) and route.path == path.rstrip("/"):
            guard = SessionGuard(route.app, **kw)
            route.app = guard
            return guard
    raise RuntimeError(f"no app mounted at {path}")
