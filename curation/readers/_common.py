"""Helpers every reader shares: issues, roles, image references, blobs written to a scratch folder."""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from core.manifest import Sample

# Meta keys readers copy from a foreign record when present (the rest of the record is dropped).
META_KEYS = (
    "modality",
    "body_part",
    "question_type",
    "answer_type",
    "answer",
    "options",
    "split",
    "patient_hash",
    "source",
    "licence",
    "license",
    "patient_id",
    "study_uid",
)
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
}


class ReaderError(ValueError):
    """The input as a whole cannot be read (missing, unknown format); names the path."""


@dataclass(frozen=True)
class ReaderIssue:
    """One foreign record that could not become a sample: where it is and why (never its content)."""

    source: str
    where: str
    message: str


def meta_from(record: dict[str, Any], source: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    nested = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    for key in META_KEYS:
        value = nested.get(key, record.get(key))
        if value is not None and not (isinstance(value, float) and math.isnan(value)):  # NaN from pandas
            meta["licence" if key == "license" else key] = value
    if "patient_id" in meta:
        meta["patient_id"] = str(meta["patient_id"])
    meta.setdefault("source", source)
    return meta


def build_sample(data: dict[str, Any], source: str, where: str) -> Sample | ReaderIssue:
    """Validate a manifest-shaped dict; a failure becomes a :class:`ReaderIssue`."""
    try:
        return Sample.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(sample)"
        return ReaderIssue(source, where, f"{loc}: {err['msg']}")


def image_kind(path: Path) -> str:
    return "dicom" if path.suffix.lower() in (".dcm", ".dicom") else "image"


def resolve_ref(ref: str, root: Path) -> Path:
    """An image reference (path, ``file://`` URL) as an absolute path under ``root`` when relative."""
    if ref.startswith("file://"):
        return Path(unquote(urlparse(ref).path))
    p = Path(ref).expanduser()
    return p if p.is_absolute() else (root / p).resolve()


def write_blob(data: bytes, scratch: Path, mime: str | None = None) -> Path:
    """Store embedded image bytes (data URLs, HF ``Image`` columns) as a file named by content hash."""
    ext = ".png"
    if data[:3] == b"\xff\xd8\xff" or mime == "image/jpeg":
        ext = ".jpg"
    elif data[128:132] == b"DICM" or mime == "application/dicom":
        ext = ".dcm"
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"{hashlib.sha256(data).hexdigest()[:32]}{ext}"
    if not path.exists():
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def data_url_to_file(url: str, scratch: Path) -> Path:
    """Decode a ``data:<mime>;base64,…`` URL into a scratch file."""
    head, _, payload = url.partition(",")
    mime = head[5:].split(";")[0] or None
    if ";base64" not in head:
        raise ValueError("only base64 data URLs are supported")
    return write_blob(base64.b64decode(payload), scratch, mime)


def image_from_value(value: Any, root: Path, scratch: Path) -> Path:
    """An image given as a path string, a data URL, raw bytes or an HF ``{"bytes", "path"}`` dict."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return write_blob(bytes(value["bytes"]), scratch)
        if value.get("path"):
            return resolve_ref(str(value["path"]), root)
        raise ValueError("image dict has neither 'bytes' nor 'path'")
    if isinstance(value, (bytes, bytearray)):
        return write_blob(bytes(value), scratch)
    if isinstance(value, str):
        if value.startswith("data:"):
            return data_url_to_file(value, scratch)
        if value.startswith(("http://", "https://")):
            raise ValueError("remote image URLs are not fetched (no network): download them first")
        return resolve_ref(value, root)
    raise ValueError(f"unsupported image value of type {type(value).__name__}")
