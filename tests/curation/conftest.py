"""Fixtures for the curation tests: crafted images, DICOM files from pydicom's test data, manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from curation.recipe import Recipe, default_recipe_path, load_recipe


def make_image(path: Path, *, seed: int = 0, size: tuple[int, int] = (256, 256), kind: str = "sharp") -> Path:
    """A synthetic grey 'scan': body outline, structures at seed-dependent places; variants for bad cases."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w), np.float32)
    a[((xx - w / 2) / (0.42 * w)) ** 2 + ((yy - h / 2) / (0.38 * h)) ** 2 < 1] = 110
    for _ in range(6):
        cx, cy, r = rng.integers(w // 4, 3 * w // 4), rng.integers(h // 4, 3 * h // 4), rng.integers(4, max(5, w // 10))
        a[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(150, 255)
    a += rng.normal(0, 6, a.shape)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if kind == "blurred":
        img = img.filter(ImageFilter.GaussianBlur(radius=8))
    elif kind == "blank":
        img = Image.new("L", size, 0)
    elif kind == "colour":
        arr = np.asarray(img)
        img = Image.fromarray(np.stack([arr, (arr * 0.3).astype(np.uint8), 255 - arr], -1))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def vqa(sid: str, image: str | None, question: str, answer: str | None, **meta: Any) -> dict[str, Any]:
    msgs = [{"role": "user", "content": ("<image>\n" if image else "") + question}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    rec: dict[str, Any] = {
        "schema_version": 1,
        "id": sid,
        "task": "vqa",
        "messages": msgs,
        "images": [{"path": image}] if image else [],
        "meta": meta,
    }
    return rec


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_recipe(**overrides: Any) -> Recipe:
    """The default recipe with a fixed salt, small shards, and overrides by dotted key."""
    r = load_recipe(default_recipe_path())
    data = r.model_dump()
    data["splits"]["salt"] = "test-salt"
    data["run"]["shard_size"] = 4
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return Recipe.model_validate(data)


test_recipe.__test__ = False  # a helper, not a test


@pytest.fixture
def recipe_factory():
    return test_recipe


@pytest.fixture(scope="module")
def dicom_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of real pydicom test files, plus crafted variants (burned-in flag, de-identified header)."""
    import pydicom
    from pydicom.data import get_testdata_file

    out = tmp_path_factory.mktemp("dicom")
    files = {}
    for name in ("CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        files[name] = out / name
        ds.save_as(files[name])
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.1"
    files["burned"] = out / "burned.dcm"
    ds.save_as(files["burned"])
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for tag in (
        "PatientName",
        "PatientID",
        "InstitutionName",
        "PatientBirthDate",
        "ReferringPhysicianName",
        "OperatorsName",
        "AccessionNumber",
    ):
        if tag in ds:
            setattr(ds, tag, "")
    ds.PatientIdentityRemoved = "YES"
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.2"
    ds.BodyPartExamined = "CHEST"
    files["clean"] = out / "clean.dcm"
    ds.save_as(files["clean"])
    return files
