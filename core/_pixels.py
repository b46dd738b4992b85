"""Grey-scale and colour pixel pipeline of one decoded DICOM frame, down to ``uint8``.

Modality LUT (RescaleSlope/Intercept, per-frame functional groups, Modality LUT Sequence) → VOI
(preset, explicit, the file's window, its VOI LUT Sequence, or percentiles) → presentation
(MONOCHROME1 / PresentationLUTShape inversion, or the Presentation LUT Sequence's table) → 8 bits;
colour: PALETTE COLOR through the palette, RGB / YBR (already RGB from the decoder) scaled to 8 bits.
Public names are re-exported by ``core.dicom``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from core._errors import DicomError, RenderError
from core._voi import (
    COMPOSITES,
    Window,
    apply_window,
    percentile_window,
    resolve_preset,
    sample_for_percentiles,
    stored_domain,
    to_uint8,
)

_DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    AttributeError,
    NotImplementedError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    OSError,
)


@dataclass
class Frame:
    """One decoded frame. ``raw_bits`` is set when ``data`` holds raw words (mask/sign not applied)."""

    data: np.ndarray
    raw_bits: int | None = None


def _int_tag(ds: Dataset, keyword: str, tag: str, label: str, default: int | None = None) -> int:
    try:
        value = ds.get(keyword, default)
    except _DECODE_ERRORS as e:
        raise DicomError(label, f"unreadable value: {e}", tag=f"{tag} {keyword}") from e
    if value is None or value == "":
        if default is None:
            raise DicomError(label, "required tag is missing", tag=f"{tag} {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise DicomError(label, f"not an integer: {value!r}", tag=f"{tag} {keyword}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return " ".join(t.strip() for t in text[:3])[:300] or type(e).__name__


@dataclass(frozen=True)
class FrameTransform:
    """Per-frame modality and VOI attributes (enhanced objects keep them in functional groups)."""

    slope: float
    intercept: float
    centers: tuple[float, ...]
    widths: tuple[float, ...]
    function: str


def _functional(ds: Dataset, index: int, seq: str) -> Dataset | None:
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > i and seq in items[i] and len(items[i][seq].value):
            return items[i][seq][0]
    return None


def _floats(value: Any) -> tuple[float, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return tuple(float(v) for v in value)
    return (float(value),)


def frame_transform(ds: Dataset, index: int, label: str = "<dicom>") -> FrameTransform:
    """Rescale and window of frame ``index``: per-frame group, then shared group, then top level."""
    pvt = _functional(ds, index, "PixelValueTransformationSequence") or ds
    voi = _functional(ds, index, "FrameVOILUTSequence") or ds
    try:
        slope = float(pvt.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(pvt.get("RescaleIntercept", 0.0) or 0.0)
        centers = _floats(voi.get("WindowCenter"))
        widths = _floats(voi.get("WindowWidth"))
    except (TypeError, ValueError) as e:
        raise DicomError(label, f"malformed rescale or window value: {e}", tag="(0028,1052) RescaleIntercept") from e
    function = str(voi.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    return FrameTransform(slope, intercept, centers, widths, function)


def presentation_inverts(ds: Dataset, photometric: str, label: str = "<dicom>") -> bool:
    """Whether the VOI output is inverted before display (PS3.3 C.11.6, C.7.6.3.1.2, C.8.11.1.1.1).

    The Presentation LUT is the last grey-scale step, after the VOI LUT. ``PresentationLUTShape``
    INVERSE inverts the VOI output (P-value = max − value); IDENTITY leaves it. MONOCHROME1 means
    the minimum is displayed white, i.e. the same inversion: where both appear (DX, MG, IO require
    INVERSE with MONOCHROME1) they describe one inversion, never two. A MONOCHROME1 image whose
    shape says IDENTITY is still inverted (the photometric interpretation defines the polarity of
    the stored values; such headers are known errors of some CR/DX writers). With a Presentation
    LUT Sequence this is False: its table defines the P-values, inversion included (see
    :func:`presentation_lut`); a shape beside it is ignored (the module holds one or the other).
    Another shape value raises :class:`DicomError` naming (2050,0020).
    """
    if "PresentationLUTSequence" in ds:
        return False
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if shape not in ("", "IDENTITY", "INVERSE"):
        raise DicomError(
            label, f"unknown value {shape!r} (IDENTITY or INVERSE expected)", tag="(2050,0020) PresentationLUTShape"
        )
    return photometric == "MONOCHROME1" or shape == "INVERSE"


_PLUT_TAG = "(2050,0010) PresentationLUTSequence"


def presentation_lut(ds: Dataset, label: str = "<dicom>") -> np.ndarray | None:
    """The Presentation LUT Sequence's P-values scaled to ``[0, 1]`` (float64, one per entry), or None.

    PS3.3 C.11.6.1: the sequence's item holds LUTDescriptor [entries (0 means 65536), first input
    value mapped (always 0, not used), bits per entry] and LUTData (US values, or OW words of which
    the low ``bits`` count; 8-bit tables may come as one byte per entry). Entry ``i`` is the P-value
    for the ``i``-th step of the VOI output range mapped onto the entries; P-values span
    ``0 .. 2**bits - 1`` (0 is the darkest) and are divided here by that maximum.
    None when the sequence is absent. An empty sequence, a malformed descriptor, missing LUTData,
    or a table whose length differs from the descriptor's entries raise :class:`DicomError` naming
    (2050,0010).
    """
    if "PresentationLUTSequence" not in ds:
        return None
    try:
        items = ds.PresentationLUTSequence
        item = items[0] if items else None
        descriptor = item.get("LUTDescriptor") if item is not None else None
        elem = item["LUTData"] if item is not None and "LUTData" in item else None
        value = elem.value if elem is not None else None
    except _DECODE_ERRORS as e:
        raise DicomError(label, f"unreadable sequence: {_first_line(e)}", tag=_PLUT_TAG) from e
    if item is None:
        raise DicomError(label, "the sequence has no item", tag=_PLUT_TAG)
    if descriptor is None:
        raise DicomError(label, "LUTDescriptor is missing", tag=_PLUT_TAG)
    try:
        entries, _first_mapped, bits = (int(v) for v in descriptor)
    except (TypeError, ValueError) as e:
        raise DicomError(label, f"malformed LUTDescriptor {descriptor!r} (3 values expected)", tag=_PLUT_TAG) from e
    entries = entries % 65536 or 65536  # 0 means 2**16 (a signed VR may read 32768 as negative)
    if not 1 <= bits <= 16:
        raise DicomError(label, f"LUTDescriptor gives {bits} bits per entry (1 to 16 expected)", tag=_PLUT_TAG)
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        raise DicomError(label, "LUTData is missing", tag=_PLUT_TAG)
    if isinstance(value, (bytes, bytearray, memoryview)):  # OW: raw words in the file's byte order
        raw = bytes(value)
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        if len(raw) == 2 * entries:
            table = np.frombuffer(raw, dtype="<u2" if little else ">u2").astype(np.int64)
        elif bits <= 8 and len(raw) in (entries, entries + 1):  # one byte per entry (+ padding to even)
            table = np.frombuffer(raw[:entries], dtype=np.uint8).astype(np.int64)
        else:
            raise DicomError(
                label,
                f"LUTData holds {len(raw)} bytes, the descriptor's {entries} entries need {2 * entries}",
                tag=_PLUT_TAG,
            )
    else:
        table = np.asarray(value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value])
        if table.size != entries:
            raise DicomError(
                label, f"LUTData holds {table.size} values, the descriptor says {entries} entries", tag=_PLUT_TAG
            )
        table = table.astype(np.int64)
    table &= (1 << bits) - 1  # unused high bits carry nothing (as for stored pixel values)
    return table.astype(np.float64) / float((1 << bits) - 1)


@dataclass(frozen=True)
class Presentation:
    """The last grey-scale step (PS3.3 C.11.6): VOI output in ``[0, 1]`` → P-values → ``uint8``.

    ``kind``: ``identity``; ``inverse`` (MONOCHROME1 or PresentationLUTShape INVERSE, one inversion);
    ``lut`` (a Presentation LUT Sequence: ``p_values`` holds :func:`presentation_lut` as float64
    bytes, which keeps the object hashable, so that it keys the cached lookup tables).
    """

    kind: Literal["identity", "inverse", "lut"] = "identity"
    p_values: bytes = b""

    def to_uint8(self, unit: np.ndarray) -> np.ndarray:
        """VOI output in ``[0, 1]`` (float) → ``uint8`` display values.

        ``lut``: the VOI output range is mapped onto the table's entries (``rint(v × (entries − 1))``),
        the entry's P-value (``0 .. 2**bits − 1``) is scaled to ``0 .. 255``. The table is indexed
        with the VOI output before it is rounded to 8 bits, so a 12-bit VOI LUT Sequence feeds a
        4096-entry table exactly and a steep curve (a gamma) keeps its low steps; the cost is the
        same as a table over 8-bit values, since this runs on the stored-value lookup table.
        """
        if self.kind != "lut":
            return to_uint8(unit, invert=self.kind == "inverse")
        table = np.frombuffer(self.p_values, dtype=np.float64)
        index = np.rint(np.clip(unit, 0.0, 1.0) * (table.size - 1)).astype(np.intp)
        return to_uint8(np.take(table, index, mode="clip"))  # clip: a NaN (float data) shows black


def resolve_presentation(ds: Dataset, label: str = "<dicom>") -> Presentation | None:
    """The presentation step of a grey image: its Presentation LUT Sequence, else an inversion or none.

    None for a colour image (the step is grey-scale only).

    With a Presentation LUT Sequence the table defines the P-values and MONOCHROME1 adds no
    inversion of its own (choice): P-values are by definition display values (0 is the darkest,
    PS3.3 C.11.6), so a table written for a MONOCHROME1 image carries its inversion, as
    PresentationLUTShape INVERSE does beside MONOCHROME1; a presentation state's pipeline likewise
    overrides the image's photometric interpretation (PS3.4 N.2.1.4, note 1). Inverting as well
    would invert twice. Without a sequence, see :func:`presentation_inverts`.
    """
    photometric = _photometric(ds)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    table = presentation_lut(ds, label)
    if table is not None:
        return Presentation("lut", table.tobytes())
    return Presentation("inverse" if presentation_inverts(ds, photometric, label) else "identity")


def _photometric(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()


def _modality(values: np.ndarray, ds: Dataset, ft: FrameTransform) -> np.ndarray:
    if "ModalityLUTSequence" in ds:
        return pydicom.pixels.apply_modality_lut(values.astype(np.int64), ds).astype(np.float64)
    return values.astype(np.float64) * ft.slope + ft.intercept


def _file_window(ft: FrameTransform) -> Window | None:
    for c, w in zip(ft.centers, ft.widths):
        if w > 0:
            return Window(center=c, width=w, source="file", function=ft.function)  # type: ignore[arg-type]
    return None


def resolve_window(request: str | dict[str, float] | Window | None) -> Window | None:
    """A preset name, ``{"center", "width"}``, or a :class:`Window` → Window; ``None``/``"auto"`` → None."""
    if request is None or request == "auto":
        return None
    if isinstance(request, Window):
        return request
    if isinstance(request, dict):
        return Window(center=float(request["center"]), width=float(request["width"]), source="explicit")
    try:
        return resolve_preset(request)
    except KeyError as e:
        raise RenderError(str(e.args[0])) from e


@lru_cache(maxsize=128)
def _rescale_lut(
    bits_index: int,
    signed: bool,
    bits_stored: int,
    slope: float,
    intercept: float,
    windows: tuple[Window, ...],
    presentation: Presentation,
) -> np.ndarray:
    domain = stored_domain(bits_index, signed=signed, bits_stored=bits_stored).astype(np.float64) * slope + intercept
    tables = [presentation.to_uint8(apply_window(domain, w)) for w in windows]
    return tables[0] if len(tables) == 1 else np.ascontiguousarray(np.stack(tables, axis=-1))


def frame_to_uint8(
    ds: Dataset,
    frame: Frame,
    index: int,
    *,
    window: Window | None = None,
    composite: str | None = None,
    label: str = "<dicom>",
) -> tuple[np.ndarray, list[Window] | None]:
    """One decoded frame → ``uint8`` (H×W grey or H×W×3 RGB) and the window(s) used.

    Grey images follow modality LUT → VOI → presentation (MONOCHROME1 or Presentation LUT Shape
    INVERSE: one inversion, see :func:`presentation_inverts`; or the Presentation LUT Sequence's
    table, see :func:`resolve_presentation`) → 8 bits. ``window`` None means the file's
    window, else its VOI LUT Sequence, else the 0.5–99.5 percentiles (``auto``). ``composite``
    (``"ct3"``) puts three preset windows into R, G, B. Colour images ignore windows (returns None).
    """
    photometric = _photometric(ds)
    presentation = resolve_presentation(ds, label)
    if presentation is None:
        if composite:
            raise RenderError(f"{label}: composite {composite!r} needs a grey-scale image, this one is {photometric}")
        return _color_to_uint8(ds, frame.data, photometric, label), None
    ft = frame_transform(ds, index, label)
    if composite:
        if composite not in COMPOSITES:
            raise RenderError(f"unknown composite {composite!r} (known: {', '.join(COMPOSITES)})")
        windows = [resolve_preset(p) for p in COMPOSITES[composite]]
    else:
        windows = [window] if window is not None else []

    data = frame.data
    if frame.raw_bits is not None:
        bits_index, signed = frame.raw_bits, int(ds.get("PixelRepresentation", 0)) == 1
        bits_stored = _int_tag(ds, "BitsStored", "(0028,0101)", label, default=frame.raw_bits)
        index_array = data
    elif data.dtype in (np.uint8, np.int8, np.uint16, np.int16) and data.ndim == 2:
        bits_index = data.dtype.itemsize * 8
        signed, bits_stored = data.dtype.kind == "i", bits_index
        index_array = data.view(np.uint8 if bits_index == 8 else np.uint16)
    else:
        return _float_gray(ds, data, ft, windows, presentation, label)

    def domain_values(idx: np.ndarray) -> np.ndarray:
        return stored_domain(bits_index, signed=signed, bits_stored=bits_stored)[idx]

    if not windows:
        auto = _file_window(ft)
        if auto is None and "VOILUTSequence" in ds:
            return _voi_lut_sequence(ds, index_array, domain_values, ft, presentation, label)
        if auto is None:
            sample = domain_values(sample_for_percentiles(index_array))
            auto = percentile_window(_modality(sample, ds, ft))
        windows = [auto]
    if "ModalityLUTSequence" in ds:
        modality_domain = _modality(stored_domain(bits_index, signed=signed, bits_stored=bits_stored), ds, ft)
        tables = [presentation.to_uint8(apply_window(modality_domain, w)) for w in windows]
        lut = tables[0] if len(tables) == 1 else np.stack(tables, axis=-1)
    else:
        lut = _rescale_lut(bits_index, signed, bits_stored, ft.slope, ft.intercept, tuple(windows), presentation)
    return np.take(lut, index_array, axis=0), windows  # take: about 2x faster than fancy indexing


def _float_gray(
    ds: Dataset,
    data: np.ndarray,
    ft: FrameTransform,
    windows: list[Window],
    presentation: Presentation,
    label: str,
) -> tuple[np.ndarray, list[Window]]:
    if data.ndim != 2:
        raise DicomError(label, f"grey image with unexpected shape {data.shape}", tag="(0028,0002) SamplesPerPixel")
    values = (
        data.astype(np.float64) * ft.slope + ft.intercept
        if "ModalityLUTSequence" not in ds
        else _modality(data, ds, ft)
    )
    if not windows:
        windows = [_file_window(ft) or percentile_window(sample_for_percentiles(values))]
    planes = [presentation.to_uint8(apply_window(values, w)) for w in windows]
    return (planes[0] if len(planes) == 1 else np.stack(planes, axis=-1)), windows


def _voi_lut_sequence(
    ds: Dataset,
    index_array: np.ndarray,
    domain_values: Any,
    ft: FrameTransform,
    presentation: Presentation,
    label: str,
) -> tuple[np.ndarray, list[Window]]:
    item = ds.VOILUTSequence[0]
    try:
        first = int(item.LUTDescriptor[1])
        n_entries = int(item.LUTDescriptor[0]) or 65536
        out_bits = int(item.LUTDescriptor[2])
    except (AttributeError, IndexError, TypeError, ValueError) as e:
        raise DicomError(label, f"malformed VOI LUT descriptor: {e}", tag="(0028,3002) LUTDescriptor") from e
    full = np.arange(1 << (16 if index_array.dtype == np.uint16 else 8))
    modality = _modality(domain_values(full), ds, ft)
    try:
        mapped = pydicom.pixels.apply_voi(np.rint(modality).astype(np.int64), ds, index=0)
    except _DECODE_ERRORS as e:
        raise DicomError(label, f"cannot apply the VOI LUT: {_first_line(e)}", tag="(0028,3010) VOILUTSequence") from e
    top = float((1 << out_bits) - 1) if out_bits <= 16 else float(np.max(mapped) or 1)
    lut = presentation.to_uint8(np.asarray(mapped, dtype=np.float64) / top)
    window = Window(center=first + n_entries / 2.0, width=float(n_entries), source="voi_lut")
    return np.take(lut, index_array, axis=0), [window]


def _color_to_uint8(ds: Dataset, data: np.ndarray, photometric: str, label: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        try:
            data = pydicom.pixels.apply_color_lut(data, ds)
        except _DECODE_ERRORS as e:
            raise DicomError(
                label, f"cannot apply the palette: {_first_line(e)}", tag="(0028,1201) RedPaletteColorLookupTableData"
            ) from e
        if data.dtype != np.uint8:
            # Palette entries are 8 or 16 bits (LUT Descriptor, third value); 16-bit entries keep the top byte.
            try:
                bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
            except (AttributeError, IndexError, KeyError, TypeError, ValueError):
                bits = 16 if int(data.max(initial=0)) > 255 else 8
            data = (data >> 8).astype(np.uint8) if bits > 8 else np.clip(data, 0, 255).astype(np.uint8)
        return data
    if data.ndim != 3 or data.shape[-1] != 3:
        raise DicomError(
            label, f"colour image with unexpected shape {data.shape}", tag="(0028,0004) PhotometricInterpretation"
        )
    if data.dtype == np.uint8:
        return data
    if data.dtype.kind in "ui":
        bits = _int_tag(ds, "BitsStored", "(0028,0101)", label, default=data.dtype.itemsize * 8)
        return np.clip(data.astype(np.int64) >> max(0, bits - 8), 0, 255).astype(np.uint8)
    return to_uint8((data - data.min()) / max(float(data.max() - data.min()), 1e-12))
