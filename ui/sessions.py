"""Server-side sessions of the clinician UI: one private folder per browser session, removed when it ends."""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.deid import Deidentifier
from ui.api import RenderResult
from ui.messages import StudyItem, Turn

SESSION_MAX_AGE_S = 12 * 3600  # folders of sessions whose tab never said goodbye are swept after this


@dataclass
class Session:
    """Server-side state of one browser session (never sent to the browser)."""

    dir: Path
    deid: Deidentifier
    items: list[StudyItem] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    files_written: int = 0
    preview: RenderResult | None = None
    preview_key: str = ""
    preview_error: str | None = None
    attached_key: str = ""
    touched: float = field(default_factory=time.time)


class Sessions:
    """Sessions by Gradio session hash, each with a private folder removed on :meth:`end`."""

    def __init__(self, root: Path):
        self.root = root
        self._d: dict[str, Session] = {}

    def get(self, session_hash: str | None) -> Session:
        key = safe_key(session_hash)
        s = self._d.get(key)
        if s is None:
            d = self.root / key
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            # A random salt per session: UIDs stay consistent inside the session (a series stays a series) and cannot be linked across sessions.
            s = self._d[key] = Session(dir=d, deid=Deidentifier(secrets.token_bytes(32)))
        s.touched = time.time()
        return s

    def end(self, session_hash: str | None) -> None:
        key = safe_key(session_hash)
        self._d.pop(key, None)
        shutil.rmtree(self.root / key, ignore_errors=True)

    def sweep(self, max_age_s: float = SESSION_MAX_AGE_S) -> int:
        """Remove folders of sessions idle for longer than ``max_age_s``; returns how many."""
        now, n = time.time(), 0
        for key, s in list(self._d.items()):
            if now - s.touched > max_age_s:
                self.end(key)
                n += 1
        if self.root.exists():
            for d in self.root.iterdir():
                if d.name not in self._d and d.is_dir() and now - d.stat().st_mtime > max_age_s:
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
        return n


def safe_key(session_hash: str | None) -> str:
    key = "".join(c for c in (session_hash or "") if c.isalnum() or c in "-_")[:64]
    return key or "anonymous"


# --------------------------------------------------------------------------- rendering helpers (HTML)
