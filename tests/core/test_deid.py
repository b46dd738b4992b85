from __future__ import annotations

import csv
import json
import stat
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

sys.path.insert(0, str(Path(__file__).parent))
from _files import tf  # noqa: E402

from core.deid import Deidentifier, DeidError, deidentify_dataset, deidentify_folder, load_salt  # noqa: E402

SALT = b"test-salt-0123456789abcdef"
PHI = [
    "Doe^Jane",
    "MRN-99887766",
    "19700321",
    "St Elsewhere Hospital",
    "House^Gregory",
    "Jane Doe",
    "ACC-5544332211",
    "Nurse^Ratched",
    "617-555-0199",
]


def _planted(path: str) -> Dataset:
    ds = pydicom.dcmread(path)
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-99887766"
    ds.PatientBirthDate = "19700321"
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.StudyDescription = "CT chest for Jane Doe"
    ds.AccessionNumber = "ACC-5544332211"
    ds.OperatorsName = "Nurse^Ratched"
    ds.PatientTelephoneNumbers = "617-555-0199"
    ds.StudyDate = "20240315"
    ds.add_new(0x00091010, "LO", "Jane Doe private note")  # private tag
    ds.add_new(0x60003000, "OW", b"\x00" * 8)  # overlay data
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    item.VerifyingObserverName = "Nurse^Ratched"
    ds.ReferencedImageSequence = Sequence([item])
    other = Dataset()
    other.ReviewerName = "House^Gregory"  # a PN the table does not name, inside a sequence
    ds.ProcedureCodeSequence = Sequence([other])
    return ds


def test_planted_phi_is_gone_and_pixels_survive(tmp_path) -> None:
    src = _planted(tf("CT_small.dcm"))
    out = deidentify_dataset(src, SALT)
    path = tmp_path / "out.dcm"
    out.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    for value in PHI:
        assert value.encode() not in raw, value
    back = pydicom.dcmread(path)  # valid DICOM, no force needed
    np.testing.assert_array_equal(back.pixel_array, pydicom.dcmread(tf("CT_small.dcm")).pixel_array)
    assert back.PatientIdentityRemoved == "YES" and "Basic Profile" in back.DeidentificationMethod
    assert [c.CodeValue for c in back.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert back.PatientName == back.PatientID and str(back.PatientID).startswith("ANON-")
    assert not any(e.tag.is_private for e in back) and 0x60003000 not in back
    assert back.SOPInstanceUID != src.SOPInstanceUID and back.SOPInstanceUID.startswith("2.25.")
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.SOPClassUID == src.SOPClassUID  # class UIDs are kept
    assert back.ReferencedImageSequence[0].ReferencedSOPInstanceUID == back.SOPInstanceUID  # same map inside sequences
    assert "ReviewerName" in back.ProcedureCodeSequence[0] and not back.ProcedureCodeSequence[0].ReviewerName
    assert back.StudyDate != "20240315" and len(back.StudyDate) == 8  # shifted, not kept
    assert src.PatientName == "Doe^Jane"  # the input is not modified


def test_uid_map_is_deterministic_and_salted() -> None:
    a, b = Deidentifier(SALT), Deidentifier(SALT)
    uid = "1.2.826.0.1.3680043.8.498.12345"
    assert a.uid(uid) == b.uid(uid) and len(a.uid(uid)) <= 64
    assert Deidentifier(b"another-salt-0123456789").uid(uid) != a.uid(uid)
    assert a.pseudonym("X1") == b.pseudonym("X1") and a.date_shift_days("X1") == b.date_shift_days("X1") < 0
    assert Deidentifier(SALT, shift_dates=False).date_shift_days("X1") is None
    with pytest.raises(DeidError):
        Deidentifier(b"short")


def test_remove_dates_option() -> None:
    out = deidentify_dataset(_planted(tf("CT_small.dcm")), SALT, shift_dates=False)
    assert not out.get("StudyDate") and "SeriesDate" not in out
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def _folder(tmp_path: Path) -> tuple[Path, list[Dataset]]:
    src = tmp_path / "in" / "Doe_Jane"
    src.mkdir(parents=True)
    planted = []
    for i, name in enumerate(["CT_small.dcm", "MR_small.dcm"]):
        ds = _planted(tf(name))
        ds.save_as(src / f"img{i}.dcm")
        planted.append(ds)
    (src / "notes.txt").write_text("not dicom")
    return tmp_path / "in", planted


def test_folder_and_reports_share_the_uid_map(tmp_path) -> None:
    in_dir, planted = _folder(tmp_path)
    reports = tmp_path / "reports.csv"
    with reports.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["StudyInstanceUID", "PatientID", "report"])
        w.writerow(
            [
                planted[0].StudyInstanceUID,
                "MRN-99887766",
                "Jane Doe seen on 03/15/2024. Call 617-555-0199. Nodule 5 mm RUL.",
            ]
        )
    out_dir = tmp_path / "out"
    summary = deidentify_folder(in_dir, out_dir, salt=SALT, reports=reports)
    assert (
        summary.files_written == 2 and summary.skipped_not_dicom == 1 and summary.errors == [] and summary.patients == 1
    )
    files = sorted(out_dir.rglob("*.dcm"))
    assert len(files) == 2 and all("Doe" not in str(p) for p in files)
    back = pydicom.dcmread(files[0]) if pydicom.dcmread(files[0]).Modality == "CT" else pydicom.dcmread(files[1])
    rows = list(csv.DictReader((out_dir / "reports.csv").open()))
    assert rows[0]["StudyInstanceUID"] == back.StudyInstanceUID
    assert rows[0]["PatientID"] == back.PatientID
    text = rows[0]["report"]
    assert "Jane" not in text and "Doe" not in text and "617-555-0199" not in text and "5 mm" in text
    assert "03/15/2024" not in text
    map_path = Path(summary.map_file)
    assert map_path.parent == tmp_path and stat.S_IMODE(map_path.stat().st_mode) == 0o600
    entries = [json.loads(line) for line in map_path.read_text().splitlines()]
    patient = next(e for e in entries if e["kind"] == "patient")
    assert patient["original_id"] == "MRN-99887766" and patient["pseudonym"] == back.PatientID
    assert {"original": planted[0].StudyInstanceUID, "replacement": back.StudyInstanceUID, "kind": "uid"} in entries
    for p in files:
        for value in PHI:
            assert value.encode() not in p.read_bytes()


def test_cli(tmp_path, capsys) -> None:
    from infimed.cli import main

    in_dir, _ = _folder(tmp_path)
    salt = tmp_path / "salt"
    salt.write_text("0123456789abcdef0123456789abcdef\n")
    assert main(["deid", str(in_dir), str(tmp_path / "out"), "--salt-file", str(salt)]) == 0
    assert "2 files de-identified" in capsys.readouterr().out
    short = tmp_path / "short"
    short.write_text("abc")
    assert main(["deid", str(in_dir), str(tmp_path / "out2"), "--salt-file", str(short)]) == 2
    assert "at least 16 bytes" in capsys.readouterr().err
    assert main(["deid", str(in_dir), str(in_dir / "inside"), "--salt-file", str(salt)]) == 2
    assert "must not be inside" in capsys.readouterr().err
    with pytest.raises(DeidError):
        load_salt(tmp_path / "missing")
