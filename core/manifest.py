"""The one versioned sample schema every package reads and writes (JSONL, one sample per line).

Training and evaluation read only this; foreign formats are converted by ``curation.readers``.

A sample is either a conversation (``messages``, OpenAI shape, with ``<image>`` slots in the text
or typed ``{"type": "image"}`` parts) or plain ``text`` (captions / interleaved pretraining text).
Image paths are relative to the manifest file's folder, so a manifest and its images move together.

Example line::

    {"schema_version": 1, "id": "ph-0001-q0", "task": "vqa",
     "messages": [{"role": "user", "content": "<image>\\nIs there a nodule in the left lung?"},
                  {"role": "assistant", "content": "yes"}],
     "images": [{"path": "images/ph-0001.dcm", "kind": "dicom", "width": 256, "height": 256,
                 "render": {"window": "lung"}}],
     "meta": {"modality": "CT", "question_type": "presence", "answer_type": "closed",
              "answer": "yes", "options": ["yes", "no"], "split": "test"}}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1
IMAGE_TOKEN = "<image>"

Task = Literal["caption", "vqa", "chat"]
ImageKind = Literal["image", "dicom", "series"]
Role = Literal["system", "user", "assistant"]
Split = Literal["train", "val", "test"]
AnswerType = Literal["closed", "open"]


class ManifestError(ValueError):
    """A manifest file or record is invalid; the message names the file and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class RenderSpec(_Strict):
    """How a DICOM (or plain image) becomes model pixels; the same spec the gateway receives on the wire.

    ``window`` is a preset name (``lung``, ``mediastinum``, ``soft_tissue``, ``bone``, ``brain``),
    ``"auto"`` (file's own window, else percentile), or explicit ``{"center": c, "width": w}``.
    ``composite`` names a multi-window mode (``"ct3"``: three CT windows into R, G, B).
    ``frames`` is ``"auto"``, a list of frame/slice indices, or ``"uniform:N"``.
    """

    window: str | dict[str, float] | None = None
    composite: str | None = None
    frames: str | list[int] | None = None

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: str | dict[str, float] | None) -> str | dict[str, float] | None:
        if isinstance(v, dict):
            if set(v) != {"center", "width"}:
                raise ValueError("explicit window needs exactly the keys 'center' and 'width'")
            if v["width"] <= 0:
                raise ValueError("window width must be > 0")
        return v

    @field_validator("frames")
    @classmethod
    def _check_frames(cls, v: str | list[int] | None) -> str | list[int] | None:
        if isinstance(v, str) and v != "auto":
            head, _, n = v.partition(":")
            if head != "uniform" or not n.isdigit() or int(n) < 1:
                raise ValueError("frames must be 'auto', 'uniform:N' (N ≥ 1) or a list of indices")
        if isinstance(v, list) and any(i < 0 for i in v):
            raise ValueError("frame indices must be ≥ 0")
        return v


class ImageRef(_Strict):
    """One image slot of a sample. ``path`` is relative to the manifest; ``files`` lists a series' files."""

    path: str
    kind: ImageKind = "image"
    files: list[str] | None = None
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    frames: int | None = Field(default=None, ge=1)
    render: RenderSpec | None = None
    max_pixels: int | None = Field(default=None, ge=1)
    sha256: str | None = None

    @model_validator(mode="after")
    def _series_has_files(self) -> ImageRef:
        if self.kind == "series" and not self.files:
            raise ValueError("an image of kind 'series' needs 'files'")
        return self


class ContentPart(_Strict):
    """A typed content part (OpenAI shape): text, or an image placeholder bound to ``images[index]``."""

    type: Literal["text", "image"]
    text: str | None = None
    index: int | None = Field(default=None, ge=0)


class Message(_Strict):
    role: Role
    content: str | list[ContentPart]

    def image_slots(self) -> int:
        """Number of image slots in this message (``<image>`` markers or image parts)."""
        if isinstance(self.content, str):
            return self.content.count(IMAGE_TOKEN)
        return sum(1 for p in self.content if p.type == "image")

    def text(self) -> str:
        """The message text with image slots removed."""
        if isinstance(self.content, str):
            return self.content.replace(IMAGE_TOKEN, "").strip()
        return "".join(p.text or "" for p in self.content if p.type == "text").strip()


class Meta(BaseModel):
    """Descriptive fields. Unknown keys are kept (readers may carry source-specific fields)."""

    model_config = ConfigDict(extra="allow")

    modality: str | None = None
    body_part: str | None = None
    question_type: str | None = None
    answer_type: AnswerType | None = None
    answer: str | None = None
    options: list[str] | None = None
    split: Split | None = None
    patient_hash: str | None = None
    source: str | None = None
    licence: str | None = None


class Sample(_Strict):
    """One training / evaluation sample."""

    schema_version: int = SCHEMA_VERSION
    id: str = Field(min_length=1)
    task: Task
    messages: list[Message] | None = None
    text: str | None = None
    images: list[ImageRef] = Field(default_factory=list)
    meta: Meta = Field(default_factory=Meta)

    @field_validator("schema_version")
    @classmethod
    def _check_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is not supported (this code reads {SCHEMA_VERSION})")
        return v

    @model_validator(mode="after")
    def _check_body(self) -> Sample:
        if (self.messages is None) == (self.text is None):
            raise ValueError("a sample has exactly one of 'messages' or 'text'")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' is empty")
        slots = self.image_slots()
        if slots != len(self.images):
            raise ValueError(f"{slots} image slot(s) in the text but {len(self.images)} image(s) listed")
        if self.messages is not None:
            for m in self.messages:
                if isinstance(m.content, list):
                    for p in m.content:
                        if p.type == "image" and p.index is not None and p.index >= len(self.images):
                            raise ValueError(f"image part index {p.index} out of range")
        return self

    def image_slots(self) -> int:
        if self.text is not None:
            return self.text.count(IMAGE_TOKEN)
        return sum(m.image_slots() for m in self.messages or [])

    def resolve(self, manifest_dir: str | Path, ref: ImageRef) -> Path:
        """Absolute path of an image reference (paths are relative to the manifest's folder)."""
        p = Path(ref.path)
        return p if p.is_absolute() else Path(manifest_dir) / p


def read_manifest(path: str | Path) -> Iterator[Sample]:
    """Yield samples from a JSONL manifest; a bad line raises ``ManifestError`` naming file and line."""
    path = Path(path)
    try:
        fh = path.open(encoding="utf-8")
    except OSError as e:
        raise ManifestError(f"{path}: cannot open manifest: {e.strerror}") from e
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: not valid JSON: {e.msg}") from e
            try:
                yield Sample.model_validate(record)
            except ValidationError as e:
                raise ManifestError(f"{path}:{lineno}: invalid sample: {_short(e)}") from e


def load_manifest(path: str | Path) -> list[Sample]:
    return list(read_manifest(path))


def write_manifest(path: str | Path, samples: Iterable[Sample | dict[str, Any]]) -> int:
    """Write samples as JSONL atomically (temp file + rename: never half-written). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for s in samples:
                sample = s if isinstance(s, Sample) else Sample.model_validate(s)
                fh.write(dump_sample(sample) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def dump_sample(sample: Sample) -> str:
    """One JSONL line; unset optional fields are omitted so files stay small and diffable."""
    return json.dumps(sample.model_dump(mode="json", exclude_none=True), ensure_ascii=False, sort_keys=False)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one manifest line (for other languages and tools)."""
    schema = Sample.model_json_schema()
    schema["$id"] = f"https://infimed.local/schema/manifest-v{SCHEMA_VERSION}.json"
    schema["title"] = f"InfiMed manifest sample (schema_version {SCHEMA_VERSION})"
    return schema


def _short(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "(sample)"
        parts.append(f"{loc}: {err['msg']}")
    more = "" if e.error_count() <= 3 else f" (+{e.error_count() - 3} more)"
    return "; ".join(parts) + more
