"""Uploads are de-identified, grouped into series, stripped of metadata, and the raw files deleted."""

from __future__ import annotations

import io
import secrets
import zipfile
from pathlib import Path

import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from core.deid import Deidentifier
from core.phantoms import generate_series
from ui.ingest import ingest_uploads


@pytest.fixture
def deid():
    return Deidentifier(secrets.token_bytes(32))


def test_dicom_is_deidentified_and_raw_upload_deleted(tmp_path, deid):
    src = Path(get_testdata_file("CT_small.dcm"))
    original = pydicom.dcmread(src)
    upload_dir = tmp_path / "gradio" / "abc123"
    upload_dir.mkdir(parents=True)
    raw = upload_dir / "Smith_John_CT.dcm"  # a name that could identify the patient
    raw.write_bytes(src.read_bytes())
    res = ingest_uploads([raw], tmp_path / "session", deid, delete_sources=True)
    assert not raw.exists() and not upload_dir.exists()
    assert len(res.items) == 1 and res.warnings == []
    item = res.items[0]
    assert item.kind == "dicom" and item.modality == "CT" and "Smith" not in item.label
    out = pydicom.dcmread(item.paths[0])
    assert str(out.PatientName).startswith("ANON-") and str(out.PatientName) != str(original.PatientName)
    assert out.SOPInstanceUID != original.SOPInstanceUID
    assert out.PatientIdentityRemoved == "YES"
    assert (out.pixel_array == original.pixel_array).all()


def test_series_files_and_zip_become_one_series(tmp_path, deid):
    files = generate_series(tmp_path / "series", slices=4, seed=1, size=64)
    res = ingest_uploads(files, tmp_path / "s1", deid)
    assert [(i.kind, i.frames_total, len(i.paths)) for i in res.items] == [("series", 4, 4)]
    assert all(f.exists() for f in files)  # sources kept when delete_sources is False (examples)
    uids = {str(pydicom.dcmread(p).SeriesInstanceUID) for p in res.items[0].paths}
    assert len(uids) == 1 and uids != {str(pydicom.dcmread(files[0]).SeriesInstanceUID)}

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            zf.write(f, arcname=f"../../evil/{f.name}")  # member names are never used as paths
    z = tmp_path / "series.zip"
    z.write_bytes(buf.getvalue())
    res = ingest_uploads([z], tmp_path / "s2", deid)
    assert [(i.kind, i.frames_total) for i in res.items] == [("series", 4)]
    assert not (tmp_path / "evil").exists()
    assert all(p.parent == tmp_path / "s2" for p in res.items[0].paths)


def test_multiframe_file_is_its_own_item(tmp_path, deid):
    res = ingest_uploads([Path(get_testdata_file("rtdose.dcm"))], tmp_path / "s", deid)
    assert [(i.kind, i.frames_total) for i in res.items] == [("dicom", 15)]


def test_image_metadata_is_stripped(tmp_path, deid):
    img = Image.new("RGB", (32, 24), (200, 10, 10))
    exif = Image.Exif()
    exif[0x010E] = "Patient Jane Doe 1970-01-01"  # ImageDescription
    src = tmp_path / "photo.jpg"
    img.save(src, format="JPEG", exif=exif.tobytes())
    assert b"Jane Doe" in src.read_bytes()
    res = ingest_uploads([src], tmp_path / "s", deid)
    item = res.items[0]
    assert item.kind == "image" and item.mime == "image/png" and item.label == "JPEG image 32×24"
    data = item.paths[0].read_bytes()
    assert b"Jane Doe" not in data
    assert not Image.open(item.paths[0]).getexif()


def test_bad_upload_is_a_warning_not_a_failure(tmp_path, deid):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    good = Path(get_testdata_file("MR_small.dcm"))
    res = ingest_uploads([bad, good], tmp_path / "s", deid)
    assert len(res.items) == 1 and res.items[0].modality == "MR"
    assert len(res.warnings) == 1 and "upload 1" in res.warnings[0] and "notes.txt" not in res.warnings[0]
