"""Burned-in text redaction with OCR (optional extra ``rapidocr-onnxruntime``, models inside the wheel)."""

from __future__ import annotations

from typing import Any

import numpy as np

from core._errors import BurnedInTextError


def redact_text(arr: np.ndarray, *, label: str, required: bool) -> tuple[np.ndarray, int]:
    """Black out text regions found by OCR (``rapidocr-onnxruntime`` extra). Returns (pixels, regions).

    Without the extra: raises :class:`BurnedInTextError` when ``required`` (the header says text is
    or may be burned in), else returns the pixels unchanged.
    """
    try:
        from rapidocr_onnxruntime import RapidOCR  # optional extra, models ship inside the wheel
    except ImportError as e:
        if required:
            raise BurnedInTextError(
                label,
                "burned-in text may be present and redaction needs the OCR extra (pip install rapidocr-onnxruntime)",
            ) from e
        return arr, 0
    engine = _ocr_engine(RapidOCR)
    rgb = arr if arr.ndim == 3 else np.stack([arr] * 3, axis=-1)
    result, _ = engine(rgb)
    out = arr.copy()
    regions = 0
    for item in result or []:
        box = np.asarray(item[0], dtype=float)
        x0, y0 = np.floor(box.min(axis=0)).astype(int)
        x1, y1 = np.ceil(box.max(axis=0)).astype(int)
        out[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = 0
        regions += 1
    return out, regions


_OCR: Any = None


def _ocr_engine(factory: Any) -> Any:
    global _OCR
    if _OCR is None:
        _OCR = factory()
    return _OCR
