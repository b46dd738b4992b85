"""A DICOM folder plus a CSV/JSONL of reports or question–answer pairs keyed by SOP or Study Instance UID.

Key column (first found): ``SOPInstanceUID`` / ``sop_instance_uid`` / ``sop_uid`` (one image), else
``StudyInstanceUID`` / ``study_instance_uid`` / ``study_uid`` (the study: one image slot per series, a
multi-file series as kind ``series``, at most ``max_series`` slots). Text: ``question`` + ``answer`` → VQA;
else ``report`` / ``text`` / ``caption`` / ``findings`` (+ ``impression``) → caption. Several rows for one
key give several samples. Without a reports file every image becomes a caption sample with no text (the
``empty_text`` gate then reports it). Headers are read without pixels; the patient identity (PatientID)
is carried in memory only until the split is assigned, when it is replaced by its salted hash.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.manifest import Sample
from curation.readers._common import ReaderError, ReaderIssue, build_sample

log = logging.getLogger(__name__)

SOP_KEYS = ("SOPInstanceUID", "sop_instance_uid", "sop_uid", "sopinstanceuid")
STUDY_KEYS = ("StudyInstanceUID", "study_instance_uid", "study_uid", "studyinstanceuid")
TEXT_KEYS = ("report", "text", "caption", "findings")
_HEADER_TAGS = [
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "Modality",
    "BodyPartExamined",
    "PatientID",
    "Rows",
    "Columns",
    "NumberOfFrames",
]


@dataclass
class DicomFile:
    path: Path
    sop: str
    study: str
    series: str
    series_number: int
    instance: int
    modality: str | None
    body_part: str | None
    patient_id: str | None
    width: int | None
    height: int | None
    frames: int | None


def _is_dicom_file(p: Path) -> bool:
    if p.suffix.lower() in (".dcm", ".dicom"):
        return True
    if p.suffix:
        return False
    try:
        with p.open("rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def scan_folder(folder: Path) -> tuple[list[DicomFile], list[ReaderIssue]]:
    """Headers of every DICOM file under ``folder`` (sorted paths; unreadable files become issues)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    files, issues = [], []
    for p in sorted(x for x in folder.rglob("*") if x.is_file() and _is_dicom_file(x)):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError) as e:
            issues.append(ReaderIssue(str(p), "file", f"not a readable DICOM file ({type(e).__name__})"))
            continue

        def get(tag: str, ds: Any = ds) -> Any:
            v = ds.get(tag)
            return None if v is None or str(v).strip() == "" else v

        sop = str(get("SOPInstanceUID") or p.stem)
        files.append(
            DicomFile(
                path=p.resolve(),
                sop=sop,
                study=str(get("StudyInstanceUID") or sop),
                series=str(get("SeriesInstanceUID") or sop),
                series_number=int(get("SeriesNumber") or 0),
                instance=int(get("InstanceNumber") or 0),
                modality=str(get("Modality")) if get("Modality") else None,
                body_part=str(get("BodyPartExamined")) if get("BodyPartExamined") else None,
                patient_id=str(get("PatientID")) if get("PatientID") else None,
                width=int(get("Columns")) if get("Columns") else None,
                height=int(get("Rows")) if get("Rows") else None,
                frames=int(get("NumberOfFrames")) if get("NumberOfFrames") else None,
            )
        )
    return files, issues


def read_reports(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV or JSONL reports file (keys as written)."""
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            text = path.read_text(encoding="utf-8")
            if text.lstrip().startswith("["):
                return list(json.loads(text))
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, ValueError, csv.Error) as e:
        raise ReaderError(f"{path}: cannot read reports: {e}") from e


def _image_ref(group: list[DicomFile]) -> dict[str, Any]:
    group = sorted(group, key=lambda f: (f.instance, str(f.path)))
    first = group[len(group) // 2]
    ref: dict[str, Any] = {"path": str(first.path), "kind": "dicom"}
    if len(group) > 1:
        ref = {
            "path": str(group[0].path.parent),
            "kind": "series",
            "files": [str(f.path) for f in group],
            "frames": len(group),
        }
    if first.width and first.height:
        ref.update(width=first.width, height=first.height)
    if first.frames and len(group) == 1:
        ref["frames"] = first.frames
    return ref


def _text_of(row: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(task, text-or-question, answer)"""
    if str(row.get("question") or "").strip():
        ans = row.get("answer")
        return "vqa", str(row["question"]), None if ans is None or str(ans) == "" else str(ans)
    key = next((k for k in TEXT_KEYS if str(row.get(k) or "").strip()), None)
    text = str(row[key]) if key else ""
    if str(row.get("impression") or "").strip():
        text = (text + "\nImpression: " + str(row["impression"])).strip()
    return "caption", text, None


def read_dicom_folder(folder: Path, *, reports: Path | None, max_series: int = 4) -> Iterator[Sample | ReaderIssue]:
    """Samples from a DICOM folder and (optionally) a reports file."""
    if not folder.is_dir():
        raise ReaderError(f"{folder}: not a folder")
    files, issues = scan_folder(folder)
    yield from issues
    if not files:
        raise ReaderError(f"{folder}: no DICOM files found")
    by_sop: dict[str, DicomFile] = {}
    for f in files:
        if f.sop in by_sop:
            yield ReaderIssue(str(f.path), "file", f"same SOPInstanceUID as {by_sop[f.sop].path.name}: ignored")
        else:
            by_sop[f.sop] = f
    files = list(by_sop.values())
    by_study: dict[str, list[DicomFile]] = defaultdict(list)
    for f in files:
        by_study[f.study].append(f)
    source = f"dicom:{folder.name}"
    if reports is None:
        for f in files:
            yield _sample(_uid_id(f.sop), "caption", "", None, [[f]], {}, source, str(f.path))
        return
    rows = read_reports(reports)
    if not rows:
        raise ReaderError(f"{reports}: no rows")
    cols = set().union(*(r.keys() for r in rows))
    sop_col = next((k for k in SOP_KEYS if k in cols), None)
    study_col = next((k for k in STUDY_KEYS if k in cols), None)
    if not sop_col and not study_col:
        raise ReaderError(f"{reports}: needs a SOPInstanceUID or StudyInstanceUID column; has {sorted(cols)}")
    counts: dict[str, int] = defaultdict(int)
    for i, row in enumerate(rows):
        where = f"row {i + 2 if reports.suffix.lower() == '.csv' else i + 1}"
        sop = str(row.get(sop_col) or "").strip() if sop_col else ""
        study = str(row.get(study_col) or "").strip() if study_col else ""
        if sop:
            if sop not in by_sop:
                yield ReaderIssue(str(reports), where, "SOPInstanceUID not found in the DICOM folder")
                continue
            groups, key = [[by_sop[sop]]], sop
        elif study:
            if study not in by_study:
                yield ReaderIssue(str(reports), where, "StudyInstanceUID not found in the DICOM folder")
                continue
            series: dict[str, list[DicomFile]] = defaultdict(list)
            for f in by_study[study]:
                series[f.series].append(f)
            ordered = sorted(series.values(), key=lambda g: (min(x.series_number for x in g), g[0].series))
            groups, key = ordered[:max_series], study
        else:
            yield ReaderIssue(str(reports), where, "row has no UID")
            continue
        task, text, answer = _text_of(row)
        n = counts[key]
        counts[key] += 1
        sid = str(row.get("id") or _uid_id(key) + (f"-{n}" if n else ""))
        extra = {k: row[k] for k in ("licence", "license", "question_type", "split") if row.get(k)}
        yield _sample(sid, task, text, answer, groups, extra, source, where)


def _uid_id(uid: str) -> str:
    """Sample id from a UID: hashed, because raw DICOM UIDs are identifiers and ids reach logs and reports."""
    return "dcm-" + hashlib.sha256(uid.encode()).hexdigest()[:16]


def _sample(
    sid: str,
    task: str,
    text: str,
    answer: str | None,
    groups: list[list[DicomFile]],
    extra: dict[str, Any],
    source: str,
    where: str,
) -> Sample | ReaderIssue:
    first = groups[0][0]
    slots = "<image>\n" * len(groups)
    meta: dict[str, Any] = {
        "source": source,
        "modality": first.modality,
        "body_part": first.body_part,
        "study_uid": first.study,
    }
    if first.patient_id:
        meta["patient_id"] = first.patient_id
    if "license" in extra:
        extra["licence"] = extra.pop("license")
    meta.update(extra)
    meta = {k: v for k, v in meta.items() if v is not None}
    images = [_image_ref(g) for g in groups]
    if task == "vqa":
        messages = [{"role": "user", "content": slots + text}]
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
            meta["answer"] = answer
        data = {"id": sid, "task": "vqa", "messages": messages, "images": images, "meta": meta}
    else:
        data = {"id": sid, "task": "caption", "text": slots + text, "images": images, "meta": meta}
    return build_sample(data, source, where)
