"""Uploads → de-identified study items in the session's private folder.

Order of work for each upload (:func:`ingest_uploads`):

1. a ``.zip`` is expanded in memory (member count and total size capped, member names never used as
   paths, so no zip-slip);
2. DICOM (preamble or a parsable dataset) is de-identified with :class:`core.deid.Deidentifier` (PS3.15
   Basic Profile, UIDs replaced with the session's random salt, so a series stays one series) and
   written as ``NNNN.dcm``; PNG/JPEG/WebP is re-encoded as PNG without any metadata (EXIF, text chunks);
3. single-frame DICOM files sharing a SeriesInstanceUID become one ``series`` item, a multi-frame file
   its own ``dicom`` item;
4. the raw upload is deleted from Gradio's upload cache (when ``delete_sources``).

Labels shown to the clinician never contain the uploaded file name: it may carry a patient's name.
Burned-in text is not judged here: the gateway's render endpoint refuses such images with a reason.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

from core.deid import Deidentifier
from ui.messages import StudyItem

log = logging.getLogger(__name__)

MAX_ZIP_MEMBERS = 2000
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


class IngestError(ValueError):
    """An upload cannot be used; the message says which upload and why (never its name)."""


@dataclass
class IngestResult:
    items: list[StudyItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _blobs(path: Path, label: str, max_bytes: int) -> list[tuple[str, bytes]]:
    """(label, bytes) for one upload; a zip gives one entry per member file."""
    size = path.stat().st_size
    if size > max_bytes:
        raise IngestError(f"{label}: {size} bytes, over the upload limit of {max_bytes}")
    data = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return [(label, data)]
    out: list[tuple[str, bytes]] = []
    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [m for m in zf.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
        if len(members) > MAX_ZIP_MEMBERS:
            raise IngestError(f"{label}: the zip holds {len(members)} files, more than {MAX_ZIP_MEMBERS}")
        for i, m in enumerate(members, 1):
            total += m.file_size
            if total > max_bytes:
                raise IngestError(f"{label}: the zip expands to more than {max_bytes} bytes")
            out.append((f"{label}, file {i}", zf.read(m)))
    return out


def _read_dicom(data: bytes) -> pydicom.Dataset | None:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except (InvalidDicomError, ValueError, TypeError, AttributeError, EOFError, KeyError, IndexError, OSError):
        return None
    # ``force`` parses almost anything: demand an image (or at least a SOP class) before calling it DICOM.
    if "PixelData" not in ds and "SOPClassUID" not in ds:
        return None
    return ds


def _clean_image(data: bytes, label: str) -> tuple[Image.Image, str]:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise IngestError(f"{label}: neither DICOM nor a PNG/JPEG/WebP image ({type(e).__name__})") from None
    fmt = (img.format or "image").upper()
    # A fresh image from the pixels only: EXIF, ICC, XMP and PNG text chunks are left behind.
    mode = img.mode if img.mode in ("L", "RGB", "RGBA") else "RGB"
    converted = img.convert(mode)
    return Image.frombytes(mode, converted.size, converted.tobytes()), fmt


def ingest_uploads(paths: list[Path], session_dir: Path, deid: Deidentifier, *, start_index: int = 0,
                   delete_sources: bool = False, max_bytes: int = MAX_UPLOAD_BYTES) -> IngestResult:  # fmt: skip
    """De-identify ``paths`` into ``session_dir`` and group them into study items (see the module docstring).

    ``start_index`` numbers the written files after those already in the session. Uploads that
    cannot be used become warnings (the others still load). Raw uploads are deleted when
    ``delete_sources`` is True, also when they fail.
    """
    session_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    result = IngestResult()
    n = start_index
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    order: list[str | StudyItem] = []
    try:
        for k, path in enumerate(paths, 1):
            label = f"upload {k}" if len(paths) > 1 else "the upload"
            try:
                blobs = _blobs(Path(path), label, max_bytes)
            except (IngestError, zipfile.BadZipFile, OSError) as e:
                result.warnings.append(
                    str(e) if isinstance(e, IngestError) else f"{label}: cannot read it ({type(e).__name__})"
                )
                continue
            for blabel, data in blobs:
                ds = _read_dicom(data)
                if ds is not None:
                    try:
                        clean = deid.deidentify(ds)
                    except (ValueError, TypeError, AttributeError, KeyError) as e:
                        result.warnings.append(f"{blabel}: cannot de-identify this DICOM file ({type(e).__name__})")
                        continue
                    n += 1
                    target = session_dir / f"{n:04d}.dcm"
                    clean.save_as(target, enforce_file_format="SOPClassUID" in clean and "SOPInstanceUID" in clean)
                    frames = int(getattr(clean, "NumberOfFrames", 1) or 1)
                    uid = str(getattr(clean, "SeriesInstanceUID", "") or "")
                    if frames > 1 or not uid:
                        order.append(_dicom_item([target], clean, frames))
                    else:
                        if uid not in series:
                            series[uid] = []
                            order.append(uid)
                        series[uid].append((target, clean))
                    continue
                try:
                    img, fmt = _clean_image(data, blabel)
                except IngestError as e:
                    result.warnings.append(str(e))
                    continue
                n += 1
                target = session_dir / f"{n:04d}.png"
                img.save(target, format="PNG")
                order.append(
                    StudyItem(
                        kind="image", paths=[target], label=f"{fmt} image {img.size[0]}×{img.size[1]}", mime="image/png"
                    )
                )
    finally:
        if delete_sources:
            for p in paths:
                _delete_upload(Path(p))
    for entry in order:
        if isinstance(entry, StudyItem):
            result.items.append(entry)
            continue
        files = series[entry]
        if len(files) == 1:
            result.items.append(_dicom_item([files[0][0]], files[0][1], 1))
        else:
            ds = files[0][1]
            modality = str(getattr(ds, "Modality", "") or "DICOM")
            result.items.append(StudyItem(kind="series", paths=[p for p, _ in files], label=f"{modality} series · {len(files)} slices",
                                          frames_total=len(files), modality=modality))  # fmt: skip
    log.info(
        "ingested %d item(s) from %d upload(s), %d warning(s)", len(result.items), len(paths), len(result.warnings)
    )
    return result


def _dicom_item(paths: list[Path], ds: pydicom.Dataset, frames: int) -> StudyItem:
    modality = str(getattr(ds, "Modality", "") or "DICOM")
    rows, cols = getattr(ds, "Rows", "?"), getattr(ds, "Columns", "?")
    label = f"{modality} · {cols}×{rows}" + (f" · {frames} frames" if frames > 1 else "")
    return StudyItem(kind="dicom", paths=paths, label=label, frames_total=frames, modality=modality)


def _delete_upload(path: Path) -> None:
    """Remove a raw upload and its (Gradio per-upload) folder when that is left empty."""
    try:
        path.unlink(missing_ok=True)
        parent = path.parent
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
    except OSError as e:
        log.warning("could not delete a raw upload: %s", type(e).__name__)
