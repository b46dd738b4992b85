"""Burned-in text redaction with OCR (optional extra ``ocr``: RapidOCR on ONNX Runtime, models inside the wheel).

``rapidocr`` ≥ 3 (import name ``rapidocr``, OpenCV headless) is preferred; the older
``rapidocr-onnxruntime`` 1.x (import name ``rapidocr_onnxruntime``) is accepted too. Neither is
downloaded at run time: both wheels ship their detection and recognition models.

Shared OCR entry points: the file name keeps its underscore, but these names are public, for every
package that needs OCR (today ``core.render`` and ``curation.scorers._ocr``, the ``safety.burned_in``
scorer), so that a curated image and a rendered one are read by one engine under one rule:

- :func:`ocr_engine` — the process-wide engine, loaded once, or ``None`` without the extra; it is cached
  in the module attribute ``_OCR`` (tests put a fake there);
- :func:`detections` — ``(box, text, score)`` triples from an engine's result, whichever RapidOCR API
  produced it;
- ``MIN_SCORE`` — with at least two letters or digits, what counts as text; ``OCR_HINT`` — the install
  hint for error messages;
- :func:`redact_text` and :func:`ocr_available` — the renderer's redaction.

Recognised text is never logged: :func:`redact_text` uses only the boxes, to black them out, and callers
of :func:`detections` keep the text in memory.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from core._errors import BurnedInTextError

OCR_HINT = "pip install 'infimed[ocr]' (rapidocr and onnxruntime)"
_MARGIN = 2  # pixels added around each detected box
MIN_SCORE = 0.5  # recognition confidence below which a detection is not treated as text


def redact_text(arr: np.ndarray, *, label: str, required: bool) -> tuple[np.ndarray, int]:
    """Black out text regions found by OCR. Returns (pixels, number of regions).

    ``arr`` is ``uint8`` H×W or H×W×3, before resizing (OCR sees full resolution). Without the OCR
    extra: raises :class:`BurnedInTextError` when ``required`` (the header says text is or may be
    burned in), else returns the pixels unchanged.
    """
    engine = ocr_engine()
    if engine is None:
        if required:
            raise BurnedInTextError(
                label, f"burned-in text may be present and redaction needs the OCR extra ({OCR_HINT})"
            )
        return arr, 0
    rgb = arr if arr.ndim == 3 else np.stack([arr] * 3, axis=-1)
    out = arr.copy()
    regions = 0
    for box, text, score in detections(engine(np.ascontiguousarray(rgb))):
        # A region counts as text when it reads as ≥ 2 letters or digits with some confidence: a lone
        # glyph is what a round structure (a disc, a vessel, a marker) is misread as, and carries no PHI.
        if score < MIN_SCORE or sum(c.isalnum() for c in text) < 2:
            continue
        x0, y0 = np.floor(box.min(axis=0)).astype(int)
        x1, y1 = np.ceil(box.max(axis=0)).astype(int)
        out[max(0, y0 - _MARGIN) : y1 + _MARGIN, max(0, x0 - _MARGIN) : x1 + _MARGIN] = 0
        regions += 1
    return out, regions


def ocr_available() -> bool:
    """True when an OCR engine can be loaded (the ``ocr`` extra is installed)."""
    return ocr_engine() is not None


def detections(result: Any) -> list[tuple[np.ndarray, str, float]]:
    """(4×2 box, text, score) from either API: rapidocr 3 returns an object with ``boxes``, ``txts``,
    ``scores``; rapidocr-onnxruntime 1.x returns ``([[box, text, score], …] | None, elapsed)``."""
    if hasattr(result, "boxes"):
        if result.boxes is None:
            return []
        texts = result.txts or [""] * len(result.boxes)
        scores = result.scores or [0.0] * len(result.boxes)
        return [(np.asarray(b, dtype=float), str(t), float(s)) for b, t, s in zip(result.boxes, texts, scores)]
    items = result[0] if isinstance(result, tuple) else result
    return [(np.asarray(item[0], dtype=float), str(item[1]), float(item[2])) for item in items or []]


_OCR: Any = None


def ocr_engine() -> Any:
    """The process-wide OCR engine (loaded once: ~1–2 s), or None when the extra is absent."""
    global _OCR
    if _OCR is None:
        try:
            from rapidocr import RapidOCR
        except ImportError:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError:
                return None
        _OCR = RapidOCR()
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)  # its INFO lines name model files only; keep logs quiet
    return _OCR
