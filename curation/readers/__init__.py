"""Readers: foreign formats → manifest samples (images referenced by absolute path, never copied).

:func:`read_input` picks the reader (``auto`` detects it) and yields :class:`~core.manifest.Sample` or
:class:`ReaderIssue` (a record that could not be converted, with where and why). Embedded images (data
URLs, HF ``Image`` bytes) are the one exception to "never copied": they are written to ``scratch``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from core.manifest import Sample
from curation.readers._common import ReaderError, ReaderIssue
from curation.readers.dicom import read_dicom_folder
from curation.readers.hf import DATA_SUFFIXES, read_hf
from curation.readers.jsonio import peek_record
from curation.readers.manifest import read_manifest_input
from curation.readers.openai import read_openai
from curation.readers.sharegpt import read_sharegpt

FORMATS = ("auto", "manifest", "sharegpt", "openai", "hf", "dicom")

__all__ = ["FORMATS", "ReaderError", "ReaderIssue", "detect_format", "read_input"]


def detect_format(path: Path) -> str:
    """Guess the input format from a file's first record or a folder's contents."""
    if not path.exists():
        raise ReaderError(f"{path}: no such file or folder")
    if path.is_dir():
        from curation.readers.dicom import _is_dicom_file

        for i, p in enumerate(path.rglob("*")):
            if p.is_file() and _is_dicom_file(p):
                return "dicom"
            if i > 2000:
                break
        if any(p.suffix in DATA_SUFFIXES for p in path.rglob("*")):
            return "hf"
        raise ReaderError(f"{path}: a folder with neither DICOM nor parquet/arrow/JSON files")
    if path.suffix in (".parquet", ".arrow"):
        return "hf"
    if path.suffix not in (".json", ".jsonl"):
        raise ReaderError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; pass --input-format")
    rec = peek_record(path)
    if rec is None:
        raise ReaderError(f"{path}: no JSON object found to detect the format; pass --input-format")
    if "schema_version" in rec and "task" in rec:
        return "manifest"
    if "conversations" in rec:
        return "sharegpt"
    if "messages" in rec:
        return "openai"
    return "hf"


def read_input(
    path: str | Path,
    fmt: str = "auto",
    *,
    reports: str | Path | None = None,
    image_root: str | Path | None = None,
    scratch: str | Path,
) -> Iterator[Sample | ReaderIssue]:
    """Yield samples (or issues) from ``path`` in the given or detected format."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ReaderError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    if not path.exists():
        raise ReaderError(f"{path}: no such file or folder")
    if reports is not None and fmt != "dicom":
        raise ReaderError(f"--reports goes with a DICOM folder, not with {fmt} input")
    root = Path(image_root) if image_root else None
    scratch = Path(scratch)
    if fmt == "manifest":
        yield from read_manifest_input(path)
    elif fmt == "sharegpt":
        yield from read_sharegpt(path, image_root=root, scratch=scratch)
    elif fmt == "openai":
        yield from read_openai(path, image_root=root, scratch=scratch)
    elif fmt == "hf":
        yield from read_hf(path, image_root=root, scratch=scratch)
    else:
        rep = Path(reports) if reports else None
        if rep is not None and not rep.is_file():
            raise ReaderError(f"{rep}: reports file not found")
        yield from read_dicom_folder(path, reports=rep)
