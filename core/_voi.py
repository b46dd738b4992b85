"""Grey-scale pixel transforms: modality LUT → VOI (window / VOI LUT) → MONOCHROME1 → 8 bits.

The functions follow DICOM PS3.3 C.11 (Modality LUT, VOI LUT, window function) and are pure:
``(values, parameters) -> values``. For integer pixel data of up to 16 bits the whole chain is
evaluated once over every possible stored value and applied as one ``uint8`` lookup table
(:func:`gray_lut`), which is exact and several times faster than float arithmetic per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

# Named windows (centre, width) in modality units (HU for CT). Documented in docs/imaging.md.
PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (60.0, 400.0),
    "liver": (60.0, 160.0),
    "stroke": (40.0, 40.0),
}
PRESET_ALIASES = {"soft-tissue": "soft_tissue", "softtissue": "soft_tissue", "mediastinal": "mediastinum"}

# Composite modes: three windows into the R, G and B channels.
COMPOSITES: dict[str, tuple[str, str, str]] = {
    "ct3": ("lung", "mediastinum", "bone"),
}

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
AUTO_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Window:
    """A resolved VOI window: centre/width in modality units, the function, and where it came from.

    ``source`` is ``preset`` (``name`` set), ``explicit``, ``file`` (WindowCenter/WindowWidth),
    ``voi_lut`` (VOI LUT Sequence, centre/width then describe the LUT's input range) or ``auto``
    (percentiles of the image).
    """

    center: float
    width: float
    source: str
    name: str | None = None
    function: VoiFunction = "LINEAR"


def resolve_preset(name: str) -> Window:
    """The preset window called ``name`` (case-insensitive); ``KeyError`` lists the known names."""
    key = PRESET_ALIASES.get(name.lower(), name.lower())
    if key not in PRESETS:
        raise KeyError(f"unknown window preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    c, w = PRESETS[key]
    return Window(center=c, width=w, source="preset", name=key)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Map modality values to ``[0, 1]`` float64 with the DICOM window function (PS3.3 C.11.2.1.2).

    LINEAR: ``((x - (c - 0.5)) / (w - 1) + 0.5)`` clipped, with ``x <= c - 0.5 - (w-1)/2`` → 0 and
    ``x > c - 0.5 + (w-1)/2`` → 1 (a width of 1 is a threshold at ``c - 0.5``). LINEAR_EXACT:
    ``(x - c) / w + 0.5``. SIGMOID: ``1 / (1 + exp(-4 (x - c) / w))``.
    """
    x = np.asarray(values, dtype=np.float64)
    c, w = float(window.center), float(window.width)
    if window.function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if window.function == "LINEAR_EXACT":
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    if w <= 1.0:
        return (x > c - 0.5).astype(np.float64)
    return np.clip((x - (c - 0.5)) / (w - 1.0) + 0.5, 0.0, 1.0)


def to_uint8(unit: np.ndarray, *, invert: bool = False) -> np.ndarray:
    """``[0, 1]`` floats → ``uint8`` (round half to even); ``invert`` applies MONOCHROME1 (255 - v)."""
    out = np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
    return 255 - out if invert else out


def stored_domain(bits_index: int, *, signed: bool, bits_stored: int) -> np.ndarray:
    """Stored pixel value for every possible raw index ``0 .. 2**bits_index - 1`` (int64).

    Raw words may carry unused high bits (overlays, garbage): they are masked to ``bits_stored``
    and sign-extended when ``signed`` (PixelRepresentation 1), as PS3.5 8.1.1 prescribes.
    """
    raw = np.arange(1 << bits_index, dtype=np.int64)
    bits_stored = min(bits_stored, bits_index)
    values = raw & ((1 << bits_stored) - 1)
    if signed:
        sign = 1 << (bits_stored - 1)
        values = np.where(values & sign, values - (1 << bits_stored), values)
    return values


def percentile_window(modality_values: np.ndarray) -> Window:
    """An ``auto`` window spanning the 0.5th–99.5th percentiles of the given modality values."""
    flat = np.asarray(modality_values, dtype=np.float64).ravel()
    if flat.size == 0:
        return Window(center=0.5, width=1.0, source="auto")
    lo, hi = np.percentile(flat, AUTO_PERCENTILES)
    if hi <= lo:
        hi = lo + 1.0
    return Window(center=float((lo + hi) / 2.0), width=float(hi - lo), source="auto")


def sample_for_percentiles(frame: np.ndarray, target: int = 65536) -> np.ndarray:
    """A deterministic strided subsample of a 2-D frame, about ``target`` pixels, for percentiles."""
    step = max(1, int(np.sqrt(frame.size / target)))
    return frame[::step, ::step]


def gray_lut(modality_of_domain: np.ndarray, window: Window, *, invert: bool) -> np.ndarray:
    """The ``uint8`` table for every raw index: window then MONOCHROME1 inversion."""
    return to_uint8(apply_window(modality_of_domain, window), invert=invert)
