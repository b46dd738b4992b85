"""Records from a JSON list or a JSONL file, with a location for each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curation.readers._common import ReaderError, ReaderIssue


def iter_records(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | ReaderIssue]]:
    """``(index, where, record)``; a JSON list file is loaded whole, JSONL is streamed."""
    with path.open(encoding="utf-8") as fh:
        head = fh.read(1 << 12).lstrip()
    if head.startswith("["):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ReaderError(f"{path}: not valid JSON: {e.msg} (line {e.lineno})") from e
        for i, rec in enumerate(data):
            yield i, f"item {i}", rec if isinstance(rec, dict) else ReaderIssue(str(path), f"item {i}", "not an object")
        return
    with path.open(encoding="utf-8") as fh:
        i = 0
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield i, where, ReaderIssue(str(path), where, f"not valid JSON: {e.msg}")
            else:
                yield i, where, rec if isinstance(rec, dict) else ReaderIssue(str(path), where, "not an object")
            i += 1


def peek_record(path: Path) -> dict[str, Any] | None:
    """The first record of a JSON list / JSONL file (None when unreadable)."""
    try:
        for _i, _where, rec in iter_records(path):
            return rec if isinstance(rec, dict) else None
    except (ReaderError, OSError, UnicodeDecodeError):
        return None
    return None
