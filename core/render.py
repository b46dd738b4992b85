"""``render``: the only way pixels reach a model (gateway, training loader and UI preview alike).

``render(source, spec, budget)`` turns a DICOM file, a DICOM series, or a PNG/JPEG/WebP image into
8-bit RGB PIL images resized to the model's pixel budget, plus a :class:`RenderRecord` of what was
done (window per image, frames chosen, original size, visual tokens, input hash). It is
deterministic: the same input and spec give the same pixels in training and in serving.

Steps: detect the content → guards (bytes, pixels) → burned-in text policy → frame / slice
selection → decode → modality LUT → VOI → presentation (MONOCHROME1 / PresentationLUTShape
inversion, or the Presentation LUT Sequence) → RGB (see ``core.dicom``) → resize with
:meth:`PixelBudget.resized` (bicubic, aspect preserved) → RGB.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import hashlib
import logging
import math
import mmap
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Literal

import numpy as np
import pydicom
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict
from pydicom.dataset import Dataset

from core._errors import BurnedInTextError, DicomError, RenderError
from core._redact import redact_text
from core.budget import PixelBudget
from core.dicom import (
    DecodeLimits,
    DicomFile,
    Window,
    burned_in_reason,
    decode_frame,
    dicom_part,
    frame_count,
    frame_order,
    frame_to_uint8,
    is_dicom_bytes,
    map_file,
    read_dicom,
    resolve_presentation,
    resolve_window,
    select_frames,
    slice_order,
)
from core.manifest import RenderSpec
from core.metadata import safe_metadata

__all__ = [
    "BurnedInPolicy",
    "BurnedInTextError",
    "DicomError",
    "RenderError",
    "RenderRecord",
    "RenderSpec",
    "WindowRecord",
    "dicom_part",
    "render",
]

log = logging.getLogger(__name__)

BurnedInPolicy = Literal["refuse", "redact", "allow"]
SourceKind = Literal["dicom", "series", "png", "jpeg", "webp", "image"]
RenderSource = str | os.PathLike[str] | bytes | Dataset | DicomFile | Image.Image


class WindowRecord(BaseModel):
    """The VOI window applied to one image (or one channel of a composite)."""

    model_config = ConfigDict(frozen=True)

    source: str  # preset | explicit | file | voi_lut | auto
    center: float
    width: float
    name: str | None = None
    function: str = "LINEAR"


class RenderRecord(BaseModel):
    """What ``render`` did, JSON-serialisable; carries no identifiers (metadata is allowlisted)."""

    source_kind: SourceKind
    sha256: str | None = None
    original_size: tuple[int, int]  # (width, height) of the decoded frame
    frames_total: int = 1
    frames: list[int] = [0]  # positions in display order (along the slice normal for series and enhanced objects)
    source_frames: list[int] | None = None  # stored 0-based frame numbers of a multi-frame object, per image
    windows: list[list[WindowRecord]] = []  # per output image: 1 window, 3 for a composite, [] for colour
    composite: str | None = None
    photometric: str | None = None
    # Last grey-scale step (PS3.3 C.11.6): identity | inverse (MONOCHROME1 or PresentationLUTShape
    # INVERSE) | lut (Presentation LUT Sequence); None for colour, plain images and older records.
    presentation: str | None = None
    modality: str | None = None
    metadata: dict[str, Any] = {}
    output_sizes: list[tuple[int, int]] = []
    visual_tokens: list[int] | None = None
    resized: bool = False
    burned_in: str | None = None
    redacted_regions: int = 0

    @property
    def total_visual_tokens(self) -> int:
        return sum(self.visual_tokens or [])


# --------------------------------------------------------------------------- public entry point


def render(
    source: RenderSource | Sequence[RenderSource],
    spec: RenderSpec | None,
    budget: PixelBudget | None,
    *,
    max_images: int | None = None,
    policy: BurnedInPolicy = "refuse",
    limits: DecodeLimits | None = None,
    workers: int = 1,
    name: str | None = None,
) -> tuple[list[Image.Image], RenderRecord]:
    """Render ``source`` into RGB images sized for ``budget`` and a record of what was done.

    ``source``: bytes (PNG/JPEG/WebP/DICOM, detected by content), a path, a ``pydicom.Dataset``, a
    :class:`core.dicom.DicomFile` (a header already parsed by ``parse_header``: not parsed again), a
    PIL image, or a list of DICOM sources forming one series (sorted along the slice normal).
    Frames of an enhanced multi-frame object are ordered along the slice normal too
    (:func:`core.dicom.frame_order`); ``frames`` indices count in that order.
    ``spec``: window (preset | "auto" | {"center","width"}), composite ("ct3"), frames ("auto" |
    [i, …] | "uniform:N"); None means all defaults. ``budget`` None keeps the original size.
    ``max_images`` caps frames/slices; ``policy`` decides what happens to images that may carry
    burned-in text: ``refuse`` (raise :class:`BurnedInTextError`), ``redact`` (black out OCR-detected
    text, needs the ``rapidocr-onnxruntime`` extra) or ``allow`` (trusted, already de-identified data).
    ``workers`` > 1 renders the slices of a series in that many processes.
    Raises :class:`RenderError` (or its subclass :class:`DicomError`) for every refusal or failure.
    """
    spec = spec or RenderSpec()
    limits = limits or DecodeLimits()
    if max_images is not None and max_images < 1:
        raise RenderError(f"max_images must be ≥ 1, got {max_images}")
    if spec.composite is not None and spec.window not in (None, "auto"):
        raise RenderError(f"composite {spec.composite!r} sets its own windows; do not also give window {spec.window!r}")
    if isinstance(source, (list, tuple)):
        if not source:
            raise RenderError("empty list of sources")
        if len(source) > 1:
            return _render_series(list(source), spec, budget, max_images, policy, limits, workers, name)
        source = source[0]
    label = name or _label(source)
    if isinstance(source, Image.Image):
        return _render_image(source, None, "image", spec, budget, policy, label)
    if isinstance(source, Dataset):
        return _render_dicom(
            read_dicom(source, name=label, limits=limits), None, spec, budget, max_images, policy, label
        )
    if isinstance(source, DicomFile):
        ds = read_dicom(source, name=label, limits=limits)
        return _render_dicom(ds, source.sha256, spec, budget, max_images, policy, label)
    data = _read_bytes(source, label, limits)
    kind = _sniff(data)
    digest = hashlib.sha256(data).hexdigest()
    if kind in ("png", "jpeg", "webp"):
        return _render_image(_open_image(bytes(data), label, limits), digest, kind, spec, budget, policy, label)
    try:
        ds = read_dicom(data, name=label, limits=limits)
    except DicomError as e:
        if kind == "unknown" and e.problem.startswith("not a DICOM file"):
            raise DicomError(label, "not a DICOM file, nor a PNG, JPEG or WebP image") from e
        raise
    return _render_dicom(ds, digest, spec, budget, max_images, policy, label)


# --------------------------------------------------------------------------- helpers: input


def _label(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Dataset):
        return getattr(source, "filename", None) or "<dataset>"
    if isinstance(source, DicomFile):
        return source.label
    if isinstance(source, Image.Image):
        return "<image>"
    return "<bytes>"


def _read_bytes(source: Any, label: str, limits: DecodeLimits) -> bytes | mmap.mmap:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data: bytes | mmap.mmap = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        data = map_file(source, label, limits)
    else:
        raise RenderError(
            f"cannot render a {type(source).__name__}: give bytes, a path, a pydicom Dataset or a PIL image"
        )
    if len(data) > limits.max_bytes:
        raise RenderError(f"{label}: {len(data)} bytes, over the limit of {limits.max_bytes}")
    if not data:
        raise RenderError(f"{label}: empty input")
    return data


def _sniff(buf: bytes | mmap.mmap) -> str:
    data = bytes(buf[:132])
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "dicom" if is_dicom_bytes(data[:132]) else "unknown"


def _open_image(data: bytes, label: str, limits: DecodeLimits) -> Image.Image:
    try:
        img = Image.open(BytesIO(data))
        w, h = img.size
        if w * h > limits.max_pixels:
            raise RenderError(f"{label}: image is {w}x{h} = {w * h} pixels, over the limit of {limits.max_pixels}")
        return img
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, RenderError):
            raise
        raise RenderError(f"{label}: cannot decode the image: {e}") from e


# --------------------------------------------------------------------------- helpers: output


def _target_size(budget: PixelBudget | None, width: int, height: int, label: str) -> tuple[int, int]:
    if budget is None:
        return width, height
    try:
        return budget.resized(width, height)
    except ValueError as e:
        raise RenderError(f"{label}: {e}") from e


_CV2: Any = None


def _cv2() -> Any:
    global _CV2
    if _CV2 is None:
        import cv2  # opencv-python-headless: a base dependency (vLLM needs it too)

        # One thread: a resize to a model's budget gains little from OpenCV's pool, callers parallelise
        # by images (gateway threads, render workers), and a process whose native pool is running
        # cannot safely fork the render workers (the child hangs in OpenCV).
        cv2.setNumThreads(1)
        _CV2 = cv2
    return _CV2


def resize_uint8(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8`` H×W or H×W×3 → the same at ``size`` = (width, height); the input itself when it matches.

    Two steps, like Pillow's ``reducing_gap``: a box (area) reduction by the largest integer factor
    that keeps both sides ≥ the target (anti-aliasing, exact means), then bicubic interpolation
    (OpenCV, a = -0.75) over the remaining scale, now below 2×, or for enlarging. About 5× faster
    than Pillow's convolution bicubic on a 512² → 448² slice, within a mean of 0.3 grey levels of it.
    Deterministic: the same input gives the same bytes in every process.
    """
    h, w = arr.shape[:2]
    if (w, h) == tuple(size):
        return arr
    k = min(w // size[0], h // size[1])
    if k >= 2:
        arr = np.asarray(Image.fromarray(arr).reduce(k))
        if arr.shape[1] == size[0] and arr.shape[0] == size[1]:
            return arr
    return _cv2().resize(np.ascontiguousarray(arr), tuple(size), interpolation=_cv2().INTER_CUBIC)


def _to_image(arr: np.ndarray) -> Image.Image:
    """``uint8`` H×W (grey, repeated into R, G, B) or H×W×3 → an RGB PIL image."""
    return _rgb(Image.fromarray(arr))


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "L":
        return Image.merge("RGB", (img, img, img))  # same bytes as convert("RGB"), about 2x faster
    return img if img.mode == "RGB" else img.convert("RGB")


def _tokens(budget: PixelBudget | None, sizes: list[tuple[int, int]]) -> list[int] | None:
    if budget is None:
        return None
    return [budget.visual_tokens(w, h) for w, h in sizes]


def _window_records(windows: list[Window] | None) -> list[WindowRecord]:
    return [
        WindowRecord(source=w.source, center=w.center, width=w.width, name=w.name, function=w.function)
        for w in windows or []
    ]


# --------------------------------------------------------------------------- plain images


def _render_image(
    img: Image.Image,
    digest: str | None,
    kind: SourceKind,
    spec: RenderSpec,
    budget: PixelBudget | None,
    policy: BurnedInPolicy,
    label: str,
) -> tuple[list[Image.Image], RenderRecord]:
    if spec.composite is not None:
        raise RenderError(f"{label}: composite {spec.composite!r} applies to grey-scale DICOM only")
    try:
        rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation swaps the sides
    except (OSError, ValueError, SyntaxError):
        rotated = False
    w0, h0 = (img.height, img.width) if rotated else img.size
    target = _target_size(budget, w0, h0, label)
    windows: list[Window] | None = None
    try:
        if img.format == "JPEG" and target[0] * 2 <= w0 and target[1] * 2 <= h0:
            img.draft("RGB", (target[1], target[0]) if rotated else target)  # decode at 1/2, 1/4 or 1/8 scale
        img = ImageOps.exif_transpose(img)
        img.load()
    except (OSError, ValueError) as e:
        raise RenderError(f"{label}: cannot decode the image: {e}") from e
    if img.mode in ("I", "I;16", "I;16B", "F"):
        arr = np.asarray(img, dtype=np.float64)
        from core._voi import apply_window, percentile_window, sample_for_percentiles, to_uint8

        window = resolve_window(spec.window) or percentile_window(sample_for_percentiles(arr))
        img, windows = Image.fromarray(to_uint8(apply_window(arr, window))), [window]
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGB", img.size, (0, 0, 0))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        img = background
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    redacted = 0
    if policy == "redact":
        arr8 = np.asarray(img)
        arr8, redacted = redact_text(arr8, label=label, required=False)
        img = Image.fromarray(arr8)
    if img.size != target:
        img = Image.fromarray(resize_uint8(np.asarray(img), target))
    out = _rgb(img)
    record = RenderRecord(
        source_kind=kind,
        sha256=digest,
        original_size=(w0, h0),
        windows=[_window_records(windows)],
        photometric="MONOCHROME2" if windows else None,
        output_sizes=[out.size],
        visual_tokens=_tokens(budget, [out.size]),
        resized=out.size != (w0, h0),
        redacted_regions=redacted,
    )
    return [out], record


# --------------------------------------------------------------------------- burned-in text


def _apply_policy(ds: Dataset, policy: BurnedInPolicy, label: str) -> str | None:
    if policy not in ("refuse", "redact", "allow"):
        raise RenderError(f"unknown burned-in text policy {policy!r} (refuse, redact, allow)")
    reason = burned_in_reason(ds)
    if reason is not None and policy == "refuse":
        raise BurnedInTextError(label, reason)
    return reason


# --------------------------------------------------------------------------- DICOM


@dataclass
class _Rendered:
    pixels: np.ndarray  # uint8 H×W (grey) or H×W×3, at the target size: a third of RGB's bytes between processes
    windows: list[Window] | None
    size: tuple[int, int]
    redacted: int = 0
    presentation: str | None = None  # Presentation.kind; None for colour
    image: Image.Image | None = None  # the RGB image, made in the parent process (see _map)

    def to_image(self) -> Image.Image:
        if self.image is None:
            self.image = _to_image(self.pixels)
        return self.image


def _render_frame(
    ds: Dataset,
    index: int,
    window: Window | None,
    composite: str | None,
    budget: PixelBudget | None,
    redact: str | None,
    label: str,
) -> _Rendered:
    frame = decode_frame(ds, index, label)
    arr, windows = frame_to_uint8(ds, frame, index, window=window, composite=composite, label=label)
    presentation = resolve_presentation(ds, label)
    h, w = arr.shape[:2]
    redacted = 0
    if redact is not None:
        arr, redacted = redact_text(arr, label=label, required=True)
    return _Rendered(
        resize_uint8(arr, _target_size(budget, w, h, label)),
        windows,
        (w, h),
        redacted,
        presentation.kind if presentation is not None else None,
    )


def _render_dicom(
    ds: Dataset,
    digest: str | None,
    spec: RenderSpec,
    budget: PixelBudget | None,
    max_images: int | None,
    policy: BurnedInPolicy,
    label: str,
) -> tuple[list[Image.Image], RenderRecord]:
    reason = _apply_policy(ds, policy, label)
    redact = reason if policy == "redact" else None
    n = frame_count(ds, label)
    order = frame_order(ds, label)  # display position → stored frame
    chosen = select_frames(spec.frames, n, max_images=max_images, label=label)
    window = resolve_window(spec.window)
    results: dict[int, _Rendered] = {}
    # The middle frame first: an "auto" (percentile) window found there is reused for every frame.
    middle = chosen[len(chosen) // 2]
    first = _render_frame(ds, order[middle], window, spec.composite, budget, redact, label)
    results[middle] = first
    if window is None and first.windows and first.windows[0].source == "auto":
        window = first.windows[0]
    for k in chosen:
        if k not in results:
            results[k] = _render_frame(ds, order[k], window, spec.composite, budget, redact, label)
    images, record = _finish([results[k] for k in chosen], chosen, n, ds, "dicom", digest, spec, budget, reason)
    if n > 1:
        record.source_frames = [order[k] for k in chosen]
    return images, record


def _finish(
    parts: list[_Rendered],
    chosen: list[int],
    total: int,
    ds: Dataset | dict[str, Any],
    kind: SourceKind,
    digest: str | None,
    spec: RenderSpec,
    budget: PixelBudget | None,
    reason: str | None,
) -> tuple[list[Image.Image], RenderRecord]:
    images = [p.to_image() for p in parts]
    meta = ds["_meta"] if isinstance(ds, dict) else safe_metadata(ds)
    record = RenderRecord(
        source_kind=kind,
        sha256=digest,
        original_size=parts[0].size,
        frames_total=total,
        frames=chosen,
        windows=[_window_records(p.windows) for p in parts],
        composite=spec.composite,
        photometric=str(ds.get("PhotometricInterpretation", "")).strip() or None,
        presentation=parts[len(parts) // 2].presentation,  # the middle image: the series' reference slice
        modality=meta.get("Modality"),
        metadata=meta,
        output_sizes=[im.size for im in images],
        visual_tokens=_tokens(budget, [im.size for im in images]),
        resized=any(im.size != p.size for im, p in zip(images, parts)),
        burned_in=reason,
        redacted_regions=sum(p.redacted for p in parts),
    )
    return images, record


# --------------------------------------------------------------------------- series


@dataclass(frozen=True)
class _SliceTask:
    source: Any
    label: str
    frame: int
    window: Window | None
    composite: str | None
    budget: PixelBudget | None
    limits: DecodeLimits
    policy: BurnedInPolicy
    render_now: bool = True


_HEADER_KEYWORDS = (
    "SeriesInstanceUID",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "InstanceNumber",
    "NumberOfFrames",
    "BurnedInAnnotation",
    "SOPClassUID",
    "Modality",
    "PhotometricInterpretation",
)


def _slim(full: Dataset, label: str) -> dict[str, Any]:
    """Only what ordering and policy need, as plain values: cheap to pickle between processes.

    The allowlisted metadata of the record is read later from the one reference slice, not here.
    """
    out: dict[str, Any] = {}
    for keyword in _HEADER_KEYWORDS:
        value = full.get(keyword)
        if value is None:
            continue
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            out[keyword] = [str(v) for v in value]
        elif isinstance(value, (int, float)):
            out[keyword] = float(value)
        else:
            out[keyword] = str(value)
    out["_frame_order"] = frame_order(full, label) if "NumberOfFrames" in out else [0]
    return out


def _file_task(task: _SliceTask) -> tuple[dict[str, Any], str, _Rendered | None]:
    """Read one file of a series once: its slim header, its sha256 and, when asked and single-frame, its render."""
    source, label = task.source, task.label
    if isinstance(source, Dataset):
        data, digest = source, ""
    elif isinstance(source, DicomFile):
        data, digest = source, source.sha256
    else:
        data = map_file(source, label, task.limits) if isinstance(source, (str, os.PathLike)) else bytes(source)
        digest = hashlib.sha256(data).hexdigest()
    ds = read_dicom(data, name=label, limits=task.limits, stop_before_pixels=not task.render_now)
    rendered = None
    if task.render_now and frame_count(ds, label) == 1:
        reason = _apply_policy(ds, task.policy, label)  # refuses before any pixel is decoded
        redact = reason if task.policy == "redact" else None
        rendered = _render_frame(ds, 0, task.window, task.composite, task.budget, redact, label)
    return _slim(ds, label), digest, rendered


def _slice_task(task: _SliceTask) -> _Rendered:
    ds = read_dicom(task.source, name=task.label, limits=task.limits)
    reason = _apply_policy(ds, task.policy, task.label)
    return _render_frame(
        ds,
        task.frame,
        task.window,
        task.composite,
        task.budget,
        reason if task.policy == "redact" else None,
        task.label,
    )


def _reference_metadata(source: Any, label: str, limits: DecodeLimits) -> dict[str, Any]:
    """Allowlisted metadata of one file of the series (its header only)."""
    return safe_metadata(read_dicom(source, name=label, limits=limits, stop_before_pixels=True))


_POOL: ProcessPoolExecutor | None = None
_POOL_SIZE = 0


def _worker_init() -> None:
    """One thread per worker process: the pool itself is the parallelism (no oversubscription)."""
    try:
        _cv2().setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 is a base dependency
        pass


def _pool(workers: int) -> ProcessPoolExecutor:
    """A persistent process pool, resized on demand.

    ``fork`` while this process has a single thread (fast start, no re-import of ``__main__``);
    ``forkserver`` once other threads exist — Python's or native ones (ONNX Runtime, OpenCV, BLAS
    pools): forking could copy locks they hold — which needs the usual ``if __name__ == "__main__":``
    guard in a calling script.
    """
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE != workers:
        import multiprocessing

        if _POOL is not None:
            _POOL.shutdown(cancel_futures=True)
        _sweep_shipped()
        method = "fork" if _os_threads() == 1 else "forkserver"
        _POOL = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context(method), initializer=_worker_init
        )
        _POOL_SIZE = workers
    return _POOL


def _os_threads() -> int:
    """Threads of this process as the OS sees them (native pools included); Python's count elsewhere."""
    import threading

    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


@atexit.register
def _close_pool() -> None:
    if _POOL is not None:
        _POOL.shutdown(cancel_futures=True)


def _discard_pool() -> None:
    """Drop a broken pool and kill what is left of its workers.

    CPython ≤ 3.11 can lose the pool's manager thread while it fails the futures of a broken pool
    (``InvalidStateError`` on a cancelled one), leaving an idle worker that would block interpreter
    exit; killing the workers here makes the exit sure.
    """
    global _POOL, _POOL_SIZE
    pool, _POOL, _POOL_SIZE = _POOL, None, 0
    if pool is None:
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError, ValueError):  # already gone, or already closed
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


_SHM_DIR = "/dev/shm"
_SHM_PREFIX = "infimed-render-"
_SHM_MIN_BYTES = 64 * 1024  # below this the pipe is as quick


def _rendered_of(result: Any) -> _Rendered | None:
    """The ``_Rendered`` inside a task's result (a ``_Rendered``, or a ``_file_task`` triple holding one)."""
    rendered = result[2] if isinstance(result, tuple) else result
    return rendered if isinstance(rendered, _Rendered) else None


@dataclass
class _Shipped:
    """A worker's chunk whose pixels travel in one ``/dev/shm`` file instead of the result pipe.

    Pickling a chunk's pixels (megabytes) into the pipe stalls the worker: the pipe holds 64 KiB and is
    drained by the calling process's result thread, which must win the GIL from the rendering caller
    for every piece. A file in shared memory is written at memory speed and mapped by the caller.
    """

    path: str
    layout: list[tuple[int, tuple[int, ...]] | None]  # per result: (byte offset, shape) of its pixels
    results: list[Any]  # with ``pixels`` emptied


def _ship(results: list[Any]) -> list[Any] | _Shipped:
    """Worker side: move the pixels of a chunk's results into one shared-memory file (if worth it)."""
    rendered = [_rendered_of(r) for r in results]
    total = sum(r.pixels.nbytes for r in rendered if r is not None)
    if total < _SHM_MIN_BYTES or not os.path.isdir(_SHM_DIR):
        return results
    fd, path = -1, ""
    try:
        fd, path = tempfile.mkstemp(prefix=f"{_SHM_PREFIX}{os.getppid()}-", dir=_SHM_DIR)
        layout: list[tuple[int, tuple[int, ...]] | None] = []
        offset = 0
        for r in rendered:
            if r is None:
                layout.append(None)
                continue
            data = memoryview(np.ascontiguousarray(r.pixels)).cast("B")
            while data:
                data = data[os.write(fd, data) :]
            layout.append((offset, r.pixels.shape))
            offset += r.pixels.nbytes
    except OSError:  # no room in /dev/shm (a container's is small): the pipe it is
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return results
    finally:
        if fd >= 0:
            os.close(fd)
    for r in rendered:
        if r is not None:
            r.pixels = np.empty(0, np.uint8)
    return _Shipped(path, layout, results)


def _receive(shipped: list[Any] | _Shipped) -> list[Any]:
    """Caller side: the chunk's results with their pixels mapped from the shared-memory file (then removed)."""
    if not isinstance(shipped, _Shipped):
        return shipped
    try:
        with open(shipped.path, "rb") as f:
            # All pages mapped in one call: faulting them in one by one costs the caller more than the copy.
            populate = getattr(mmap, "MAP_POPULATE", 0)
            mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | populate, prot=mmap.PROT_READ)
    finally:
        os.unlink(shipped.path)  # the mapping keeps the pages until the last view is gone
    buffer = np.frombuffer(mapped, np.uint8)
    for result, place in zip(shipped.results, shipped.layout):
        rendered = _rendered_of(result)
        if rendered is not None and place is not None:
            offset, shape = place
            rendered.pixels = buffer[offset : offset + math.prod(shape)].reshape(shape)
    return shipped.results


def _discard_shipped(future: Any) -> None:
    """Remove the shared-memory file of a finished chunk nobody will receive."""
    if future.done() and not future.cancelled() and future.exception() is None:
        shipped = future.result()
        if isinstance(shipped, _Shipped):
            with contextlib.suppress(OSError):
                os.unlink(shipped.path)


def _sweep_shipped() -> None:
    """Remove shared-memory files left by render callers that died (their pid is gone)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(_SHM_DIR):
            if name.startswith(_SHM_PREFIX):
                pid = name[len(_SHM_PREFIX) :].split("-", 1)[0]
                if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(_SHM_DIR, name))


def _run_chunk(fn: Any, chunk: list[Any]) -> list[Any] | _Shipped:
    return _ship([fn(x) for x in chunk])


def _meeting_chunks(n: int) -> list[tuple[int, int]]:
    """``[start, end)`` chunks of ``range(n)``: a quarter of what is left in each half, so large at both
    ends and single items in the middle, where the pool (from the front) and the caller (from the back)
    meet — the work a worker holds when the caller runs out (its running and queued chunk) stays small."""

    def half(m: int) -> list[int]:
        sizes: list[int] = []
        while m:
            sizes.append(max(1, math.ceil(m / 4)))
            m -= sizes[-1]
        return sizes

    bounds, start = [], 0
    for size in half(n // 2) + half(n - n // 2)[::-1]:
        bounds.append((start, start + size))
        start += size
    return bounds


def _map(fn: Any, items: list[Any], workers: int, finish: Any = None) -> list[Any]:
    """``[finish(fn(x)) for x in items]`` in ``workers`` processes: this one and ``workers - 1`` pool workers.

    The items go in chunks (:func:`_meeting_chunks`) to the pool, front first; this process works too,
    taking chunks from the back that no worker has started yet (a cancelled future), until the two
    ends meet. Between its own chunks it finishes the chunks the pool has returned (``finish``, making
    the RGB images, must run here: the images live in this process), so that work is shared out as it
    comes rather than left for the end, when the pool would be idle. Three busy processes on two
    cores would be slower: the calling process would otherwise sit waiting, then compete with the
    workers for receiving and finishing results. In-process if the pool broke.
    """
    finish = finish or (lambda r: r)
    if workers <= 1 or len(items) < 2:
        return [finish(fn(x)) for x in items]
    chunks = [items[a:b] for a, b in _meeting_chunks(len(items))]
    try:
        futures = [_pool(workers - 1).submit(_run_chunk, fn, c) for c in chunks]
        done: dict[int, list[Any]] = {}
        lo, hi = 0, len(chunks) - 1  # the pool's next chunk to finish here; the caller's next to take
        try:
            while lo <= hi:
                if futures[lo].done():
                    done[lo] = [finish(r) for r in _receive(futures[lo].result())]
                    lo += 1
                elif futures[hi].cancel():
                    done[hi] = [finish(fn(x)) for x in chunks[hi]]
                    hi -= 1
                else:
                    break  # a worker has it: the rest are (being) done by the pool
            for j in range(lo, hi + 1):
                done[j] = [finish(r) for r in _receive(futures[j].result())]
                lo = j + 1
        except BaseException:
            for f in futures:
                f.cancel()  # a bad file here: the pool need not finish the series
            for f in futures[lo : hi + 1]:
                with contextlib.suppress(BaseException):
                    concurrent.futures.wait([f])  # a running chunk may have shipped pixels: remove them
                    _discard_shipped(f)
            raise
        return [r for j in range(len(chunks)) for r in done[j]]
    except BrokenProcessPool:
        log.warning("render worker pool broke; rendering in-process")
        _discard_pool()
        return [finish(fn(x)) for x in items]


def _with_image(result: Any) -> Any:
    """Make the RGB image of a worker's render (a ``_Rendered``, or a ``_file_task`` triple holding one)."""
    rendered = _rendered_of(result)
    if rendered is not None:
        rendered.to_image()
    return result


def _render_series(
    sources: list[Any],
    spec: RenderSpec,
    budget: PixelBudget | None,
    max_images: int | None,
    policy: BurnedInPolicy,
    limits: DecodeLimits,
    workers: int,
    name: str | None = None,
) -> tuple[list[Image.Image], RenderRecord]:
    """Order the files along the slice normal, select slices, render them (in ``workers`` processes).

    When every file will be rendered anyway (the selection covers all single-frame files), each
    file is read once — header, hash and pixels in one pass — and rendered; otherwise headers are
    read first and only the selected slices are decoded. An ``auto`` (percentile) window is taken
    from the middle slice and applied to the whole series. Frames of multi-frame files follow
    :func:`core.dicom.frame_order`.
    """
    labels = [f"{name}[{i}]" if name else _label(s) for i, s in enumerate(sources)]
    for s, label in zip(sources, labels):
        if isinstance(s, Image.Image) or (
            isinstance(s, (bytes, bytearray)) and _sniff(bytes(s)) in ("png", "jpeg", "webp")
        ):
            raise RenderError(f"{label}: a list of sources is a DICOM series; plain images go one per call")
    window = resolve_window(spec.window)
    one_pass = len(select_frames(spec.frames, len(sources), max_images=max_images, label=labels[0])) == len(sources)

    def task(i: int, frame: int, w: Window | None, render_now: bool = True) -> _SliceTask:
        return _SliceTask(sources[i], labels[i], frame, w, spec.composite, budget, limits, policy, render_now)

    scanned = _map(_file_task, [task(i, 0, window, one_pass) for i in range(len(sources))], workers, _with_image)
    headers = [h for h, _, _ in scanned]
    order = slice_order(headers, labels)
    slices: list[tuple[int, int]] = []  # (file index, stored frame index) along the normal
    for i in order:
        slices.extend((i, f) for f in headers[i]["_frame_order"])
    chosen = select_frames(spec.frames, len(slices), max_images=max_images, label=labels[order[0]])
    reasons = [_apply_policy(headers[slices[k][0]], policy, labels[slices[k][0]]) for k in chosen]
    reason = next((r for r in reasons if r), None)

    results: dict[int, _Rendered] = {}
    if one_pass and len(slices) == len(sources):
        results = {k: scanned[slices[k][0]][2] for k in chosen}
    middle = chosen[len(chosen) // 2]
    if window is None:
        if middle not in results:
            results[middle] = _slice_task(task(*slices[middle], None))
        first = results[middle].windows
        if first and first[0].source == "auto":
            # One percentile window for the whole series: re-render slices that picked their own.
            window = first[0]
            results = {k: r for k, r in results.items() if k == middle or not r.windows or r.windows[0] == window}
    rest = [k for k in chosen if k not in results]
    for k, r in zip(rest, _map(_slice_task, [task(*slices[k], window) for k in rest], workers, _with_image)):
        results[k] = r
    digest = hashlib.sha256("".join(scanned[i][1] for i in order).encode()).hexdigest()
    ref_file = slices[middle][0]
    ref = {**headers[ref_file], "_meta": _reference_metadata(sources[ref_file], labels[ref_file], limits)}
    return _finish([results[k] for k in chosen], chosen, len(slices), ref, "series", digest, spec, budget, reason)
