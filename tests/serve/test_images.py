"""The gateway's image rewriting without an engine: each DICOM header is parsed once per request,
and the rendered images, records and cache keys are those of ``core.render`` on the raw bytes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from core.budget import PixelBudget
from core.dicom import DecodeLimits
from core.manifest import RenderSpec
from core.render import render
from serve.errors import APIError
from serve.images import ImageRewriter

BUDGET = PixelBudget(min_pixels=3136, max_pixels=50176)


def _file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed locally")
    return Path(path)


def _series() -> list[Path]:
    return sorted((_file("CT_small.dcm").parent / "dicomdirtests" / "98892001" / "CT5N").iterdir())


def _dicom_part(data: bytes, **options: object) -> dict:
    url = "data:application/dicom;base64," + base64.b64encode(data).decode()
    return {"type": "image_url", "image_url": {"url": url, "dicom": options}}


def _png_part(arr: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()},
    }


def _rewriter(**kwargs: object) -> ImageRewriter:
    options = {"max_images": 8, "max_image_bytes": 64 << 20, "max_image_pixels": 1 << 26, "workers": 1, **kwargs}
    return ImageRewriter(BUDGET, **options)  # type: ignore[arg-type]


def _body(*parts: dict) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "findings?"}]}]}


@pytest.fixture
def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every header parse goes through ``pydicom.dcmread``: count the calls."""
    calls: list[str] = []
    real = pydicom.dcmread

    def counting(*args: object, **kwargs: object):
        calls.append("full" if not kwargs.get("stop_before_pixels") else "header")
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    return calls


def _decode(url: str) -> bytes:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))).tobytes()


def test_each_dicom_header_is_parsed_once_per_request(count_parses: list[str]) -> None:
    series = [p.read_bytes() for p in _series()]
    single = _file("CT_small.dcm").read_bytes()
    j2k = _file("693_J2KI.dcm").read_bytes()  # compressed: pixels read after the header, not re-parsed
    body = _body(
        *[_dicom_part(b, window="lung") for b in series[::-1]],
        _dicom_part(single, window="soft_tissue"),
        _dicom_part(j2k),
        _png_part(np.zeros((64, 64), np.uint8)),
    )
    rw = _rewriter()
    try:
        result = asyncio.run(rw.rewrite(body))
    finally:
        rw.close()
    assert len(count_parses) == len(series) + 2 == 7  # one per DICOM part: grouping and rendering share it
    assert set(count_parses) == {"header"}
    assert result.dicom_parts == 7 and len(result.records) == 4
    assert [r["source_kind"] for r in result.records] == ["series", "dicom", "dicom", "png"]


def test_rewritten_images_and_records_are_those_of_render_on_the_bytes() -> None:
    series = [p.read_bytes() for p in _series()]
    single = _file("CT_small.dcm").read_bytes()
    body = _body(*[_dicom_part(b, window="lung", frames="uniform:3") for b in series], _dicom_part(single))
    rw = _rewriter()
    try:
        result = asyncio.run(rw.rewrite(body))
    finally:
        rw.close()
    limits = DecodeLimits(max_bytes=64 << 20, max_pixels=1 << 26)
    param = "messages[0].content[0].image_url"
    images, record = render(
        series, RenderSpec(window="lung", frames="uniform:3"), BUDGET, max_images=7, limits=limits, name=param
    )
    one, one_record = render(single, None, BUDGET, max_images=7, limits=limits, name=param.replace("[0].i", "[5].i"))
    content = result.body["messages"][0]["content"]
    urls = [c["image_url"]["url"] for c in content if c["type"] == "image_url"]
    assert len(urls) == 4
    assert [_decode(u) for u in urls[:3]] == [np.asarray(im).tobytes() for im in images]
    assert _decode(urls[3]) == np.asarray(one[0]).tobytes()
    assert result.records[0] == record.model_dump(mode="json")
    assert result.records[1] == one_record.model_dump(mode="json")
    assert (
        record.sha256
        == hashlib.sha256("".join(hashlib.sha256(b).hexdigest() for b in _z_sorted(series)).encode()).hexdigest()
    )


def _z_sorted(files: list[bytes]) -> list[bytes]:
    def z(b: bytes) -> float:
        return float(pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True).ImagePositionPatient[2])

    return sorted(files, key=z)


def test_cache_key_is_unchanged_and_a_repeat_renders_nothing(count_parses: list[str]) -> None:
    single = _file("CT_small.dcm").read_bytes()
    body = _body(_dicom_part(single, window="lung"))
    rw = _rewriter()
    try:
        first = asyncio.run(rw.rewrite(body))
        key = json.dumps(
            [hashlib.sha256(hashlib.sha256(single).digest()).hexdigest(), {"window": "lung"}, 8, 3136, 50176, "refuse"]
        )
        assert rw.cache.get(key) is not None  # sha256 of per-part digests, spec, cap, budget, burned-in policy
        parses = len(count_parses)
        second = asyncio.run(rw.rewrite(body))
    finally:
        rw.close()
    assert second.body == first.body
    assert len(count_parses) == parses + 1  # the header is read to group the part; nothing is rendered again


def test_unreadable_and_oversized_dicom_give_400() -> None:
    rw = _rewriter(max_image_pixels=100 * 100)
    try:
        with pytest.raises(APIError) as bad:
            asyncio.run(rw.rewrite(_body(_dicom_part(b"not a dicom file" * 20))))
        assert bad.value.status == 400 and bad.value.code == "invalid_dicom"
        with pytest.raises(APIError) as big:
            asyncio.run(rw.rewrite(_body(_dicom_part(_file("CT_small.dcm").read_bytes()))))  # 128² > 100²
        assert big.value.status == 400 and big.value.code == "dicom_error" and "over the limit" in str(big.value)
    finally:
        rw.close()


def test_burned_in_text_is_refused_by_default_and_redacted_when_configured(monkeypatch) -> None:
    """An US image without BurnedInAnnotation may carry patient data in its pixels: the serving default
    refuses it with the reason; ``policy="redact"`` blacks out what OCR finds (a stand-in engine here;
    tests/core/test_ocr.py runs the real one) and the record says so."""
    import types

    import core._redact as redact

    part = _dicom_part(_file("examples_rgb_color.dcm").read_bytes())
    rw = _rewriter()
    try:
        with pytest.raises(APIError) as refused:
            asyncio.run(rw.rewrite(_body(part)))
        assert refused.value.status == 400 and refused.value.code == "burnedintext_error"
        msg = str(refused.value)
        assert "BurnedInAnnotation is absent on a US image" in msg and "--burned-in-policy redact" in msg
    finally:
        rw.close()

    box = [[10, 10], [60, 10], [60, 24], [10, 24]]
    monkeypatch.setattr(redact, "_OCR", lambda rgb: types.SimpleNamespace(boxes=np.array([box], float), txts=("DOE^JANE",), scores=(0.99,)))
    rw = _rewriter(policy="redact")
    try:
        res = asyncio.run(rw.rewrite(_body(part)))
    finally:
        rw.close()
    (record,) = res.records
    assert record["redacted_regions"] == 1 and record["burned_in"]
    url = next(p["image_url"]["url"] for p in res.body["messages"][0]["content"] if p.get("type") == "image_url")
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L"))
    sx, sy = img.shape[1] / 320, img.shape[0] / 240  # the box, scaled to the rendered size, is black
    assert img[int(14 * sy) : int(20 * sy), int(20 * sx) : int(50 * sx)].max() == 0


def test_redact_policy_needs_the_ocr_extra(monkeypatch) -> None:
    import core._redact as redact
    from serve.settings import GatewaySettings

    base = {"engine_urls": ["http://127.0.0.1:1"], "api_key": "k" * 32}
    assert GatewaySettings(**base).burned_in_policy == "refuse"
    monkeypatch.setattr(redact, "ocr_available", lambda: False)
    with pytest.raises(ValueError, match="needs the OCR extra"):
        GatewaySettings(**base, burned_in_policy="redact")
