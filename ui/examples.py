"""Example cases, one click away: synthetic phantoms and real DICOM from the installed test-data packages.

Every example goes through the same ingestion as an upload (de-identified into the session folder);
the source files are never modified or deleted. Examples whose package is missing are left out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    question: str
    files: Callable[[Path], list[Path]]  # cache dir → source files


def _pydicom(*names: str) -> Callable[[Path], list[Path]]:
    def get(_: Path) -> list[Path]:
        from pydicom.data import get_testdata_file

        out = []
        for n in names:
            p = get_testdata_file(n)  # a name only in pydicom's download index returns None offline
            if p is None:
                raise FileNotFoundError(n)
            out.append(Path(p))
        return out

    return get


def _pydicom_dir(rel: str) -> Callable[[Path], list[Path]]:
    def get(_: Path) -> list[Path]:
        import pydicom.data

        d = Path(pydicom.data.__file__).parent / "test_files" / rel
        files = sorted(p for p in d.iterdir() if p.is_file())
        if not files:
            raise FileNotFoundError(rel)
        return files

    return get


_phantom_lock = threading.Lock()


def _phantom(index: int) -> Callable[[Path], list[Path]]:
    def get(cache: Path) -> list[Path]:
        from core.phantoms import make_phantom

        target = cache / f"phantom-{index}.dcm"
        with _phantom_lock:
            if not target.exists():
                cache.mkdir(parents=True, exist_ok=True)
                ds, _ = make_phantom(seed=7, index=index)
                ds.save_as(target, enforce_file_format=True)
        return [target]

    return get


def _phantom_series(cache: Path) -> list[Path]:
    from core.phantoms import generate_series

    d = cache / "phantom-series"
    with _phantom_lock:
        if not d.exists():
            generate_series(d, slices=12, seed=3, size=256)
    return sorted(d.glob("*.dcm"))


def _skimage(name: str) -> Callable[[Path], list[Path]]:
    def get(_: Path) -> list[Path]:
        import importlib.util

        spec = importlib.util.find_spec("skimage")
        if spec is None or spec.origin is None:
            raise FileNotFoundError(name)
        p = Path(spec.origin).parent / "data" / name
        if not p.exists():
            raise FileNotFoundError(name)
        return [p]

    return get


EXAMPLES: list[Example] = [
    Example(
        "CT chest (pydicom CT_small)",
        "real CT slice, 128×128",
        "Which body region and modality is this?",
        _pydicom("CT_small.dcm"),
    ),
    Example(
        "CT series (pydicom CT5N)",
        "real CT series, 5 slices",
        "Describe this CT series.",
        _pydicom_dir("dicomdirtests/98892001/CT5N"),
    ),
    Example("MR (pydicom MR_small)", "real MR slice", "What sequence and body part is this?", _pydicom("MR_small.dcm")),
    Example(
        "Phantom chest X-ray/CT",
        "synthetic phantom with known nodules",
        "Are there nodules? On which side?",
        _phantom(0),
    ),
    Example(
        "Phantom CT series",
        "synthetic CT series, 12 slices with nodules",
        "How many nodules are there?",
        _phantom_series,
    ),
    Example(
        "Fundus photograph (scikit-image)", "retina.jpg, colour", "Describe this fundus image.", _skimage("retina.jpg")
    ),
]


def available_examples(cache: Path) -> list[Example]:
    """The examples whose source files can be found here (cheap checks; phantoms are generated lazily)."""
    out = []
    for ex in EXAMPLES:
        if ex.files in (_phantom_series,) or "phantom" in ex.name.lower():
            out.append(ex)
            continue
        try:
            ex.files(cache)
            out.append(ex)
        except (FileNotFoundError, OSError, ImportError):
            log.info("example %r left out: its data package is not installed", ex.name)
    return out
