"""Optional OCR of burned-in text, on the same engine as the renderer's redaction (``core._redact.ocr_engine``).

The ``ocr`` extra (``pip install 'infimed[ocr]'``: RapidOCR on ONNX Runtime, models inside the wheel;
``rapidocr`` 3, or the older ``rapidocr-onnxruntime`` 1.x) provides it; nothing is downloaded. One engine
per process, shared with ``core.render``. A detection counts as text by the renderer's own rule: recognition
confidence ≥ ``MIN_SCORE`` and at least two letters or digits (a lone glyph is what a round structure is
misread as).
"""

from __future__ import annotations

import numpy as np


def burned_in_text(gray: np.ndarray) -> str:
    """All text OCR finds in the image, joined by spaces (kept in memory only: callers never log it)."""
    from core._redact import MIN_SCORE, OCR_HINT, detections, ocr_engine

    engine = ocr_engine()
    if engine is None:
        raise ValueError(f"safety.burned_in: ocr: true needs the ocr extra ({OCR_HINT})")
    found = detections(engine(np.ascontiguousarray(np.stack([gray] * 3, axis=-1))))
    return " ".join(t for _, t, s in found if s >= MIN_SCORE and sum(c.isalnum() for c in t) >= 2)
