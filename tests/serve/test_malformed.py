"""A catalogue of malformed requests: each gets the expected 4xx in OpenAI's error shape, and the
server keeps serving afterwards."""

from __future__ import annotations

import base64
import io

import httpx
import pydicom.data
import pytest
from PIL import Image

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "gray").save(buf, format="PNG")
    return buf.getvalue()


def _img(url: str, **extra) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def _chat(model: str, *parts, **kw) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": list(parts) or "hi"}], "max_tokens": 2, **kw}


def _cases(model: str) -> list[tuple[str, object, int, str | None]]:
    """(name, body (dict, or bytes sent raw), expected status, expected param prefix or None)."""
    png = _png_bytes()
    ct = open(pydicom.data.get_testdata_file("CT_small.dcm"), "rb").read()
    txt = {"type": "text", "text": "what?"}
    return [
        ("not json", b"{not json", 400, None),
        ("empty body", b"", 400, None),
        ("json array", b"[1, 2]", 400, None),
        ("missing model", {"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
        ("missing messages", {"model": model}, 400, "messages"),
        ("empty messages", {"model": model, "messages": []}, 400, "messages"),
        ("bad role", {"model": model, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages"),
        ("content wrong type", {"model": model, "messages": [{"role": "user", "content": 42}]}, 400, "messages"),
        ("part without type", {"model": model, "messages": [{"role": "user", "content": [{"text": "x"}]}]}, 400, "messages"),
        ("unknown model", _chat("no-such-model"), 404, "model"),
        ("model wrong type", {"model": 7, "messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
        ("negative max_tokens", _chat(model, max_tokens=-5), 400, "max_tokens"),
        ("zero max_tokens", _chat(model, max_tokens=0), 400, "max_tokens"),
        ("huge max_tokens", _chat(model, max_tokens=10**9), 400, "max_tokens"),
        ("max_tokens string", _chat(model, max_tokens="many"), 400, "max_tokens"),
        ("temperature out of range", _chat(model, temperature=7), 400, "temperature"),
        ("top_p zero", _chat(model, top_p=0), 400, "top_p"),
        ("n too large", _chat(model, n=1000), 400, "n"),
        ("top_logprobs too large", _chat(model, logprobs=True, top_logprobs=99), 400, "top_logprobs"),
        ("bad base64", _chat(model, _img("data:image/png;base64,@@@not-base64@@@"), txt), 400, "messages[0].content[0]"),
        ("data url without base64", _chat(model, _img("data:image/png," + "abc"), txt), 400, "messages[0].content[0]"),
        ("empty data url", _chat(model, _img("data:image/png;base64,"), txt), 400, "messages[0].content[0]"),
        ("garbage bytes as png", _chat(model, _img("data:image/png;base64," + _b64(b"\x00" * 300)), txt), 400, "messages[0].content[0]"),
        ("non-DICOM bytes as DICOM", _chat(model, _img("data:application/dicom;base64," + _b64(png)), txt), 400, "messages[0].content[0]"),
        ("truncated DICOM", _chat(model, _img("data:application/dicom;base64," + _b64(ct[: len(ct) // 3])), txt), 400, "messages[0].content[0]"),
        ("unsupported mime", _chat(model, _img("data:image/tiff;base64," + _b64(png)), txt), 400, "messages[0].content[0]"),
        ("bad dicom window", _chat(model, _img("data:application/dicom;base64," + _b64(ct), dicom={"window": {"center": 1}}), txt), 400, "messages[0].content[0]"),
        ("bad dicom frames", _chat(model, _img("data:application/dicom;base64," + _b64(ct), dicom={"frames": "every:3"}), txt), 400, "messages[0].content[0]"),
        ("unknown dicom option", _chat(model, _img("data:application/dicom;base64," + _b64(ct), dicom={"zoom": 2}), txt), 400, "messages"),
        ("unknown window preset", _chat(model, _img("data:application/dicom;base64," + _b64(ct), dicom={"window": "sunset"}), txt), 400, "messages[0].content[0]"),
        ("remote url without allowlist", _chat(model, _img("https://example.org/scan.png"), txt), 400, "messages[0].content[0]"),
        ("file url", _chat(model, _img("file:///etc/passwd"), txt), 400, "messages[0].content[0]"),
        ("image_url not an object", _chat(model, {"type": "image_url", "image_url": 5}, txt), 400, "messages"),
        ("too many images", _chat(model, *[_img("data:image/png;base64," + _b64(png)) for _ in range(9)], txt), 400, "messages"),
        ("oversized image (pixels)", _chat(model, _img("data:image/png;base64," + _b64(_png_bytes((12000, 9000)))), txt), 400, "messages[0].content[0]"),
        ("completions without prompt", {"model": model}, 400, "prompt"),
    ]


def test_catalogue_of_malformed_requests(gateway):
    headers = {"Authorization": f"Bearer {gateway.api_key}"}
    cases = _cases(gateway.model)
    assert len(cases) >= 25
    with httpx.Client(base_url=gateway.root, headers=headers, timeout=60) as http:
        for name, body, status, param in cases:
            path = "/v1/completions" if name.startswith("completions") else "/v1/chat/completions"
            if isinstance(body, bytes):
                r = http.post(path, content=body, headers={"Content-Type": "application/json"})
            else:
                r = http.post(path, json=body)
            assert r.status_code == status, f"{name}: {r.status_code} {r.text[:300]}"
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"}, name
            assert err["message"], name
            if param is not None:
                assert (err["param"] or "").startswith(param), f"{name}: param {err['param']!r}"
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 200
        ok = http.post("/v1/chat/completions", json=_chat(gateway.model))
        assert ok.status_code == 200, ok.text


def test_oversized_body_is_refused(gateway):
    headers = {"Authorization": f"Bearer {gateway.api_key}", "Content-Type": "application/json"}
    big = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (65 * 1024 * 1024) + b'"}]}'
    r = httpx.post(gateway.root + "/v1/chat/completions", content=big, headers=headers, timeout=120)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert httpx.get(gateway.root + "/health", timeout=10).status_code == 200
