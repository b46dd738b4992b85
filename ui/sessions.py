"""Server-side sessions of the clinician UI, each bound to the login that opened it, with two private
folders removed when it ends: ``dir`` (de-identified study files; never served) and ``public`` (files the
session's browser downloads, inside Gradio's cache under a random name; served to its login only, see
``ui.isolation``)."""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.deid import Deidentifier
from ui.api import RenderResult
from ui.isolation import SessionMismatch
from ui.messages import StudyItem, Turn

SESSION_MAX_AGE_S = 12 * 3600  # folders of sessions whose tab never said goodbye are swept after this


@dataclass
class Session:
    """Server-side state of one browser session (never sent to the browser)."""

    dir: Path
    deid: Deidentifier
    public: Path
    owner: frozenset[str] = frozenset()  # hashes of the login's access token (``ui.isolation.login_keys``)
    items: list[StudyItem] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    files_written: int = 0
    preview: RenderResult | None = None
    preview_key: str = ""
    preview_error: str | None = None
    attached_key: str = ""
    touched: float = field(default_factory=time.time)


class Sessions:
    """Sessions by Gradio session hash; ``root`` holds their private folders, ``public_root`` their served ones."""

    def __init__(self, root: Path, public_root: Path | None = None):
        self.root = root
        self.public_root = public_root or root.parent / "public"
        self._d: dict[str, Session] = {}

    def get(self, session_hash: str | None, owner: frozenset[str] = frozenset()) -> Session:
        """The session (created on first use, bound to ``owner``); :class:`SessionMismatch` when another login asks."""
        key = safe_key(session_hash)
        s = self._d.get(key)
        if s is None:
            d = self.root / key
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            public = self.public_root / secrets.token_urlsafe(24)  # unguessable, unlike the session hash
            public.mkdir(parents=True, exist_ok=True, mode=0o700)
            # A random salt per session: UIDs stay consistent inside the session (a series stays a series) and cannot be linked across sessions.
            s = self._d[key] = Session(dir=d, deid=Deidentifier(secrets.token_bytes(32)), public=public, owner=owner)
        elif owner and s.owner and not owner & s.owner:
            raise SessionMismatch("this session belongs to another login")
        elif owner and not s.owner:
            s.owner = owner
        s.touched = time.time()
        return s

    def peek(self, session_hash: str | None) -> Session | None:
        return self._d.get(safe_key(session_hash))

    def owner_of(self, session_hash: str) -> frozenset[str]:
        s = self._d.get(safe_key(session_hash))
        return s.owner if s else frozenset()

    def served_dirs(self, keys: frozenset[str]) -> list[Path]:
        """The download folders of the sessions opened by the login ``keys``."""
        return [s.public for s in list(self._d.values()) if keys and s.owner & keys]

    def end(self, session_hash: str | None) -> None:
        key = safe_key(session_hash)
        s = self._d.pop(key, None)
        shutil.rmtree(self.root / key, ignore_errors=True)
        if s is not None:
            shutil.rmtree(s.public, ignore_errors=True)

    def sweep(self, max_age_s: float = SESSION_MAX_AGE_S) -> int:
        """Remove folders of sessions idle for longer than ``max_age_s``; returns how many sessions."""
        now, n = time.time(), 0
        for key, s in list(self._d.items()):
            if now - s.touched > max_age_s:
                self.end(key)
                n += 1
        live = {s.public.name for s in self._d.values()}
        for root, names in ((self.root, set(self._d)), (self.public_root, live)):
            if not root.exists():
                continue
            for d in root.iterdir():
                if d.name not in names and d.is_dir() and now - d.stat().st_mtime > max_age_s:
                    shutil.rmtree(d, ignore_errors=True)
                    n += root is self.root
        return n


def safe_key(session_hash: str | None) -> str:
    key = "".join(c for c in (session_hash or "") if c.isalnum() or c in "-_")[:64]
    return key or "anonymous"
