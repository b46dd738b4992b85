"""DICOM reading, guards, pixel decoding and the grey/colour pipeline down to 8 bits.

Order of steps for one frame (PS3.3 C.11, PS3.4 N.2):

1. guards before any pixel is decoded: file bytes, then rows × columns × frames × samples;
2. decode the frame with pydicom's pixel backends (python-gdcm for JPEG-LS / lossless JPEG,
   pylibjpeg-openjpeg for JPEG 2000, pylibjpeg-rle for RLE, imagecodecs for 12-bit JPEG);
   native little-endian data is read straight from the element without a copy (16-bit big-endian
   grey data with one byte swap);
3. grey images: modality LUT (RescaleSlope/Intercept, per-frame functional groups or Modality LUT
   Sequence → HU for CT) → VOI (preset, explicit centre/width, the file's window, its VOI LUT
   Sequence, or percentiles) → presentation (MONOCHROME1 / PresentationLUTShape inversion, or the
   Presentation LUT Sequence's table) → ``uint8``. Integer data of ≤ 16 bits goes through one lookup
   table built over every possible stored value;
4. colour images: PALETTE COLOR through its palette, YBR_* converted to RGB by the decoder, more
   than 8 bits scaled down.

Every failure raises :class:`DicomError` naming the file, the tag and the problem. The raw file
reading under ``parse_header`` / ``read_dicom`` (memory maps, the one header parse, finishing the
pixel data) lives in :mod:`core._read`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mmap
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from core._errors import BurnedInTextError, DicomError, RenderError
from core._pixels import (
    _DECODE_ERRORS,
    Frame,
    FrameTransform,
    Presentation,
    _first_line,
    _int_tag,
    frame_to_uint8,
    frame_transform,
    presentation_inverts,
    presentation_lut,
    resolve_presentation,
    resolve_window,
)
from core._read import _DEFLATED, _complete, _parse_header, is_dicom_bytes, map_file
from core._voi import COMPOSITES, PRESETS, Window

__all__ = [
    "COMPOSITES",
    "PRESETS",
    "BurnedInTextError",
    "DecodeLimits",
    "DicomError",
    "DicomFile",
    "Frame",
    "FrameTransform",
    "Presentation",
    "RenderError",
    "Window",
    "burned_in_reason",
    "check_geometry",
    "decode_frame",
    "dicom_part",
    "frame_count",
    "frame_order",
    "frame_to_uint8",
    "frame_transform",
    "is_dicom_bytes",
    "map_file",
    "parse_header",
    "presentation_inverts",
    "presentation_lut",
    "read_dicom",
    "resolve_presentation",
    "resolve_window",
    "select_frames",
    "slice_order",
]

log = logging.getLogger(__name__)

_NATIVE_LE = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, _DEFLATED}
_JPEG_12BIT = "1.2.840.10008.1.2.4.51"
DEFAULT_AUTO_FRAMES = 8
# Modalities whose images usually carry burned-in text when BurnedInAnnotation is absent.
_TEXT_PRONE_MODALITIES = {"US", "SC", "OT", "XC", "ES", "GM", "SM", "DOC"}
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class DecodeLimits:
    """Guards applied before decoding: file size in bytes and rows × columns × frames × samples."""

    max_bytes: int = 512 * 1024 * 1024
    max_pixels: int = 256 * 1024 * 1024


# --------------------------------------------------------------------------- reading and guards


@dataclass(eq=False)
class DicomFile:
    """A DICOM file whose header has been parsed once, up to its pixel data (:func:`parse_header`).

    Callers that need the header first (grouping by series, ordering, policies) keep this object
    and hand it to :func:`read_dicom` or ``core.render.render``, which finish reading the pixel data
    from ``pixel_offset`` without parsing the header again. A deflated file is parsed whole at once
    (its header then already holds the pixel data). ``sha256`` of the bytes is computed once.
    """

    data: bytes | mmap.mmap = field(repr=False)
    label: str
    header: Dataset = field(repr=False)  # up to the pixel data (a deflated file: the whole dataset)
    pixel_offset: int  # where the header parse stopped (the pixel data element, if any)
    _sha256: str | None = field(default=None, repr=False)
    _dataset: Dataset | None = field(default=None, repr=False)  # header + pixel data, once read

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.data).hexdigest()
        return self._sha256

    def __getstate__(self) -> dict[str, Any]:  # worker processes: a memory map travels as bytes
        state = dict(self.__dict__)
        state["data"] = bytes(self.data) if isinstance(self.data, mmap.mmap) else self.data
        return state


def parse_header(
    source: str | os.PathLike[str] | bytes | mmap.mmap,
    *,
    name: str | None = None,
    limits: DecodeLimits | None = None,
) -> DicomFile:
    """Parse a DICOM file's header once (byte-size guard, then up to the pixel data).

    A deflated file is parsed whole: its pixel data lies in the inflated stream, which pydicom
    inflates whole even for the header, so the one parse keeps the pixels too.
    Raises :class:`DicomError` for a file over ``limits.max_bytes``, non-DICOM bytes or an
    unparsable header. The pixel guard (rows × columns × frames) runs when the pixels are read.
    """
    limits = limits or DecodeLimits()
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<dicom>")
    if isinstance(source, (str, os.PathLike)):
        source = map_file(source, label, limits)
    elif isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if len(source) > limits.max_bytes:
        raise DicomError(label, f"file is {len(source)} bytes, over the limit of {limits.max_bytes}")
    header, offset = _parse_header(source, label, pixels_later=True)
    return DicomFile(source, label, header, offset)


def read_dicom(
    source: str | os.PathLike[str] | bytes | mmap.mmap | Dataset | DicomFile,
    *,
    name: str | None = None,
    limits: DecodeLimits | None = None,
    stop_before_pixels: bool = False,
) -> Dataset:
    """Read a DICOM file (path, bytes, a memory map, a :class:`DicomFile` or a dataset) and apply the guards.

    Files without the 128-byte preamble are accepted when they parse as a dataset with image tags;
    a missing TransferSyntaxUID is inferred from the encoding for native (uncompressed) data.
    Every file is parsed once: native little-endian pixel data is then viewed in place (no copy),
    16-bit big-endian grey data is viewed there and byte-swapped once, other pixel data is read from
    where the header ended. A deflated file (its transfer syntax read from the file meta group before
    the dataset) is parsed whole in that one parse: its pixel data lies in the inflated stream, which
    pydicom inflates whole anyway. A :class:`DicomFile` is finished without parsing its header again.
    Raises :class:`DicomError` for a file over ``limits.max_bytes``, non-DICOM bytes, an unparsable
    header, or an image over ``limits.max_pixels`` (checked before decoding).
    """
    limits = limits or DecodeLimits()
    if isinstance(source, DicomFile):
        label = name or source.label
        if len(source.data) > limits.max_bytes:
            raise DicomError(label, f"file is {len(source.data)} bytes, over the limit of {limits.max_bytes}")
        if stop_before_pixels:
            return source.header
        if source._dataset is None:
            source._dataset = _complete(source.header, source.pixel_offset, source.data, label)
        ds = source._dataset
        check_geometry(ds, label, limits)
        return ds
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<dicom>")
    if isinstance(source, Dataset):
        ds = source
    else:
        if isinstance(source, (str, os.PathLike)):
            source = map_file(source, label, limits)
        size = len(source)
        if size > limits.max_bytes:
            raise DicomError(label, f"file is {size} bytes, over the limit of {limits.max_bytes}")
        ds, offset = _parse_header(source, label, pixels_later=not stop_before_pixels)
        if stop_before_pixels:
            return ds
        ds = _complete(ds, offset, source, label)
    if not stop_before_pixels:
        check_geometry(ds, label, limits)
    return ds


def frame_count(ds: Dataset, label: str = "<dicom>") -> int:
    """NumberOfFrames (1 when absent); a malformed value raises :class:`DicomError`."""
    n = _int_tag(ds, "NumberOfFrames", "(0028,0008)", label, default=1)
    if n < 1:
        raise DicomError(label, f"must be ≥ 1, got {n}", tag="(0028,0008) NumberOfFrames")
    return n


def check_geometry(ds: Dataset, label: str, limits: DecodeLimits) -> None:
    """Refuse a dataset without pixels or over the pixel limit, before decoding anything."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")) and not hasattr(
        ds, "_infimed_pixels"
    ):
        raise DicomError(label, "no pixel data in this object", tag="(7FE0,0010) PixelData")
    rows = _int_tag(ds, "Rows", "(0028,0010)", label)
    cols = _int_tag(ds, "Columns", "(0028,0011)", label)
    spp = _int_tag(ds, "SamplesPerPixel", "(0028,0002)", label, default=1)
    _int_tag(ds, "BitsAllocated", "(0028,0100)", label)
    frames = frame_count(ds, label)
    if rows < 1 or cols < 1:
        raise DicomError(label, f"image size {cols}x{rows} is empty", tag="(0028,0010) Rows")
    total = rows * cols * frames * spp
    if total > limits.max_pixels:
        raise DicomError(
            label,
            f"{cols}x{rows}x{frames} frames x{spp} samples = {total} values, over the limit of {limits.max_pixels}",
            tag="(0028,0008) NumberOfFrames",
        )


# --------------------------------------------------------------------------- decoding


def decode_frame(ds: Dataset, index: int, label: str = "<dicom>") -> Frame:
    """Decode frame ``index`` (0-based). Native little-endian grey data is returned as raw words."""
    n = frame_count(ds, label)
    if not 0 <= index < n:
        raise DicomError(label, f"frame {index} requested but the object has {n}", tag="(0028,0008) NumberOfFrames")
    ts = UID(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else None
    fast = _native_gray(ds, index, ts, label)
    if fast is not None:
        return fast
    if ts == _JPEG_12BIT and _int_tag(ds, "BitsStored", "(0028,0101)", label, default=8) > 8:
        return Frame(_decode_jpeg12(ds, index, n, label))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            arr = pydicom.pixels.pixel_array(ds, index=index if n > 1 else None)
        except _DECODE_ERRORS as e:
            raise DicomError(
                label,
                f"cannot decode pixel data ({ts.name if ts else 'no transfer syntax'}): {_first_line(e)}",
                tag="(7FE0,0010) PixelData",
            ) from e
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return Frame(arr)


def _native_gray(ds: Dataset, index: int, ts: UID | None, label: str) -> Frame | None:
    view = getattr(ds, "_infimed_pixels", None)
    if view is None and (ts not in _NATIVE_LE or "PixelData" not in ds):
        return None
    if _int_tag(ds, "SamplesPerPixel", "(0028,0002)", label, default=1) != 1:
        return None
    if str(ds.get("PhotometricInterpretation", "")).strip() not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    bits = _int_tag(ds, "BitsAllocated", "(0028,0100)", label)
    if bits not in (8, 16):
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    per_frame = rows * cols * bits // 8
    data = view if view is not None else ds.PixelData
    if len(data) < per_frame * (index + 1):
        raise DicomError(
            label,
            f"pixel data is truncated: {len(data)} bytes, frame {index} needs {per_frame * (index + 1)}",
            tag="(7FE0,0010) PixelData",
        )
    arr = np.frombuffer(data, dtype=np.uint8 if bits == 8 else "<u2", count=rows * cols, offset=per_frame * index)
    return Frame(arr.reshape(rows, cols), raw_bits=bits)


def _decode_jpeg12(ds: Dataset, index: int, n: int, label: str) -> np.ndarray:
    try:
        import imagecodecs
    except ImportError as e:
        raise DicomError(
            label, "12-bit JPEG Extended needs the 'imagecodecs' package", tag="(0002,0010) TransferSyntaxUID"
        ) from e
    from pydicom.encaps import get_frame

    try:
        fragment = get_frame(ds.PixelData, index, number_of_frames=n)
        arr = imagecodecs.jpeg8_decode(fragment)
    except (*_DECODE_ERRORS, imagecodecs.Jpeg8Error) as e:
        raise DicomError(label, f"cannot decode 12-bit JPEG: {_first_line(e)}", tag="(7FE0,0010) PixelData") from e
    if arr.shape[:2] != (int(ds.Rows), int(ds.Columns)):
        raise DicomError(
            label, f"decoded size {arr.shape[1]}x{arr.shape[0]} differs from the header", tag="(0028,0010) Rows"
        )
    if int(ds.get("PixelRepresentation", 0)) == 1:
        arr = arr.astype(np.int16)
    return arr


# --------------------------------------------------------------------------- frames, series, policy


def select_frames(
    request: str | list[int] | None, n: int, *, max_images: int | None, label: str = "<dicom>"
) -> list[int]:
    """Frame (or slice) indices for ``"auto"``, ``"uniform:N"`` or an explicit list.

    ``auto``: frame 0 of a single-frame object, else ``uniform:min(n, max_images or 8)``.
    ``uniform:N``: N indices at the centres of N equal parts, N capped by ``n`` and ``max_images``.
    An explicit list must be in range and no longer than ``max_images``.
    """
    if request is None or request == "auto":
        if n == 1:
            return [0]
        request = f"uniform:{min(n, max_images or DEFAULT_AUTO_FRAMES)}"
    if isinstance(request, str):
        head, _, count = request.partition(":")
        if head != "uniform" or not count.isdigit() or int(count) < 1:
            raise RenderError(f"{label}: frames must be 'auto', 'uniform:N' or a list of indices, got {request!r}")
        k = min(int(count), n, max_images or n)
        return [(2 * i + 1) * n // (2 * k) for i in range(k)]
    if not request:
        raise RenderError(f"{label}: the frame list is empty")
    if max_images is not None and len(request) > max_images:
        raise RenderError(f"{label}: {len(request)} frames requested, the limit is {max_images}")
    bad = [i for i in request if not 0 <= int(i) < n]
    if bad:
        raise DicomError(
            label, f"frame index {bad[0]} out of range (the object has {n})", tag="(0028,0008) NumberOfFrames"
        )
    return [int(i) for i in request]


def slice_order(headers: list[Dataset], labels: list[str] | None = None) -> list[int]:
    """Order of the files of one series along the slice normal.

    Sorted by ImagePositionPatient · (row × column direction of ImageOrientationPatient) when every
    file has both, else by InstanceNumber, else kept as given. Files from several
    SeriesInstanceUIDs raise :class:`DicomError`.
    """
    labels = labels or [f"<file {i}>" for i in range(len(headers))]
    uids = {str(h.get("SeriesInstanceUID", "")) for h in headers}
    if len(uids) > 1:
        raise DicomError(
            labels[0],
            f"the files belong to {len(uids)} different series; render one series at a time",
            tag="(0020,000E) SeriesInstanceUID",
        )
    instance = [_instance_number(h) for h in headers]
    try:
        orientation = [h.get("ImageOrientationPatient") for h in headers]
        position = [h.get("ImagePositionPatient") for h in headers]
        if all(o is not None and len(o) == 6 for o in orientation) and all(
            p is not None and len(p) == 3 for p in position
        ):
            normal = np.cross(np.asarray(orientation[0][:3], float), np.asarray(orientation[0][3:], float))
            keys = [float(np.dot(np.asarray(p, float), normal)) for p in position]
            return sorted(range(len(headers)), key=lambda i: (keys[i], instance[i], i))
    except (TypeError, ValueError):
        log.debug("series: unusable orientation/position, falling back to InstanceNumber")
    return sorted(range(len(headers)), key=lambda i: (instance[i], i))


def frame_order(ds: Dataset, label: str = "<dicom>") -> list[int]:
    """Stored (0-based) frame indices of a multi-frame object in display order, along the slice normal.

    For enhanced objects (PerFrameFunctionalGroupsSequence, PS3.3 C.7.6.16), the first rule that
    every frame satisfies wins:

    1. PlanePositionSequence/ImagePositionPatient per frame and one PlaneOrientationSequence/
       ImageOrientationPatient shared by all frames (per-frame or shared group): sorted by StackID,
       then position · (row × column direction), then TemporalPositionIndex;
    2. FrameContentSequence/InStackPositionNumber: sorted by StackID, InStackPositionNumber,
       TemporalPositionIndex;
    3. FrameContentSequence/DimensionIndexValues: sorted by the index tuple (the writer's own order
       of dimensions);
    4. otherwise the stored order (US and XA clips, cine, objects without functional groups).

    Ties keep the stored order. Malformed values fall through to the next rule (logged at debug).
    """
    n = frame_count(ds, label)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if n < 2 or not per_frame or len(per_frame) < n:
        return list(range(n))
    items = [per_frame[i] for i in range(n)]
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared_item = shared[0] if shared else None
    content = [_first_item(item, "FrameContentSequence") for item in items]
    stack = [_stack_key(c.get("StackID") if c is not None else None) for c in content]
    temporal = [_number(c.get("TemporalPositionIndex")) if c is not None else 0.0 for c in content]
    try:
        keys = _plane_keys(items, shared_item)
        if keys is not None:
            return sorted(range(n), key=lambda i: (stack[i], keys[i], temporal[i], i))
    except (TypeError, ValueError, IndexError):
        log.debug("%s: unusable plane position/orientation, trying in-stack positions", label)
    if all(c is not None and c.get("InStackPositionNumber") is not None for c in content):
        try:
            in_stack = [float(c.InStackPositionNumber) for c in content]  # type: ignore[union-attr]
            return sorted(range(n), key=lambda i: (stack[i], in_stack[i], temporal[i], i))
        except (TypeError, ValueError):
            log.debug("%s: unusable InStackPositionNumber, trying dimension indices", label)
    if all(c is not None and c.get("DimensionIndexValues") is not None for c in content):
        try:
            dims = [tuple(int(v) for v in _as_list(c.DimensionIndexValues)) for c in content]  # type: ignore[union-attr]
            return sorted(range(n), key=lambda i: (dims[i], i))
        except (TypeError, ValueError):
            log.debug("%s: unusable DimensionIndexValues, keeping the stored order", label)
    return list(range(n))


def _first_item(item: Dataset | None, keyword: str) -> Dataset | None:
    seq = item.get(keyword) if item is not None else None
    return seq[0] if seq else None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]


def _number(value: Any) -> float:
    try:
        return float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


def _stack_key(value: Any) -> tuple[int, float, str]:
    text = str(value).strip() if value not in (None, "") else ""
    try:
        return (0, float(text), "") if text else (0, 0.0, "")
    except ValueError:
        return (1, 0.0, text)


def _plane_keys(items: list[Dataset], shared: Dataset | None) -> list[float] | None:
    """position · normal per frame, or None when a frame lacks a position or orientations differ."""
    shared_orientation = _first_item(shared, "PlaneOrientationSequence")
    positions, orientations = [], []
    for item in items:
        pos = _first_item(item, "PlanePositionSequence")
        ori = _first_item(item, "PlaneOrientationSequence") or shared_orientation
        if pos is None or ori is None or pos.get("ImagePositionPatient") is None:
            return None
        if ori.get("ImageOrientationPatient") is None:
            return None
        positions.append([float(v) for v in pos.ImagePositionPatient])
        orientations.append([float(v) for v in ori.ImageOrientationPatient])
    position = np.asarray(positions, dtype=float)
    orientation = np.asarray(orientations, dtype=float)
    if position.shape[1:] != (3,) or orientation.shape[1:] != (6,) or not np.isfinite(position).all():
        return None
    if not np.allclose(orientation, orientation[0], atol=1e-4):
        return None  # several orientations (e.g. a 3-plane localizer): no single normal
    normal = np.cross(orientation[0, :3], orientation[0, 3:])
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6:
        return None
    return [float(v) for v in position @ normal]


def _instance_number(h: Dataset) -> float:
    try:
        return float(h.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def burned_in_reason(ds: Dataset) -> str | None:
    """Why this image may carry burned-in text, or None.

    ``BurnedInAnnotation`` YES, or the tag absent on ultrasound, secondary capture and other
    modalities where text is usually burned in.
    """
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "the file declares burned-in annotation (BurnedInAnnotation = YES): the pixels may show patient data"
    if flag == "NO":
        return None
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality in _TEXT_PRONE_MODALITIES or sop_class.startswith(_SECONDARY_CAPTURE_PREFIX):
        kind = modality or "secondary capture"
        return f"BurnedInAnnotation is absent on a {kind} image, where text with patient data is usually burned into the pixels"
    return None


def dicom_part(path: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """The OpenAI content part for a DICOM file, in the gateway's wire format.

    ``options`` are :class:`core.manifest.RenderSpec` fields (``window``, ``composite``, ``frames``),
    validated here; e.g. ``dicom_part("ct.dcm", window="lung")``.
    """
    from core.manifest import RenderSpec

    spec = RenderSpec(**options)
    data = Path(path).read_bytes()
    url = "data:application/dicom;base64," + base64.b64encode(data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": url, "dicom": spec.model_dump(exclude_none=True)}}
