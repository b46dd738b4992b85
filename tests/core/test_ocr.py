"""Burned-in text: redaction with the real OCR extra on a generated DICOM, and the rules without it.

The DICOM is a secondary capture with a patient name, an ID and a date drawn into its pixels
beside a bright disc (the "anatomy"). With the ``ocr`` extra installed, ``policy="redact"`` must
black out the text and keep the disc; without it, flagged images are refused whatever the policy
asks, and unflagged ones pass untouched.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import core._redact as redact
from core.render import BurnedInTextError, render

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SIZE = 320
TEXT_LINES = [((8, 8), "DOE^JANE  1970-01-01"), ((8, SIZE - 30), "ID 12345678  ACC 998877")]
DISC = (90, 90, 230, 230)


def burned_in_dicom(*, modality: str = "OT", flag: str | None = None, text: bool = True) -> bytes:
    """A 320² MONOCHROME2 secondary capture: a grey disc, and (``text``) two lines of PHI burned in."""
    img = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(img)
    draw.ellipse(DISC, fill=140)
    if text:
        font = ImageFont.load_default(size=20)
        for xy, line in TEXT_LINES:
            draw.text(xy, line, fill=255, font=font)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    if flag is not None:
        ds.BurnedInAnnotation = flag
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.PixelData = np.asarray(img).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _text_box(index: int) -> tuple[slice, slice]:
    (x, y), line = TEXT_LINES[index]
    return slice(y, y + 20), slice(x, x + 10 * len(line))


# --------------------------------------------------------------------------- without OCR


@pytest.fixture
def no_ocr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_OCR", None)
    monkeypatch.setattr(redact, "ocr_engine", lambda: None)


@pytest.mark.parametrize(
    ("modality", "flag"), [("OT", "YES"), ("OT", None), ("US", None), ("CT", "YES")], ids=["yes", "ot", "us", "ct-yes"]
)
def test_without_ocr_flagged_images_are_refused_even_when_redaction_is_asked(no_ocr, modality, flag) -> None:
    data = burned_in_dicom(modality=modality, flag=flag)
    with pytest.raises(BurnedInTextError) as refused:
        render(data, None, None)  # the serving default: refuse
    assert ("BurnedInAnnotation = YES" if flag else "absent") in refused.value.reason
    with pytest.raises(BurnedInTextError, match=r"OCR extra \(pip install 'infimed\[ocr\]'"):
        render(data, None, None, policy="redact")
    images, record = render(data, None, None, policy="allow")  # reviewed data only
    assert record.burned_in and record.redacted_regions == 0
    assert np.asarray(images[0])[_text_box(0)].max() == 255  # allow keeps the pixels as they are


def test_without_ocr_unflagged_images_pass_untouched(no_ocr) -> None:
    data = burned_in_dicom(modality="CT", flag="NO")
    for policy in ("refuse", "redact"):
        images, record = render(data, None, None, policy=policy)
        assert record.burned_in is None and record.redacted_regions == 0
        assert np.asarray(images[0])[_text_box(0)].max() == 255  # the header says NO: nothing is done
    png = io.BytesIO()
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(png, format="PNG")
    images, record = render(png.getvalue(), None, None, policy="redact")  # plain images: OCR only when present
    assert record.redacted_regions == 0 and np.asarray(images[0]).max() == 7


# --------------------------------------------------------------------------- with the real OCR extra


@pytest.fixture(scope="module")
def ocr() -> None:
    if not redact.ocr_available():
        pytest.skip("the optional 'ocr' extra (rapidocr, onnxruntime) is not installed; see pyproject [ocr]")


def test_real_ocr_blacks_out_burned_in_text_and_keeps_the_image(ocr) -> None:
    data = burned_in_dicom(modality="OT")  # tag absent on a capture: text assumed
    images, record = render(data, None, None, policy="redact")
    out = np.asarray(images[0])[..., 0]
    assert record.burned_in and record.redacted_regions >= 2
    for i in range(len(TEXT_LINES)):
        assert out[_text_box(i)].max() == 0, TEXT_LINES[i][1]  # every text pixel is gone
    cy, cx = (DISC[1] + DISC[3]) // 2, (DISC[0] + DISC[2]) // 2
    assert out[cy - 40 : cy + 40, cx - 40 : cx + 40].min() == 140  # the anatomy is untouched
    # Read back: OCR finds nothing left in the output.
    leftover = redact.redact_text(np.ascontiguousarray(out), label="check", required=True)[1]
    assert leftover == 0


def test_real_ocr_passes_an_image_without_text(ocr) -> None:
    data = burned_in_dicom(modality="US", text=False)  # tag absent on US: checked, nothing found
    images, record = render(data, None, None, policy="redact")
    assert record.burned_in and record.redacted_regions == 0
    assert np.array_equal(np.asarray(images[0])[..., 0], np.asarray(pydicom.dcmread(io.BytesIO(data)).pixel_array))
