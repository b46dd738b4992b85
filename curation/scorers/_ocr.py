"""Optional OCR of burned-in text with ``rapidocr-onnxruntime`` (its models ship in the wheel)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=1)
def _engine() -> Any:
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as e:
        raise ValueError(
            "safety.burned_in: ocr: true needs the optional package rapidocr-onnxruntime "
            "(pip install rapidocr-onnxruntime)"
        ) from e
    return RapidOCR()


def burned_in_text(gray: np.ndarray) -> str:
    """All text OCR finds in the image, joined by spaces."""
    result, _ = _engine()(np.stack([gray] * 3, axis=-1))
    return " ".join(str(r[1]) for r in result or [])
