"""Clinician feedback on answers: JSON lines with the comment scrubbed by :func:`core.phi.scrub`.

A record always holds the request id, model, rating (``up`` | ``down`` | ``flag``), the scrubbed comment
and a timestamp. Linking the question and answer is opt-in (``link=True``): then the scrubbed question
and answer, the render settings and the rendered images the model saw (already de-identified 8-bit
PNGs) are kept too, so flagged answers can become a curation manifest (:func:`feedback_manifest`).

    {"time": "…", "request_id": "ui-…", "model": "tiny", "rating": "flag", "comment": "wrong side, seen on [DATE]",
     "linked": true, "question": "…", "answer": "…", "settings": ["window lung"], "images": ["images/ui-…-0.png"]}
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.phi import scrub
from ui.messages import Turn

log = logging.getLogger(__name__)
RATINGS = ("up", "down", "flag")
_lock = threading.Lock()


def feedback_record(
    turn: Turn, *, rating: str, comment: str = "", link: bool = False, seen: Turn | None = None
) -> dict[str, Any]:
    """The JSON record for feedback on ``turn`` (pure: no I/O). Raises ValueError for an unknown rating.

    ``seen`` is the turn whose images the model had in context (a follow-up question carries none of its
    own); it defaults to ``turn``.
    """
    if rating not in RATINGS:
        raise ValueError(f"rating must be one of {', '.join(RATINGS)}, got {rating!r}")
    rec: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "request_id": turn.request_id,
        "model": turn.model,
        "rating": rating,
        "comment": scrub(comment.strip())[:2000],
        "linked": bool(link),
    }
    if link:
        rec["question"] = scrub(turn.question)
        rec["answer"] = scrub(turn.answer)
        rec["settings"] = list((seen or turn).settings)
        rec["stopped"] = turn.stopped
    return rec


class FeedbackStore:
    """Appends records to ``<dir>/feedback.jsonl`` (mode 0600); linked images go to ``<dir>/images/``."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.path = self.dir / "feedback.jsonl"

    def add(
        self, turn: Turn, *, rating: str, comment: str = "", link: bool = False, seen: Turn | None = None
    ) -> dict[str, Any]:
        """Build, store and return the record for feedback on ``turn`` (images from ``seen``, default ``turn``)."""
        rec = feedback_record(turn, rating=rating, comment=comment, link=link, seen=seen)
        with _lock:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if link:
                rec["images"] = self._save_images(turn.request_id, (seen or turn).preview)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        log.info("feedback %s on request %s stored", rating, turn.request_id)
        return rec

    def _save_images(self, request_id: str, preview: list[str]) -> list[str]:
        out = []
        (self.dir / "images").mkdir(exist_ok=True, mode=0o700)
        safe_id = "".join(c for c in request_id if c.isalnum() or c in "-_") or "unknown"
        for i, url in enumerate(preview):
            head, _, payload = url.partition(",")
            if head != "data:image/png;base64":
                continue
            rel = f"images/{safe_id}-{i}.png"
            (self.dir / rel).write_bytes(base64.b64decode(payload))
            out.append(rel)
        return out


def feedback_manifest(feedback_path: Path, out_path: Path, *, ratings: tuple[str, ...] = ("flag", "down")) -> int:
    """Write the linked records with one of ``ratings`` as a curation manifest (``core.manifest``); returns the count.

    Each becomes a ``vqa`` sample: the question with its images (paths relative to the manifest, as the
    manifest schema wants them), the model's answer, and the clinician's scrubbed comment in
    ``meta.comment`` (curators write the corrected answer). See :func:`export_feedback` for the counts.
    """
    return export_feedback(feedback_path, out_path, ratings=ratings)["written"]


def export_feedback(
    feedback_path: Path, out_path: Path, *, ratings: tuple[str, ...] = ("flag", "down")
) -> dict[str, int]:
    """:func:`feedback_manifest` with counts: ``written``, ``other_rating``, ``not_linked`` (a record without
    the opt-in holds no question or answer, so it cannot become a sample), ``missing_images``."""
    from core.manifest import Sample, write_manifest

    unknown = sorted(set(ratings) - set(RATINGS))
    if unknown:
        raise ValueError(f"unknown rating(s) {', '.join(unknown)}; known: {', '.join(RATINGS)}")
    feedback_path, out_path = Path(feedback_path), Path(out_path)
    counts = {"written": 0, "other_rating": 0, "not_linked": 0, "missing_images": 0}
    samples = []
    for line in feedback_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("rating") not in ratings:
            counts["other_rating"] += 1
            continue
        if not rec.get("linked"):
            counts["not_linked"] += 1
            continue
        images = [(feedback_path.parent / p).resolve() for p in rec.get("images", [])]
        if not all(p.is_file() for p in images):
            counts["missing_images"] += 1
            continue
        rel = [os.path.relpath(p, out_path.resolve().parent) for p in images]
        content = [{"type": "image", "index": i} for i in range(len(rel))] + [{"type": "text", "text": rec["question"]}]
        samples.append(Sample(id=f"feedback-{rec['request_id']}", task="vqa",
                              messages=[{"role": "user", "content": content}, {"role": "assistant", "content": rec["answer"]}],
                              images=[{"path": p} for p in rel],
                              meta={"source": "ui-feedback", "feedback": rec["rating"], "comment": rec["comment"], "model": rec["model"]}))  # fmt: skip
    counts["written"] = write_manifest(out_path, samples)
    return counts
