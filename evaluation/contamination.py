"""Train/test contamination check of an evaluation set against a training manifest.

Three signals, reported separately and together:

- **image**: perceptual hash (``imagehash.phash``, 64 bits) within ``max_distance`` bits of a training
  image — catches re-encoded, resized or slightly edited copies. Candidates come from a band index
  (pigeonhole: two hashes within d bits share at least one of d+1 equal bands), so the check stays
  fast on large manifests.
- **question**: sha256 of the normalised question text (lower case, punctuation and ``<image>``
  slots removed, MedEvalKit instructions stripped). Templated datasets reuse questions on purpose,
  so this signal alone does not flag an item; it is reported, and flags an item together with an
  image match (the same question about the same picture).
- **patient**: ``meta.patient_hash`` (or ``meta.study_hash``) seen in training — two images of one
  patient leak too.

An item is *contaminated* when its image or its patient/study was seen in training.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.manifest import ImageRef, Sample, read_manifest
from evaluation.prompts import _INSTRUCTIONS

log = logging.getLogger(__name__)

_INSTRUCTION_TEXTS = sorted({v for v in _INSTRUCTIONS.values()}, key=len, reverse=True)
_BANDS = 8  # 8 bands of 8 bits: exact for distances ≤ 7


def question_hash(text: str) -> str:
    """sha256 (hex, 16 chars) of a question after normalisation (see module docstring)."""
    t = text.replace("<image>", " ")
    for instr in _INSTRUCTION_TEXTS:
        t = t.replace(instr, " ")
    t = re.sub(r"[^\w\s]", " ", t.lower())
    t = re.sub(r"\s+", " ", t).strip()
    return hashlib.sha256(t.encode("utf-8")).hexdigest()[:16]


def _question_of(sample: Sample) -> str:
    q = getattr(sample.meta, "question", None)
    if isinstance(q, str) and q:
        return q
    for m in sample.messages or []:
        if m.role == "user":
            return m.text()
    return sample.text or ""


def _patient_keys(sample: Sample) -> set[str]:
    keys = set()
    for name in ("patient_hash", "study_hash"):
        v = getattr(sample.meta, name, None)
        if v:
            keys.add(f"{name}:{v}")
    return keys


def image_phash(path: Path, ref: ImageRef | None = None) -> int | None:
    """64-bit perceptual hash of an image file (first frame of a DICOM); ``None`` when undecodable."""
    import imagehash
    from PIL import Image, UnidentifiedImageError

    try:
        if ref is not None and ref.kind in ("dicom", "series") or str(path).lower().endswith(".dcm"):
            im = _dicom_preview(path)
        else:
            with Image.open(path) as opened:
                im = opened.convert("L")
        return int(str(imagehash.phash(im)), 16)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        log.warning("contamination: cannot hash an image (%s)", type(e).__name__)
        return None


def _dicom_preview(path: Path) -> Any:
    import numpy as np
    import pydicom
    from PIL import Image

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        arr = arr[0]
    arr = arr.astype("float32")
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo or 1.0) * 255.0
    return Image.fromarray(arr.astype(np.uint8)).convert("L")


def _middle_file(sample: Sample, root: Path, ref: ImageRef) -> Path:
    """The file hashed for an image slot: itself, or the middle file of a series."""
    if ref.kind == "series" and ref.files:
        return sample.resolve(root, ImageRef(path=ref.files[len(ref.files) // 2]))
    return sample.resolve(root, ref)


class _HashIndex:
    def __init__(self) -> None:
        self.bands: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(_BANDS)]
        self.hashes: list[int] = []

    def add(self, h: int) -> None:
        i = len(self.hashes)
        self.hashes.append(h)
        for b in range(_BANDS):
            self.bands[b][(h >> (8 * b)) & 0xFF].append(i)

    def nearest(self, h: int, max_distance: int) -> int | None:
        best: int | None = None
        seen: set[int] = set()
        for b in range(_BANDS):
            for i in self.bands[b].get((h >> (8 * b)) & 0xFF, ()):
                if i in seen:
                    continue
                seen.add(i)
                d = (h ^ self.hashes[i]).bit_count()
                if d <= max_distance and (best is None or d < best):
                    best = d
        return best


@dataclass
class ContaminationReport:
    """What overlaps with training; ``ids`` maps each signal to all flagged evaluation ids."""

    train_manifest: str
    n_eval: int
    n_train: int
    image: int = 0
    question: int = 0
    question_and_image: int = 0
    patient: int = 0
    contaminated: int = 0
    max_distance: int = 4
    ids: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self, max_ids: int = 200) -> dict[str, Any]:
        """JSON form; each id list is cut to ``max_ids`` (the counts stay exact)."""
        d = asdict(self)
        d["ids"] = {k: v[:max_ids] for k, v in self.ids.items()}
        return d


def check_contamination(
    eval_samples: Iterable[Sample],
    eval_root: Path,
    train_manifest: str | Path,
    *,
    max_distance: int = 4,
) -> ContaminationReport:
    """Compare evaluation samples (images resolved against ``eval_root``) with a training manifest."""
    if not 0 <= max_distance < _BANDS:
        raise ValueError(f"max_distance must be in 0…{_BANDS - 1}")
    train_path = Path(train_manifest)
    index = _HashIndex()
    train_questions: set[str] = set()
    train_patients: set[str] = set()
    n_train = 0
    for s in read_manifest(train_path):
        n_train += 1
        if s.messages is not None or s.text is not None:
            train_questions.add(question_hash(_question_of(s)))
        train_patients |= _patient_keys(s)
        for ref in s.images:
            h = image_phash(_middle_file(s, train_path.parent, ref), ref)
            if h is not None:
                index.add(h)
    samples = list(eval_samples)
    report = ContaminationReport(str(train_path), len(samples), n_train, max_distance=max_distance)
    flagged: dict[str, list[str]] = {
        "image": [],
        "question": [],
        "question_and_image": [],
        "patient": [],
        "contaminated": [],
    }
    for s in samples:
        img_hit = False
        for ref in s.images:
            h = image_phash(_middle_file(s, eval_root, ref), ref)
            if h is not None and index.nearest(h, max_distance) is not None:
                img_hit = True
                break
        q_hit = question_hash(_question_of(s)) in train_questions
        p_hit = bool(_patient_keys(s) & train_patients)
        for name, hit in (
            ("image", img_hit),
            ("question", q_hit),
            ("question_and_image", q_hit and img_hit),
            ("patient", p_hit),
            ("contaminated", img_hit or p_hit),
        ):
            if hit:
                flagged[name].append(s.id)
    for name, ids in flagged.items():
        setattr(report, name, len(ids))
    report.ids = flagged
    return report
