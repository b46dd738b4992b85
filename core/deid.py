"""De-identification of DICOM: PS3.15 Basic Application Level Confidentiality Profile, salted UIDs.

Per dataset (:meth:`Deidentifier.deidentify`), in this order:

1. every private attribute is removed, and curves / overlays (groups 50xx, 60xx) which can carry
   burned-in annotations;
2. the Basic Profile action of each attribute (``core._deid_profile``: X remove, Z empty, D dummy),
   recursively in sequences;
3. general rules for what the table does not name: every instance UID is replaced (U) by
   ``2.25.<HMAC-SHA256(salt, uid) as a 128-bit integer>`` — deterministic for a salt, so a series
   stays a series and the same map applies to report keys —, every person name is emptied, and
   every date is shifted by a per-patient offset (Retain Longitudinal Temporal Information with
   Modified Dates option, the default) or removed;
4. ``PatientIdentityRemoved = YES``, ``DeidentificationMethod`` and its code sequence are set, the
   patient gets a salted pseudonym (``ANON-…``), and the file meta follows the new SOP Instance UID.

The output is a valid DICOM file that pydicom reads back with unchanged pixels. The original →
pseudonym / UID map is collected in :attr:`Deidentifier.mapping` for a separate re-identification
file that only authorised staff keep (never inside the de-identified folder).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from core._deid_profile import BASIC_PROFILE, DICOM_UID_ROOT, KEEP_UID_KEYWORDS

log = logging.getLogger(__name__)

METHOD = "PS3.15 Basic Profile; private tags removed; salted UIDs"  # LO: at most 64 characters
_DATE_VRS = {"DA", "DT"}
_MAX_SHIFT_DAYS = 3650
_NEVER_SHIFT = frozenset({"PatientBirthDate", "LastMenstrualDate"})  # emptied/removed even with shifting


class DeidError(ValueError):
    """De-identification cannot proceed (bad salt, unreadable input); the message names the file."""


def load_salt(path: str | Path) -> bytes:
    """The secret salt from a file (at least 16 bytes after stripping whitespace)."""
    p = Path(path)
    try:
        salt = p.read_bytes().strip()
    except OSError as e:
        raise DeidError(f"{p}: cannot read the salt file: {e.strerror or e}") from e
    if len(salt) < 16:
        raise DeidError(f"{p}: the salt must be at least 16 bytes (use e.g. `openssl rand -hex 32 > {p.name}`)")
    return salt


@dataclass
class PatientKey:
    """What the re-identification map stores about one patient."""

    original_id: str
    original_name: str
    pseudonym: str
    date_shift_days: int | None


@dataclass
class Deidentifier:
    """Applies the profile with one salt; the same salt gives the same UIDs, pseudonyms and date shifts."""

    salt: bytes
    shift_dates: bool = True
    uid_map: dict[str, str] = field(default_factory=dict)
    patients: dict[str, PatientKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.salt) < 16:
            raise DeidError("the salt must be at least 16 bytes")

    # ------------------------------------------------------------------ deterministic replacements

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.salt, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The replacement of an instance UID: ``2.25.<128-bit integer>`` (valid, ≤ 44 characters)."""
        original = str(original).strip()
        if not original:
            return original
        new = self.uid_map.get(original)
        if new is None:
            new = "2.25." + str(int.from_bytes(self._digest("uid", original)[:16], "big"))
            self.uid_map[original] = new
        return new

    def pseudonym(self, patient_id: str) -> str:
        """``ANON-`` plus 12 hex digits of the salted hash of the patient id."""
        return "ANON-" + self._digest("pid", patient_id).hex()[:12].upper()

    def date_shift_days(self, patient_id: str) -> int | None:
        """The per-patient date shift (−1 … −3650 days), or None when dates are removed instead."""
        if not self.shift_dates:
            return None
        return -(int.from_bytes(self._digest("date", patient_id)[:4], "big") % _MAX_SHIFT_DAYS + 1)

    def patient(self, ds: Dataset) -> PatientKey:
        pid = str(ds.get("PatientID", "") or "")
        name = str(ds.get("PatientName", "") or "")
        key = pid or name or "<unknown>"
        if key not in self.patients:
            self.patients[key] = PatientKey(pid, name, self.pseudonym(key), self.date_shift_days(key))
        return self.patients[key]

    # ------------------------------------------------------------------ the profile

    def deidentify(self, ds: Dataset) -> Dataset:
        """A de-identified copy of ``ds`` (the input is not modified)."""
        out = copy.deepcopy(ds)
        patient = self.patient(ds)
        out.remove_private_tags()
        self._walk(out, patient.date_shift_days, top=True)
        out.PatientName = patient.pseudonym
        out.PatientID = patient.pseudonym
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = METHOD
        codes = [("113100", "Basic Application Confidentiality Profile")]
        if patient.date_shift_days is not None:
            codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
        seq = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            seq.append(item)
        out.DeidentificationMethodCodeSequence = Sequence(seq)
        out.LongitudinalTemporalInformationModified = "MODIFIED" if patient.date_shift_days is not None else "REMOVED"
        meta = getattr(out, "file_meta", None)
        if meta is not None:
            if "SOPInstanceUID" in out:
                meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
            for kw in (
                "SourceApplicationEntityTitle",
                "SendingApplicationEntityTitle",
                "ReceivingApplicationEntityTitle",
                "PrivateInformation",
                "PrivateInformationCreatorUID",
            ):
                if kw in meta:
                    delattr(meta, kw)
        return out

    def _walk(self, ds: Dataset, shift: int | None, *, top: bool = False) -> None:
        for elem in list(ds):
            tag, vr, keyword = elem.tag, elem.VR, elem.keyword
            if elem.tag.is_private or (tag.group & 0xFF00) in (0x5000, 0x6000):
                del ds[tag]
                continue
            if tag == 0x7FE00010:
                continue
            action = BASIC_PROFILE.get(keyword)
            if action in ("X", "Z") and vr in _DATE_VRS and shift is not None and keyword not in _NEVER_SHIFT:
                action = None  # Modified Dates option: the date is shifted below instead of removed
            if action == "X":
                del ds[tag]
                continue
            if action == "Z":
                elem.value = None if vr != "SQ" else Sequence([])
                continue
            if action == "D":
                elem.value = "ANONYMOUS" if vr == "PN" else ("" if vr != "SQ" else Sequence([]))
                continue
            if vr == "SQ":
                for item in elem.value or []:
                    self._walk(item, shift)
            elif vr == "UI":
                if keyword not in KEEP_UID_KEYWORDS and not keyword.endswith("ClassUID") and elem.value:
                    values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
                    new = [v if str(v).startswith(DICOM_UID_ROOT) else self.uid(str(v)) for v in values]
                    elem.value = new if len(new) > 1 else new[0]
            elif vr == "PN":
                elem.value = None
            elif vr in _DATE_VRS and elem.value:
                shifted = _shift(elem.value, vr, shift)
                if shifted is None:
                    del ds[tag]
                else:
                    elem.value = shifted


def _shift(value: Any, vr: str, days: int | None) -> str | None:
    """A DA (YYYYMMDD) or DT (YYYYMMDD…) value moved by ``days``; None when it cannot be shifted."""
    if days is None:
        return None
    text = str(value).strip()
    try:
        date = _dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None
    return (date + _dt.timedelta(days=days)).strftime("%Y%m%d") + (text[8:] if vr == "DT" else "")


def deidentify_dataset(ds: Dataset, salt: bytes, *, shift_dates: bool = True) -> Dataset:
    """De-identify one dataset with ``salt`` (convenience wrapper around :class:`Deidentifier`)."""
    return Deidentifier(salt, shift_dates=shift_dates).deidentify(ds)


# --------------------------------------------------------------------------- folders and reports


@dataclass
class DeidSummary:
    """What :func:`deidentify_folder` did (counts only: no identifiers)."""

    files_written: int = 0
    skipped_not_dicom: int = 0
    errors: list[str] = field(default_factory=list)
    patients: int = 0
    uids: int = 0
    report_rows: int = 0
    map_file: str | None = None


def deidentify_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    *,
    salt: bytes,
    reports: str | Path | None = None,
    map_file: str | Path | None = None,
    shift_dates: bool = True,
) -> DeidSummary:
    """De-identify every DICOM file under ``in_dir`` into ``out_dir/<pseudonym>/<new SOP UID>.dcm``.

    ``reports``: a CSV whose UID columns (name contains ``uid``) are mapped with the same UID map,
    patient id columns replaced by the pseudonym, accession columns hashed, and every other text
    cell scrubbed by :func:`core.phi.scrub` (names from the headers removed, dates shifted by the
    patient's offset); written to ``out_dir/<name>.csv``. ``map_file`` (default: next to
    ``out_dir``, never inside it) receives the re-identification map as JSON lines, mode 0600.
    """
    import json
    import os

    src, dst = Path(in_dir), Path(out_dir)
    if not src.is_dir():
        raise DeidError(f"{src}: not a directory")
    if dst.resolve().is_relative_to(src.resolve()):
        raise DeidError(f"{dst}: the output folder must not be inside the input folder")
    deid = Deidentifier(salt, shift_dates=shift_dates)
    summary = DeidSummary()
    dst.mkdir(parents=True, exist_ok=True)
    study_patient: dict[str, PatientKey] = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        try:
            ds = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            summary.skipped_not_dicom += 1
            continue
        except (OSError, ValueError, TypeError, AttributeError, EOFError) as e:
            summary.errors.append(f"{rel}: cannot read: {e}")
            continue
        try:
            patient = deid.patient(ds)
            out = deid.deidentify(ds)
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                if key in ds:
                    study_patient[str(ds[key].value)] = patient
            target = dst / patient.pseudonym / f"{out.get('SOPInstanceUID', deid.uid(str(rel)))}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            out.save_as(target, enforce_file_format="SOPClassUID" in out and "SOPInstanceUID" in out)
            summary.files_written += 1
        except (ValueError, TypeError, AttributeError, KeyError, OSError) as e:
            summary.errors.append(f"{rel}: cannot de-identify: {e}")
    if reports is not None:
        summary.report_rows = _deidentify_reports(Path(reports), dst, deid, study_patient)
    summary.patients, summary.uids = len(deid.patients), len(deid.uid_map)
    map_path = Path(map_file) if map_file else dst.parent / f"{dst.name}.reidentification.jsonl"
    if map_path.resolve().is_relative_to(dst.resolve()):
        raise DeidError(f"{map_path}: the re-identification map must be kept outside the de-identified folder")
    fd = os.open(map_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for p in deid.patients.values():
            fh.write(
                json.dumps(
                    {
                        "kind": "patient",
                        "original_id": p.original_id,
                        "original_name": p.original_name,
                        "pseudonym": p.pseudonym,
                        "date_shift_days": p.date_shift_days,
                    }
                )
                + "\n"
            )
        for old, new in deid.uid_map.items():
            fh.write(json.dumps({"kind": "uid", "original": old, "replacement": new}) + "\n")
    summary.map_file = str(map_path)
    log.info(
        "de-identified %d files (%d patients, %d UIDs); %d errors",
        summary.files_written,
        summary.patients,
        summary.uids,
        len(summary.errors),
    )
    return summary


def _deidentify_reports(path: Path, dst: Path, deid: Deidentifier, study_patient: dict[str, PatientKey]) -> int:
    import csv

    from core.phi import scrub  # the one PHI detector (owned by the curation side)

    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DeidError(f"{path}: cannot read the reports CSV: {e.strerror or e}") from e
    by_id = {p.original_id: p for p in deid.patients.values() if p.original_id}
    with fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise DeidError(f"{path}: the reports CSV has no header row")
        fields = list(reader.fieldnames)
        kinds = {f: _column_kind(f) for f in fields}
        rows = []
        for row in reader:
            patient = None
            for f in fields:
                value = (row.get(f) or "").strip()
                if kinds[f] == "uid" and value in study_patient:
                    patient = study_patient[value]
                elif kinds[f] == "patient_id" and value in by_id:
                    patient = by_id[value]
            names = [n for n in ([patient.original_name] if patient else []) if n]
            shift = patient.date_shift_days if patient else None
            out = {}
            for f in fields:
                value = row.get(f) or ""
                kind = kinds[f]
                if kind == "uid":
                    out[f] = deid.uid(value) if value.strip() else value
                elif kind == "patient_id":
                    out[f] = (patient.pseudonym if patient else deid.pseudonym(value)) if value.strip() else value
                elif kind == "accession":
                    out[f] = ("ACC-" + deid._digest("acc", value).hex()[:10].upper()) if value.strip() else value
                else:
                    out[f] = scrub(value, names=names, date_shift_days=shift)
            rows.append(out)
    target = dst / f"{path.stem}.csv"
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _column_kind(name: str) -> str:
    key = name.lower().replace("_", "").replace(" ", "")
    if "uid" in key:
        return "uid"
    if key in ("patientid", "mrn", "patientmrn", "medicalrecordnumber"):
        return "patient_id"
    if "accession" in key:
        return "accession"
    return "text"
