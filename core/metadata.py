"""Safe metadata: a conservative allowlist of non-identifying DICOM attributes.

Only the attributes listed in :data:`SAFE_TAGS` ever leave this module, as a dict of plain values or
as a one-line prompt context (``"CT, chest, slice thickness 1.25 mm"``). Names, identifiers, dates,
institutions, device serials, free-text comments and UIDs are never on the list; values are
checked against a strict pattern so a mis-filled field cannot smuggle text out either.
"""

from __future__ import annotations

import re
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

# keyword → how its value is rendered: "code" (short coded string), "number", "numbers".
SAFE_TAGS: dict[str, str] = {
    "Modality": "code",
    "BodyPartExamined": "code",
    "ViewPosition": "code",
    "Laterality": "code",
    "ImageLaterality": "code",
    "PatientPosition": "code",
    "PhotometricInterpretation": "code",
    "SliceThickness": "number",
    "PixelSpacing": "numbers",
    "ImagerPixelSpacing": "numbers",
    "SpacingBetweenSlices": "number",
    "KVP": "number",
    "Rows": "number",
    "Columns": "number",
    "NumberOfFrames": "number",
    "ContrastBolusAgentPhase": "code",
    "MRAcquisitionType": "code",
    "ScanningSequence": "code",
    "EchoTime": "number",
    "RepetitionTime": "number",
    "MagneticFieldStrength": "number",
    "ConvolutionKernel": "code",
}

_SAFE_TAG_NUMBERS = tuple((kw, tag_for_keyword(kw), kind) for kw, kind in SAFE_TAGS.items())
_CODE = re.compile(r"^[A-Z0-9_ \-]{1,32}$")
_MODALITY_WORDS = {
    "CT": "CT",
    "MR": "MRI",
    "CR": "X-ray (CR)",
    "DX": "X-ray (DX)",
    "DR": "X-ray",
    "MG": "mammography",
    "US": "ultrasound",
    "PT": "PET",
    "NM": "nuclear medicine",
    "XA": "angiography",
    "RF": "fluoroscopy",
    "OT": "other",
    "SC": "secondary capture",
}


def _clean(value: Any, kind: str) -> Any:
    if value is None or value == "":
        return None
    try:
        if kind == "number":
            v = float(value)
            return int(v) if v.is_integer() else round(v, 4)
        if kind == "numbers":
            items = list(value) if not isinstance(value, (str, bytes)) else [value]
            return [round(float(v), 4) for v in items][:3]
    except (TypeError, ValueError):
        return None
    items = list(value) if not isinstance(value, (str, bytes)) else [value]
    text = "\\".join(str(v).strip().upper() for v in items)
    return text if _CODE.match(text) else None


def safe_metadata(ds: Dataset) -> dict[str, Any]:
    """The allowlisted attributes present in ``ds`` (keyword → value); nothing else, ever."""
    out: dict[str, Any] = {}
    for keyword, tag, kind in _SAFE_TAG_NUMBERS:
        if tag not in ds:  # by tag number: several times faster than keyword access in pydicom
            continue
        try:
            value = _clean(ds[tag].value, kind)
        except (TypeError, ValueError, AttributeError, KeyError):
            value = None
        if value is not None:
            out[keyword] = value
    return out


def metadata_text(meta: dict[str, Any]) -> str:
    """A one-line prompt context from :func:`safe_metadata`'s output (only allowlisted keys are read)."""
    parts: list[str] = []
    modality = meta.get("Modality")
    if modality:
        parts.append(_MODALITY_WORDS.get(modality, str(modality)))
    if meta.get("BodyPartExamined"):
        parts.append(str(meta["BodyPartExamined"]).lower())
    if meta.get("ViewPosition"):
        parts.append(f"{meta['ViewPosition']} view")
    lat = meta.get("ImageLaterality") or meta.get("Laterality")
    if lat in ("L", "R", "B"):
        parts.append({"L": "left", "R": "right", "B": "both sides"}[lat])
    if meta.get("SliceThickness") is not None:
        parts.append(f"slice thickness {meta['SliceThickness']} mm")
    spacing = meta.get("PixelSpacing") or meta.get("ImagerPixelSpacing")
    if spacing:
        parts.append("pixel spacing " + " x ".join(f"{v:g}" for v in spacing) + " mm")
    if meta.get("NumberOfFrames") and meta["NumberOfFrames"] > 1:
        parts.append(f"{meta['NumberOfFrames']} frames")
    return ", ".join(parts)
