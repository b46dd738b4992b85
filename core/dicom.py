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

Every failure raises :class:`DicomError` naming the file, the tag and the problem.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mmap
import os
import struct
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

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

_DEFLATED = "1.2.840.10008.1.2.1.99"
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


def is_dicom_bytes(head: bytes) -> bool:
    """True when the bytes start with a DICOM preamble (``DICM`` at offset 128)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


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


def map_file(path: str | os.PathLike[str], label: str, limits: DecodeLimits) -> bytes | mmap.mmap:
    """The file's bytes as a read-only memory map (no copy), after the byte-size guard."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limits.max_bytes:
                raise DicomError(label, f"file is {size} bytes, over the limit of {limits.max_bytes}")
            if size == 0:
                return b""
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise DicomError(label, f"cannot read file: {e.strerror or e}") from e


def _opener(buf: bytes | mmap.mmap) -> tuple[Any, Any]:
    stream: Any = buf if isinstance(buf, mmap.mmap) else BytesIO(buf)

    def opener() -> Any:
        stream.seek(0)
        return nullcontext(stream)  # pydicom reads the map in place; it stays open for the frame view

    return stream, opener


def _parse_header(buf: bytes | mmap.mmap, label: str, *, pixels_later: bool) -> tuple[Dataset, int]:
    """The dataset up to its pixel data, and the offset where parsing stopped.

    A deflated file whose pixels will be wanted (``pixels_later``) is parsed whole: an offset in the
    inflated stream could not be resumed from ``buf``.
    """
    stream, opener = _opener(buf)
    whole = pixels_later and _declared_transfer_syntax(buf) == _DEFLATED
    ds = _parse(opener, label, stop_before_pixels=not whole)
    return ds, stream.tell()


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _declared_transfer_syntax(buf: bytes | mmap.mmap) -> str | None:
    """TransferSyntaxUID (0002,0010) read from the raw file meta group, or None when there is none.

    The group is always explicit VR little endian (PS3.10 7.1) and short: walking its elements
    here costs nothing, and tells before the dataset is parsed how its body is encoded.
    """
    pos = 132 if is_dicom_bytes(bytes(buf[:132])) else 0
    while pos + 8 <= len(buf):
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            return None
        vr = bytes(buf[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > len(buf):
                return None
            (length,), value = struct.unpack_from("<I", buf, pos + 8), pos + 12
        else:
            (length,), value = struct.unpack_from("<H", buf, pos + 6), pos + 8
        if elem == 0x0010:
            return bytes(buf[value : value + length]).rstrip(b"\x00 ").decode("ascii", "replace")
        pos = value + length
    return None


def _complete(header: Dataset, offset: int, buf: bytes | mmap.mmap, label: str) -> Dataset:
    """Add the pixel data to a header parsed by :func:`_parse_header` (the header is reused, not re-parsed)."""
    if hasattr(header, "_infimed_pixels") or "PixelData" in header:
        return header
    view = _native_pixel_view(header, buf, offset) if _fast_path_ok(header) else None
    if view is not None:
        header._infimed_pixels = view  # zero-copy frame source for decode_frame's fast path
        return header
    rest = _read_rest(header, offset, buf)
    if rest is not None:
        for elem in rest:
            header[elem.tag] = elem
        return header
    _, opener = _opener(buf)
    return _parse(opener, label, stop_before_pixels=False)


def _read_rest(header: Dataset, offset: int, buf: bytes | mmap.mmap) -> Dataset | None:
    """The elements after the header (pixel data and trailers), or None.

    Big-endian elements keep their raw bytes: pydicom's decoders swap them by the transfer syntax.
    """
    meta = getattr(header, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None or ts == _DEFLATED or offset >= len(buf):
        return None  # deflated: the offset is in the inflated stream (parse_header reads such files whole)
    try:
        implicit, little = UID(ts) == ImplicitVRLittleEndian, UID(ts) != ExplicitVRBigEndian
        stream = BytesIO(memoryview(buf)[offset:]) if isinstance(buf, mmap.mmap) else BytesIO(buf)
        if not isinstance(buf, mmap.mmap):
            stream.seek(offset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rest = pydicom.filereader.read_dataset(stream, implicit, little)
    except _DECODE_ERRORS:
        return None
    return rest if len(rest) else None


def _fast_path_ok(ds: Dataset) -> bool:
    try:
        return (
            int(ds.get("SamplesPerPixel", 1) or 1) == 1
            and int(ds.get("BitsAllocated", 0) or 0) in (8, 16)
            and str(ds.get("PhotometricInterpretation", "")).strip() in ("MONOCHROME1", "MONOCHROME2")
        )
    except (TypeError, ValueError):
        return False


def _native_pixel_view(ds: Dataset, buf: bytes | mmap.mmap, pos: int) -> memoryview | None:
    """The PixelData value of a native file as little-endian bytes, or None.

    Little endian: a view into ``buf`` (no copy). Big endian: 16-bit words (VR OW) swapped once into
    a new buffer; 8-bit big-endian data is left to pydicom (OW bytes are swapped in pairs, PS3.5 A.3).
    """
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    big = ts == ExplicitVRBigEndian
    if ts not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian) or len(buf) < pos + 12:
        return None
    order = ">" if big else "<"
    group, elem = struct.unpack_from(f"{order}HH", buf, pos)
    if (group, elem) != (0x7FE0, 0x0010):
        return None
    vr = bytes(buf[pos + 4 : pos + 6])
    if ts == ImplicitVRLittleEndian:
        (length,), offset = struct.unpack_from("<I", buf, pos + 4), pos + 8
    elif vr in (b"OB", b"OW", b"UN", b"OV", b"OF", b"OD"):
        (length,), offset = struct.unpack_from(f"{order}I", buf, pos + 8), pos + 12
    else:
        return None
    if length == 0xFFFFFFFF:
        return None
    view = memoryview(buf)[offset : offset + length]
    if not big:
        return view
    if vr != b"OW" or int(ds.get("BitsAllocated", 0) or 0) != 16 or len(view) % 2:
        return None
    return memoryview(np.frombuffer(view, dtype=">u2").astype("<u2")).cast("B")


def _parse(opener: Any, label: str, *, stop_before_pixels: bool) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with opener() as fh:
                return pydicom.dcmread(fh, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            pass
        except _DECODE_ERRORS as e:
            raise DicomError(label, f"cannot parse the DICOM header: {e}") from e
        # No preamble: accept only what parses into an image dataset.
        try:
            with opener() as fh:
                ds = pydicom.dcmread(fh, force=True, stop_before_pixels=stop_before_pixels)
            ok = "Rows" in ds and "Columns" in ds and (stop_before_pixels or "PixelData" in ds)
        except (*_DECODE_ERRORS, InvalidDicomError):
            ok = False
        if not ok:
            raise DicomError(label, "not a DICOM file (no DICM preamble and no image header)")
    _infer_transfer_syntax(ds, label)
    return ds


def _infer_transfer_syntax(ds: Dataset, label: str) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    if "PixelData" in ds and ds["PixelData"].is_undefined_length:
        raise DicomError(label, "compressed pixel data without a transfer syntax", tag="(0002,0010) TransferSyntaxUID")
    implicit, little = getattr(ds, "original_encoding", (True, True))
    ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts


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
