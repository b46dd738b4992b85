"""Decode each image of a sample once and measure what the scorers need.

Per image: size and frames, a grey 8-bit array (at most 512 px a side) for the statistics, colourfulness,
sha256 of the file bytes, a perceptual hash, and for DICOM the few header fields curation reasons about
(modality, body part, BurnedInAnnotation, which identifying attributes are filled). Patient names from
the header stay in memory (to find them in the text) and are never written anywhere.

DICOM pixels for the statistics: first frame (middle frame of a multi-frame object, middle file of a
series) → modality LUT (rescale slope/intercept) → the file's first window if it has one, else the
1st–99th percentile → 8 bit; MONOCHROME1 is inverted. This is a measurement, not model input: pixels
that reach a model go through ``core.render``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STATS_SIDE = 512
READ_ONCE_MAX = 64 << 20  # bytes read whole for hashing + decoding; larger files are streamed
# Attributes whose presence means the file is not de-identified (PS3.15 Basic Profile, the direct ones).
HEADER_PHI_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
)


@dataclass
class ImageInfo:
    """What curation knows about one image slot (``error`` set when it could not be decoded)."""

    path: str
    kind: str
    width: int | None = None
    height: int | None = None
    frames: int = 1
    gray: np.ndarray | None = field(default=None, repr=False)
    colorfulness: float = 0.0
    sha256: str | None = None
    phash: str | None = None
    error: str | None = None
    modality: str | None = None
    body_part: str | None = None
    burned_in: str | None = None
    burned_in_risk: str | None = None
    identity_removed: bool = False
    header_phi: list[str] = field(default_factory=list)
    person_names: list[str] = field(default_factory=list, repr=False)
    patient_key: str | None = field(default=None, repr=False)
    study_uid: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None and self.gray is not None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_once(path: Path) -> tuple[bytes | None, str]:
    """(bytes, sha256): one read serves the hash and the decoder. Files over ``READ_ONCE_MAX`` are
    hashed in chunks and decoded from the path instead (bytes None), to bound memory."""
    if path.stat().st_size > READ_ONCE_MAX:
        return None, file_sha256(path)
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def _phash(gray: np.ndarray) -> str:
    import imagehash
    from PIL import Image

    im = Image.fromarray(gray)
    factor = min(im.size) // 128
    if factor >= 2:  # box-reduce first: the 32² DCT input barely changes, the resize gets ~5× cheaper
        im = im.reduce(factor)
    return str(imagehash.phash(im))


def _colorfulness(rgb: np.ndarray) -> float:
    """Hasler–Süsstrunk colourfulness of an RGB array (0 for grey images, ~>20 for clearly coloured)."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _to_uint8(arr: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    a = arr.astype(np.float32)
    if window is not None and window[1] > 0:
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:
        lo, hi = (float(x) for x in np.percentile(a, (1, 99)))
    if hi <= lo:
        hi = lo + 1
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _shrink(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape[:2]
    if max(h, w) <= STATS_SIDE:
        return gray
    from PIL import Image

    scale = STATS_SIDE / max(h, w)
    im = Image.fromarray(gray).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return np.asarray(im)


def _first(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _burned_in_reason(ds: Any) -> str | None:
    """``core.dicom.burned_in_reason`` (the renderer's own rule), so curation and rendering agree."""
    from core.dicom import burned_in_reason

    return burned_in_reason(ds)


def analyse_dicom(path: Path, info: ImageInfo, data: bytes | None = None) -> None:
    """Fill ``info`` from a DICOM file (header first, then pixels); ``data``: its bytes when already read."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data) if data is not None else path)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError) as e:
        info.error = f"not a readable DICOM file ({type(e).__name__})"
        return
    info.modality = str(ds.get("Modality", "") or "") or None
    info.body_part = str(ds.get("BodyPartExamined", "") or "") or None
    info.burned_in = str(ds.get("BurnedInAnnotation", "") or "").upper() or None
    info.burned_in_risk = _burned_in_reason(ds)
    info.identity_removed = str(ds.get("PatientIdentityRemoved", "") or "").upper() == "YES"
    info.header_phi = [t for t in HEADER_PHI_TAGS if str(ds.get(t, "") or "").strip()]
    info.person_names = [
        str(ds.get(t))
        for t in ("PatientName", "OtherPatientNames", "ReferringPhysicianName")
        if str(ds.get(t, "") or "").strip()
    ]
    info.patient_key = str(ds.get("PatientID", "") or "").strip() or None
    info.study_uid = str(ds.get("StudyInstanceUID", "") or "").strip() or None
    info.width = int(ds.get("Columns", 0) or 0) or None
    info.height = int(ds.get("Rows", 0) or 0) or None
    info.frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PixelData" not in ds:
        info.error = "DICOM file has no PixelData"
        return
    try:
        arr = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError, IndexError) as e:
        info.error = f"DICOM pixels cannot be decoded ({type(e).__name__})"
        return
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if info.frames > 1:
        arr = arr[info.frames // 2]
    if samples == 3 and arr.ndim == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        rgb = arr.astype(np.float32)
        if rgb.max() > 255:
            rgb = rgb * (255.0 / rgb.max())
        rgb8 = rgb.astype(np.uint8)
        info.colorfulness = _colorfulness(rgb8[::4, ::4])
        gray = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.uint8)
    elif photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds).astype(np.float32)
        rgb = rgb * (255.0 / max(1.0, float(rgb.max())))
        info.colorfulness = _colorfulness(rgb[::4, ::4].astype(np.uint8))
        gray = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.uint8)
    else:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        values = arr.astype(np.float32) * slope + intercept
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        gray = _to_uint8(values, (center, width) if center is not None and width else None)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
    info.gray = _shrink(np.ascontiguousarray(gray))


def analyse_picture(path: Path, info: ImageInfo, data: bytes | None = None) -> None:
    """Fill ``info`` from a PNG/JPEG/TIFF… file; ``data``: its bytes when already read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            info.width, info.height = im.size
            info.frames = int(getattr(im, "n_frames", 1) or 1)
            if im.format == "JPEG":
                im.draft("RGB", (STATS_SIDE, STATS_SIDE))  # decode at reduced scale: same statistics, faster
            if im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA"):
                rgb = np.asarray(im.convert("RGB"))
                info.colorfulness = _colorfulness(rgb[::4, ::4])
                gray = np.asarray(im.convert("L"))
            elif im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                gray = _to_uint8(np.asarray(im), None)
            else:
                gray = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        info.error = f"image cannot be decoded ({type(e).__name__})"
        return
    info.gray = _shrink(np.ascontiguousarray(gray))


def analyse_image(path: Path, kind: str, files: list[Path] | None = None) -> ImageInfo:
    """Decode and measure one image slot. Never raises for bad data: ``ImageInfo.error`` says what failed."""
    info = ImageInfo(path=str(path), kind=kind)
    target = path
    if kind == "series":
        if not files:
            info.error = "series without files"
            return info
        target = files[len(files) // 2]
    if not target.is_file():
        info.error = "file not found"
        return info
    try:
        data, info.sha256 = _read_once(target)
    except OSError as e:
        info.error = f"cannot read file ({e.strerror})"
        return info
    if data is None:
        with target.open("rb") as fh:
            head = fh.read(132)
    else:
        head = data[:132]
    if kind in ("dicom", "series") or target.suffix.lower() in (".dcm", ".dicom") or head[128:132] == b"DICM":
        analyse_dicom(target, info, data)
        if kind == "series" and files:
            info.frames = max(info.frames, len(files))
    else:
        analyse_picture(target, info, data)
    if info.gray is not None:
        if info.gray.size == 0 or info.gray.ndim != 2:
            info.error, info.gray = "image has no pixels", None
        else:
            info.phash = _phash(info.gray)
    return info
