from __future__ import annotations

import sys
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).parent))
from _files import tf  # noqa: E402

from core.metadata import SAFE_TAGS, metadata_text, safe_metadata  # noqa: E402


def test_only_allowlisted_tags_leave() -> None:
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    ds.PatientName = "Doe^Jane"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "Jane Doe's view, call 617-555-0199"  # mis-filled: refused by the pattern
    meta = safe_metadata(ds)
    assert set(meta) <= set(SAFE_TAGS)
    assert meta["Modality"] == "CT" and meta["BodyPartExamined"] == "CHEST" and "ViewPosition" not in meta
    assert meta["PixelSpacing"] == [0.6615, 0.6615]
    text = metadata_text(meta)
    assert text.startswith("CT, chest") and "Doe" not in text and "slice thickness" in text
    assert "PatientName" not in SAFE_TAGS and "PatientID" not in SAFE_TAGS and "StudyDate" not in SAFE_TAGS


def test_cr_context_line() -> None:
    meta = safe_metadata(pydicom.dcmread(tf("RG1_UNCR.dcm"), stop_before_pixels=True))
    assert meta["Modality"] == "CR"
    assert metadata_text(meta).startswith("X-ray (CR)")
