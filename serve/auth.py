"""API keys: bearer tokens stored hashed, compared in constant time, rate-limited per key.

The keys file is JSON lines, one key per line: ``{"id": "k_3f9a…", "name": "…", "sha256": "…",
"created": "…", "revoked": false}``. Only the key's id ever reaches logs. Keys look like
``imk_<id>_<secret>`` so the id can be read without a lookup, but the whole token is what is hashed.

    infimed serve keys create --file keys.jsonl --name radiology-app
    infimed serve keys list --file keys.jsonl
    infimed serve keys revoke --file keys.jsonl k_3f9a…
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class KeyRecord:
    id: str
    name: str
    sha256: str
    created: str
    revoked: bool = False


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh (key id, token) pair."""
    key_id = "k_" + secrets.token_hex(4)
    return key_id, f"imk_{key_id[2:]}_{secrets.token_urlsafe(24)}"


class KeyStore:
    """Hashed keys from a file and/or one key from the environment; reloads the file when it changes."""

    def __init__(self, path: Path | None = None, env_key: str | None = None):
        self.path = path
        self._env = KeyRecord(id="k_env", name="INFIMED_API_KEY", sha256=_hash(env_key), created="") if env_key else None
        self._records: list[KeyRecord] = []
        self._ephemeral: list[KeyRecord] = []  # in-memory keys (e.g. the mounted UI's), never written
        self._mtime: float | None = None
        self._lock = threading.Lock()
        self._reload()

    # --- file
    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._records, self._mtime = [], None
            return
        if mtime == self._mtime:
            return
        records = []
        for lineno, line in enumerate(self.path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(KeyRecord(**json.loads(line)))
                except (json.JSONDecodeError, TypeError) as e:
                    raise ValueError(f"{self.path}:{lineno}: not a key record ({e})") from e
        self._records, self._mtime = records, mtime

    def _write(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys.")
        with os.fdopen(fd, "w") as fh:
            for r in self._records:
                fh.write(json.dumps(asdict(r)) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._mtime = self.path.stat().st_mtime

    # --- management
    def create(self, name: str) -> tuple[KeyRecord, str]:
        if self.path is None:
            raise ValueError("no keys file given")
        with self._lock:
            self._reload()
            key_id, token = new_token()
            rec = KeyRecord(id=key_id, name=name, sha256=_hash(token), created=datetime.now(UTC).isoformat(timespec="seconds"))
            self._records.append(rec)
            self._write()
        return rec, token

    def list(self) -> list[KeyRecord]:
        with self._lock:
            self._reload()
            return list(self._records)

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            self._reload()
            hit = [r for r in self._records if r.id == key_id]
            for r in hit:
                r.revoked = True
            if hit:
                self._write()
            return bool(hit)

    def add_ephemeral(self, name: str) -> str:
        """A new key kept in memory only (never written to the keys file); returns the token.

        For in-process clients such as the UI mounted on the gateway: the key dies with the process.
        """
        key_id, token = new_token()
        rec = KeyRecord(id=key_id, name=name, sha256=_hash(token), created=datetime.now(UTC).isoformat(timespec="seconds"))
        with self._lock:
            self._ephemeral.append(rec)
        return token

    # --- verification
    def verify(self, token: str) -> str | None:
        """The key id when ``token`` is valid, else None. Every record is compared (constant time)."""
        digest = _hash(token)
        with self._lock:
            self._reload()
            candidates = list(self._records) + ([self._env] if self._env else []) + list(self._ephemeral)
        found = None
        for r in candidates:
            if hmac.compare_digest(r.sha256, digest) and not r.revoked:
                found = r.id
        return found


class RateLimiter:
    """A sliding one-minute window per key id."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key_id: str) -> tuple[bool, float]:
        """(allowed, seconds until the next slot)."""
        if self.per_minute <= 0:
            return True, 0.0
        now = time.monotonic()
        with self._lock:
            q = self._hits.setdefault(key_id, deque())
            while q and now - q[0] >= 60.0:
                q.popleft()
            if len(q) >= self.per_minute:
                return False, 60.0 - (now - q[0])
            q.append(now)
            return True, 0.0
