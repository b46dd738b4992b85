"""ShareGPT / LLaVA: ``{"id", "image" | "images", "conversations": [{"from", "value"}]}`` (JSON list or JSONL).

The number of ``<image>`` markers must equal the number of images (a record where they differ is reported,
not guessed). Image paths are relative to ``image_root`` (default: the data file's folder).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.manifest import IMAGE_TOKEN, Sample
from curation.readers._common import ROLES, ReaderIssue, build_sample, image_from_value, image_kind, meta_from
from curation.readers.jsonio import iter_records


def convert_sharegpt(
    record: dict[str, Any], *, source: str, where: str, root: Path, scratch: Path, index: int
) -> Sample | ReaderIssue:
    """One ShareGPT/LLaVA record → a manifest sample."""
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        return ReaderIssue(source, where, "'conversations' is missing or empty")
    raw_images = record.get("images", record.get("image"))
    if raw_images is None or (isinstance(raw_images, str) and not raw_images):
        raw_images = []
    if not isinstance(raw_images, (list, tuple)) or isinstance(raw_images, dict):
        raw_images = [raw_images]
    raw_images = list(raw_images)
    messages = []
    for turn in conv:
        if not isinstance(turn, dict):
            return ReaderIssue(source, where, "a conversation turn is not an object")
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        if role is None:
            return ReaderIssue(source, where, f"unknown speaker {turn.get('from')!r}")
        messages.append({"role": role, "content": str(turn.get("value", turn.get("content", "")) or "")})
    markers = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
    if markers != len(raw_images):
        return ReaderIssue(source, where, f"{markers} <image> marker(s) but {len(raw_images)} image(s)")
    images = []
    for value in raw_images:
        try:
            p = image_from_value(value, root, scratch)
        except ValueError as e:
            return ReaderIssue(source, where, str(e))
        images.append({"path": str(p), "kind": image_kind(p)})
    users = sum(1 for m in messages if m["role"] == "user")
    task = "vqa" if users == 1 and messages[-1]["role"] == "assistant" and len(messages) <= 3 else "chat"
    data = {
        "id": str(record.get("id", f"{Path(source).stem}-{index}")),
        "task": task,
        "messages": messages,
        "images": images,
        "meta": meta_from(record, f"sharegpt:{Path(source).name}"),
    }
    return build_sample(data, source, where)


def read_sharegpt(path: Path, *, image_root: Path | None, scratch: Path) -> Iterator[Sample | ReaderIssue]:
    root = (image_root or path.parent).resolve()
    for i, where, record in iter_records(path):
        if isinstance(record, ReaderIssue):
            yield record
            continue
        yield convert_sharegpt(record, source=str(path), where=where, root=root, scratch=scratch, index=i)
