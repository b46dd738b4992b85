"""OpenAI-style records: ``{"messages": [{"role", "content": str | [parts]}], "id"?, "meta"?}`` (JSONL).

Image parts are ``{"type": "image_url", "image_url": {"url": …}}`` (a path, ``file://`` URL or base64 data
URL, DICOM data URLs included) or ``{"type": "image", "image": …}``. Embedded images are written once to
the run's scratch folder (named by content hash); remote URLs are refused (nothing is downloaded).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.manifest import IMAGE_TOKEN, Sample
from curation.readers._common import ROLES, ReaderIssue, build_sample, image_from_value, image_kind, meta_from
from curation.readers.jsonio import iter_records


def convert_openai(
    record: dict[str, Any], *, source: str, where: str, root: Path, scratch: Path, index: int
) -> Sample | ReaderIssue:
    """One OpenAI-messages record → a manifest sample with typed image parts."""
    msgs = record.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return ReaderIssue(source, where, "'messages' is missing or empty")
    messages: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for m in msgs:
        if not isinstance(m, dict):
            return ReaderIssue(source, where, "a message is not an object")
        role = ROLES.get(str(m.get("role", "")).lower())
        if role is None:
            return ReaderIssue(source, where, f"unknown role {m.get('role')!r}")
        content = m.get("content")
        if isinstance(content, str) or content is None:
            text = content or ""
            if IMAGE_TOKEN in text:
                return ReaderIssue(source, where, "a text message holds an <image> marker but no image part")
            messages.append({"role": role, "content": text})
            continue
        if not isinstance(content, list):
            return ReaderIssue(source, where, "message content is neither text nor a list of parts")
        parts: list[dict[str, Any]] = []
        for part in content:
            ptype = part.get("type") if isinstance(part, dict) else None
            if ptype == "text":
                parts.append({"type": "text", "text": str(part.get("text") or "")})
            elif ptype in ("image_url", "image"):
                raw = part.get("image_url", part.get("image"))
                value = raw.get("url") if isinstance(raw, dict) and "url" in raw else raw
                if value is None:
                    value = part.get("path")
                try:
                    p = image_from_value(value, root, scratch)
                except (ValueError, TypeError) as e:
                    return ReaderIssue(source, where, f"image part: {e}")
                parts.append({"type": "image", "index": len(images)})
                images.append({"path": str(p), "kind": image_kind(p)})
            else:
                return ReaderIssue(source, where, f"unsupported content part type {ptype!r}")
        messages.append({"role": role, "content": parts})
    users = sum(1 for m in messages if m["role"] == "user")
    task = "vqa" if users == 1 and messages[-1]["role"] == "assistant" and len(messages) <= 3 else "chat"
    data = {
        "id": str(record.get("id", f"{Path(source).stem}-{index}")),
        "task": task,
        "messages": messages,
        "images": images,
        "meta": meta_from(record, f"openai:{Path(source).name}"),
    }
    return build_sample(data, source, where)


def read_openai(path: Path, *, image_root: Path | None, scratch: Path) -> Iterator[Sample | ReaderIssue]:
    root = (image_root or path.parent).resolve()
    for i, where, record in iter_records(path):
        if isinstance(record, ReaderIssue):
            yield record
            continue
        yield convert_openai(record, source=str(path), where=where, root=root, scratch=scratch, index=i)
