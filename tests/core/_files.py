"""Real DICOM test files from pydicom and pydicom-data, loaded by name (never via the download index)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file


def tf(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed locally")
    return str(path)


def copy_to(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    dst.write_bytes(Path(tf(name)).read_bytes())
    return dst
