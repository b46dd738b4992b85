"""A DICOM folder plus a CSV/JSONL of reports or question–answer pairs keyed by SOP or Study Instance UID.

Key column (first found): ``SOPInstanceUID`` / ``sop_instance_uid`` / ``sop_uid`` (one image), else
``StudyInstanceUID`` / ``study_instance_uid`` / ``study_uid`` (the study: one image slot per series, a
multi-file series as kind ``series``, at most ``max_series`` slots). Text: ``question`` + ``answer`` → VQA;
else ``report`` / ``text`` / ``caption`` / ``findings`` (+ ``impression``) → caption. Several rows for one
key give several samples. Without a reports file every image becomes a caption sample with no text (the
``empty_text`` gate then reports it). Headers are read without pixels; the patient identity (PatientID)
is carried in memory only until the split is assigned, when it is replaced by its salted hash.

Multiple choice: an optional ``options`` column on a question row. In a CSV cell the options are separated
by ``|`` (``yes|no``), or, when the cell starts with ``[``, written as a JSON list of strings
(``["A. left", "B. right"]``; use this form when an option itself contains ``|``). In JSONL the value is
a list of strings. An empty cell, ``null`` or a missing key means no options. Options must be non-empty
strings, no two alike (ignoring case, spacing and a final full stop). When every option carries a letter label in
order (``A.`` / ``A:`` / ``A)`` / ``(A)``, then ``B`` …) the labels are removed: the manifest stores option
texts, and letters are added when a prompt is rendered. An answer given with options must name one of
them, by text or, for lettered options, by letter (``B``, ``(B)``, ``B.`` or ``B. right``); ``meta.answer``
is then that option's stored text, ``meta.answer_type`` is ``closed``, and the assistant turn keeps the
answer as written. A row that breaks these rules, or has options but no question, becomes a
:class:`ReaderIssue` naming the file, the row and the problem (never the text), like every other bad row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
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
OPTIONS_KEY = "options"
# "A. left", "A: left", "A) left", "(A) left" → ("A", "left")
_OPTION_LABEL = re.compile(r"^\(?([A-Z])\)?\s*[.:)]\s*(\S.*)$")
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


def _parse_options(value: Any, *, from_csv: bool) -> list[str] | None:
    """A row's ``options`` value as a list of stripped strings, or ``None`` when absent or empty.

    ``from_csv``: the value is a CSV cell (``a|b|c``, or a JSON list when it starts with ``[``); otherwise
    it must already be a list. Raises ``TypeError`` (not a list, not a string) or ``ValueError`` with a
    message that names no option text.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and from_csv:
        cell = value.strip()
        if cell.startswith("["):
            try:
                value = json.loads(cell)
            except ValueError as e:
                raise ValueError(f"options cell starts with '[' but is not a JSON list ({e})") from None
        else:
            value = cell.split("|")
    if not isinstance(value, list):
        form = "a JSON list of strings or a '|'-separated cell" if from_csv else "a JSON list of strings"
        raise TypeError(f"options must be {form}, not {type(value).__name__}")
    if not value:
        raise ValueError("options is an empty list")
    for i, option in enumerate(value, start=1):
        if not isinstance(option, str):
            raise TypeError(f"option {i} is not a string but {type(option).__name__}")
        if not option.strip():
            raise ValueError(f"option {i} is empty")
    options = [o.strip() for o in value]
    _check_distinct(options)
    return options


def _check_distinct(options: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, option in enumerate(options, start=1):
        key = _fold(option)
        if key in seen:
            raise ValueError(f"options {seen[key]} and {i} are the same")
        seen[key] = i


def _fold(text: str) -> str:
    """Comparison key: case, runs of spaces and a final full stop ignored."""
    return " ".join(text.split()).casefold().rstrip(".")


def _option_texts(options: list[str]) -> list[str] | None:
    """The texts of options lettered A, B, C … in order, or ``None`` when they are not all lettered so."""
    matches = [_OPTION_LABEL.match(o) for o in options]
    if len(options) > 26 or not all(matches):
        return None
    if [m.group(1) for m in matches if m] != [chr(ord("A") + i) for i in range(len(options))]:
        return None
    return [m.group(2).strip() for m in matches if m]


def _choose_answer(answer: str, options: list[str]) -> str:
    """The option text that ``answer`` names (text, or letter when ``options`` are lettered).

    ``options`` are as parsed (labels still on). Raises ``ValueError`` when the answer names none of them;
    the message counts the options but never quotes them or the answer.
    """
    texts = _option_texts(options)
    key = _fold(answer)
    if texts is None:
        for option in options:
            if _fold(option) == key:
                return option
        raise ValueError(f"answer is not one of the {len(options)} options")
    letter = answer.strip().strip("().: ").upper()
    if len(letter) == 1 and "A" <= letter < chr(ord("A") + len(texts)):
        return texts[ord(letter) - ord("A")]
    for labelled, text in zip(options, texts, strict=True):
        if key in (_fold(labelled), _fold(text)):
            return text
    last = chr(ord("A") + len(texts) - 1)
    raise ValueError(f"answer is neither one of the {len(options)} options nor a letter A–{last}")


def _choices(
    row: dict[str, Any], task: str, answer: str | None, *, from_csv: bool
) -> tuple[list[str] | None, str | None]:
    """(options as the manifest stores them, the answer as ``meta.answer``) for one row."""
    options = _parse_options(row.get(OPTIONS_KEY), from_csv=from_csv)
    if options is None:
        return None, answer
    if task != "vqa":
        raise ValueError("options given on a row without a question")
    texts = _option_texts(options)
    if texts is not None:
        _check_distinct(texts)  # "A. left" and "B. left" differ only by their labels
    chosen = _choose_answer(answer, options) if answer is not None else None
    return texts or options, chosen


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
    from_csv = reports.suffix.lower() not in (".jsonl", ".json")  # as read_reports decides
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
        try:
            options, meta_answer = _choices(row, task, answer, from_csv=from_csv)
        except (TypeError, ValueError) as e:
            yield ReaderIssue(str(reports), where, str(e))
            continue
        n = counts[key]
        counts[key] += 1
        sid = str(row.get("id") or _uid_id(key) + (f"-{n}" if n else ""))
        extra = {k: row[k] for k in ("licence", "license", "question_type", "split") if row.get(k)}
        if options is not None:
            extra.update(options=options, answer_type="closed")
        yield _sample(sid, task, text, answer, groups, extra, source, where, meta_answer=meta_answer)


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
    *,
    meta_answer: str | None = None,
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
            meta["answer"] = meta_answer if meta_answer is not None else answer
        data = {"id": sid, "task": "vqa", "messages": messages, "images": images, "meta": meta}
    else:
        data = {"id": sid, "task": "caption", "text": slots + text, "images": images, "meta": meta}
    return build_sample(data, source, where)
