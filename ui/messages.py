"""Pure functions between the UI's state and the public API (tested without a browser).

- :class:`ImagingOptions` → the wire ``dicom`` extension (:func:`dicom_extension`);
- the study's files + options → OpenAI image parts (:func:`image_parts`);
- the chat history → OpenAI ``messages`` (:func:`build_messages`);
- streamed chunks (as dicts) → text, finish reason, render records (:class:`StreamText`).

Nothing here does I/O except reading the (already de-identified) study files into data URLs.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "auto": None,  # the file's own window, else a percentile window
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    # Common CT windows the server has no name for: sent as centre/width (Radiopaedia's values).
    "liver": (30.0, 150.0),
    "stroke": (40.0, 40.0),
    "subdural": (75.0, 215.0),
    "temporal bone": (600.0, 2800.0),
}
SERVER_PRESETS = frozenset({"auto", "lung", "mediastinum", "soft_tissue", "bone", "brain"})  # named on the wire
FrameMode = Literal["auto", "current", "uniform"]


@dataclass(frozen=True)
class ImagingOptions:
    """What the clinician chose in the imaging controls.

    ``window``: a preset name of :data:`WINDOW_PRESETS` or ``"custom"`` (then ``center``/``width``
    in HU are used). ``composite`` True puts three CT windows into R, G, B (``ct3``; the window is
    then ignored, as the gateway requires). ``frame_mode``: ``auto`` (the renderer picks), ``current``
    (only ``frame``, the navigator's slice/frame index) or ``uniform`` (``uniform_n`` evenly spaced).
    """

    window: str = "auto"
    center: float = 40.0
    width: float = 400.0
    composite: bool = False
    frame_mode: FrameMode = "auto"
    frame: int = 0
    uniform_n: int = 4


def dicom_extension(opts: ImagingOptions, *, frames_total: int = 1) -> dict[str, Any]:
    """The ``image_url.dicom`` object of the wire format for ``opts``.

    ``frames`` is only sent for a multi-frame file or a series (``frames_total`` > 1); a
    ``current`` frame index is clamped into ``[0, frames_total)``.
    """
    ext: dict[str, Any] = {}
    if opts.composite:
        ext["composite"] = "ct3"
    elif opts.window == "custom":
        if opts.width <= 0:
            raise ValueError(f"window width must be > 0, got {opts.width}")
        ext["window"] = {"center": float(opts.center), "width": float(opts.width)}
    elif opts.window in SERVER_PRESETS:
        ext["window"] = opts.window
    elif (cw := WINDOW_PRESETS.get(opts.window)) is not None:
        ext["window"] = {"center": cw[0], "width": cw[1]}
    else:
        raise ValueError(
            f"unknown window preset {opts.window!r}; choose one of {', '.join([*WINDOW_PRESETS, 'custom'])}"
        )
    if frames_total > 1:
        if opts.frame_mode == "current":
            ext["frames"] = [min(max(int(opts.frame), 0), frames_total - 1)]
        elif opts.frame_mode == "uniform":
            ext["frames"] = f"uniform:{max(1, min(int(opts.uniform_n), frames_total))}"
        else:
            ext["frames"] = "auto"
    return ext


def describe_options(ext: dict[str, Any] | None) -> str:
    """A short human line for a ``dicom`` extension, e.g. ``window lung · frames [3]``."""
    if not ext:
        return "as uploaded"
    bits = []
    if ext.get("composite"):
        bits.append("CT 3-window composite")
    w = ext.get("window")
    if isinstance(w, dict):
        bits.append(f"window C {w['center']:g} / W {w['width']:g}")
    elif w:
        bits.append(f"window {w}")
    if "frames" in ext:
        bits.append(f"frames {ext['frames']}")
    return " · ".join(bits)


@dataclass
class StudyItem:
    """One de-identified input of the session: a plain image, a DICOM file, or one series (several files)."""

    kind: Literal["image", "dicom", "series"]
    paths: list[Path]
    label: str  # shown to the clinician; never the uploaded file name (it may carry a patient name)
    mime: str = "application/dicom"
    frames_total: int = 1
    modality: str | None = None

    @property
    def is_dicom(self) -> bool:
        return self.kind in ("dicom", "series")


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def image_parts(items: list[StudyItem], opts: ImagingOptions) -> list[dict[str, Any]]:
    """OpenAI content parts for the study: one part per plain image, one per DICOM file.

    Every file of a series carries the same ``dicom`` options (the gateway groups them by
    SeriesInstanceUID and refuses conflicting options).
    """
    parts: list[dict[str, Any]] = []
    for item in items:
        if not item.is_dicom:
            for p in item.paths:
                parts.append({"type": "image_url", "image_url": {"url": _data_url(p, item.mime)}})
            continue
        ext = dicom_extension(opts, frames_total=item.frames_total)
        for p in item.paths:
            parts.append(
                {"type": "image_url", "image_url": {"url": _data_url(p, "application/dicom"), "dicom": dict(ext)}}
            )
    return parts


@dataclass
class Turn:
    """One question and its answer, with what was attached and what came back."""

    question: str
    attachments: list[dict[str, Any]] = field(default_factory=list)  # image parts sent with this question
    settings: list[str] = field(default_factory=list)  # human lines: render settings per attachment
    preview: list[str] = field(default_factory=list)  # PNG data URLs of what the model saw
    answer: str = ""
    model: str = ""
    request_id: str = ""
    finish_reason: str | None = None
    stopped: bool = False
    error: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)


OMITTED_IMAGES = "[images from an earlier question are not re-sent]"


def build_messages(turns: list[Turn], *, system: str | None = None, keep_images: int = 1) -> list[dict[str, Any]]:
    """OpenAI ``messages`` for ``turns`` (the last one is the new question, its answer still empty).

    Images travel with the question they were asked with. Only the ``keep_images`` most recent turns
    that carry images keep them (the gateway's per-request image limit); older ones get a text note.
    Failed or empty answers are left out so the model never sees an error message as its own words.
    """
    with_images = [i for i, t in enumerate(turns) if t.attachments]
    keep = set(with_images[-keep_images:]) if keep_images > 0 else set()
    messages: list[dict[str, Any]] = []
    if system and system.strip():
        messages.append({"role": "system", "content": system.strip()})
    for i, t in enumerate(turns):
        last = i == len(turns) - 1
        if t.attachments and i in keep:
            content: str | list[dict[str, Any]] = [*t.attachments, {"type": "text", "text": t.question}]
        elif t.attachments:
            content = f"{OMITTED_IMAGES}\n{t.question}"
        else:
            content = t.question
        if not last and (t.error or not t.answer):
            continue  # an unanswered question: drop it with its (missing) answer
        messages.append({"role": "user", "content": content})
        if not last:
            messages.append({"role": "assistant", "content": t.answer})
    return messages


@dataclass
class StreamText:
    """Accumulates streamed ``chat.completion.chunk`` dicts into the answer text.

    ``feed(chunk)`` returns the new text delta (possibly empty). Also collects the id, model,
    finish reason, usage and the gateway's ``infimed.render_records`` (sent in a chunk without choices).
    """

    text: str = ""
    id: str | None = None
    model: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, chunk: dict[str, Any]) -> str:
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        ext = chunk.get("infimed")
        if isinstance(ext, dict) and isinstance(ext.get("render_records"), list):
            self.records = ext["render_records"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        delta = ""
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                delta += piece
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        self.text += delta
        return delta


def stream_to_text(chunks: list[dict[str, Any]]) -> str:
    """The whole answer of a list of streamed chunks (convenience over :class:`StreamText`)."""
    acc = StreamText()
    for c in chunks:
        acc.feed(c)
    return acc.text


def chat_display(turns: list[Turn]) -> list[dict[str, str]]:
    """The Chatbot's value (messages format) for ``turns``: attachments as a short note, markers for stops and errors."""
    out: list[dict[str, str]] = []
    for t in turns:
        note = (
            f"\n\n_({len(t.settings)} image input{'s' if len(t.settings) != 1 else ''}: {'; '.join(t.settings)})_"
            if t.settings
            else ""
        )
        out.append({"role": "user", "content": t.question + note})
        answer = t.answer
        if not answer and t.finish_reason and not t.error:
            answer = "_(the model returned an empty answer)_"
        if t.stopped:
            answer += "\n\n_[stopped by the user]_"
        if t.error:
            answer = (answer + "\n\n" if answer else "") + f"⚠️ {t.error}"
        # Always one assistant message per turn, so message index // 2 is the turn index (feedback).
        out.append({"role": "assistant", "content": answer or "…"})
    return out
