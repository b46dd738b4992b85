"""Raw DICOM file reading: memory-mapping, the one header parse, and finishing the pixel data.

What :mod:`core.dicom` builds its public readers (``parse_header``, ``read_dicom``) on:

- :func:`map_file`: a path as a read-only memory map, after the byte-size guard;
- :func:`_parse_header`: the dataset up to its pixel data and the offset where parsing stopped
  (a deflated file, detected from the raw file meta group, parsed whole);
- :func:`_complete`: the pixel data added to such a header without parsing it again (native grey
  data viewed in place, 16-bit big-endian grey byte-swapped once, else the rest read from the offset);
- :func:`_parse`: pydicom's parse with the no-preamble fallback and an inferred transfer syntax.

Every failure raises :class:`DicomError` naming the file (and the tag, where there is one).
"""

from __future__ import annotations

import mmap
import os
import struct
import warnings
from contextlib import nullcontext
from io import BytesIO
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from core._errors import DicomError
from core._pixels import _DECODE_ERRORS

if TYPE_CHECKING:  # annotation only: core.dicom imports this module
    from core.dicom import DecodeLimits

_DEFLATED = "1.2.840.10008.1.2.1.99"


def is_dicom_bytes(head: bytes) -> bool:
    """True when the bytes start with a DICOM preamble (``DICM`` at offset 128)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


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
