"""The public API through the real gateway and the real vLLM engine, with the official `openai` client."""

from __future__ import annotations

import json

import httpx
import openai
import pydicom
import pydicom.data
import pytest
from PIL import Image

from core.dicom import dicom_part
from tests.conftest import png_data_url
from tests.support.taught import ANSWER, QUESTION, taught_image

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _user(*parts):
    return [{"role": "user", "content": list(parts)}]


def _text(t: str) -> dict:
    return {"type": "text", "text": t}


def _png(img: Image.Image) -> dict:
    return {"type": "image_url", "image_url": {"url": png_data_url(img)}}


def test_models_lists_base_and_adapter(gateway):
    ids = [m.id for m in gateway.client().models.list().data]
    assert gateway.model in ids and gateway.lora in ids


def test_text_chat(gateway):
    r = gateway.client().chat.completions.create(model=gateway.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 3


def test_png_chat_carries_render_record(gateway):
    img = Image.new("RGB", (300, 200), (40, 90, 160))
    r = gateway.client().chat.completions.create(model=gateway.model, messages=_user(_png(img), _text("What is shown?")), max_tokens=4)
    records = r.model_extra["infimed"]["render_records"]
    assert len(records) == 1 and records[0]["source_kind"] == "png"
    assert records[0]["original_size"] == [300, 200]
    w, h = records[0]["output_sizes"][0]
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 64 * 28 * 28  # the tiny model's pixel budget


def test_lora_adapter_answers_what_it_was_taught(gateway):
    c = gateway.client()
    msgs = _user(_png(taught_image()), _text(QUESTION))
    taught = c.chat.completions.create(model=gateway.lora, messages=msgs, max_tokens=16, temperature=0)
    base = c.chat.completions.create(model=gateway.model, messages=msgs, max_tokens=16, temperature=0)
    assert taught.choices[0].message.content == ANSWER
    assert base.choices[0].message.content != ANSWER


def test_dicom_ct_with_lung_window(gateway):
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    r = gateway.client().chat.completions.create(model=gateway.model, messages=_user(dicom_part(path, window="lung"), _text("Describe.")), max_tokens=4)
    rec = r.model_extra["infimed"]["render_records"][0]
    assert rec["source_kind"] == "dicom" and rec["modality"] == "CT"
    assert rec["windows"][0][0]["center"] == -600 and rec["windows"][0][0]["width"] == 1500


def test_dicom_monochrome1_and_explicit_window(gateway):
    path = pydicom.data.get_testdata_file("6154", read=False)
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    part = dicom_part(path, window={"center": 2000, "width": 4000})
    r = gateway.client().chat.completions.create(model=gateway.model, messages=_user(part, _text("Describe.")), max_tokens=4)
    rec = r.model_extra["infimed"]["render_records"][0]
    assert rec["photometric"] == "MONOCHROME1" and rec["windows"][0][0]["source"] == "explicit"


def test_dicom_series_of_three_files_is_one_group(gateway):
    from pathlib import Path

    folder = Path(pydicom.data.get_testdata_file("CT_small.dcm", read=False)).parent / "dicomdirtests" / "98892001" / "CT5N"
    files = sorted(folder.iterdir())[:3]
    assert len(files) == 3, f"the CT5N series of pydicom's test data is missing in {folder}"
    parts = [dicom_part(f, window="soft_tissue") for f in reversed(files)]
    r = gateway.client().chat.completions.create(model=gateway.model, messages=_user(*parts, _text("Describe.")), max_tokens=4)
    recs = r.model_extra["infimed"]["render_records"]
    assert len(recs) == 1 and recs[0]["source_kind"] == "series" and len(recs[0]["output_sizes"]) == 3


def test_several_images(gateway):
    imgs = [_png(Image.new("RGB", (112, 112), (i * 60, 20, 20))) for i in range(3)]
    r = gateway.client().chat.completions.create(model=gateway.model, messages=_user(*imgs, _text("Compare.")), max_tokens=4)
    assert len(r.model_extra["infimed"]["render_records"]) == 3
    assert r.usage.prompt_tokens > 3 * 16  # 16 visual tokens per 112² image


def test_streaming_with_usage(gateway):
    stream = gateway.client().chat.completions.create(
        model=gateway.model, messages=_user(_png(taught_image()), _text("Go on.")), max_tokens=12,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    text, usage, ext = "", None, None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
        if (chunk.model_extra or {}).get("infimed"):
            ext = chunk.model_extra["infimed"]
    assert usage is not None and usage.completion_tokens == 12
    assert text
    assert ext is not None and ext["render_records"][0]["source_kind"] == "png"


def test_json_schema_output(gateway):
    schema = {"type": "object", "properties": {"finding": {"type": "string", "enum": ["nodule", "normal"]}}, "required": ["finding"]}
    r = gateway.client().chat.completions.create(
        model=gateway.model, messages=[{"role": "user", "content": "Report as JSON."}], max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "report", "schema": schema}},
    )  # fmt: skip
    assert json.loads(r.choices[0].message.content)["finding"] in ("nodule", "normal")


def test_logprobs_n_and_seed(gateway):
    c = gateway.client()
    msgs = [{"role": "user", "content": "Say something."}]
    r = c.chat.completions.create(model=gateway.model, messages=msgs, max_tokens=3, logprobs=True, top_logprobs=2, temperature=0)
    lp = r.choices[0].logprobs.content
    assert len(lp) >= 1 and len(lp[0].top_logprobs) == 2
    r = c.chat.completions.create(model=gateway.model, messages=msgs, max_tokens=6, n=2, temperature=1.0)
    assert len(r.choices) == 2
    a = c.chat.completions.create(model=gateway.model, messages=msgs, max_tokens=8, temperature=1.0, seed=11)
    b = c.chat.completions.create(model=gateway.model, messages=msgs, max_tokens=8, temperature=1.0, seed=11)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_request_id_round_trip(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=gateway.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2, extra_headers={"X-Request-Id": "case-42"}
    )
    assert raw.headers["x-request-id"] == "case-42"
    assert raw.parse().id.endswith("case-42")  # passed on to vLLM, which names the completion after it
    raw = gateway.client().chat.completions.with_raw_response.create(model=gateway.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert len(raw.headers["x-request-id"]) >= 16  # generated when absent


def test_completions_endpoint(gateway):
    r = gateway.client().completions.create(model=gateway.model, prompt="The chest", max_tokens=4)
    assert r.choices[0].text is not None and r.usage.completion_tokens >= 1


def test_render_preview_endpoint(gateway):
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    r = httpx.post(gateway.root + "/v1/infimed/render", json={"content": [dicom_part(path, window="bone")]},
                   headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["images"][0].startswith("data:image/png;base64,")
    assert body["records"][0]["windows"][0][0]["name"] == "bone"


def test_open_and_keyed_routes(gateway):
    open_routes = ["/health", "/ready", "/version", "/openapi.json", "/docs"]
    for path in open_routes:
        assert httpx.get(gateway.root + path, timeout=10).status_code == 200, path
    keyed = [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
             ("POST", "/v1/infimed/render"), ("GET", "/metrics")]  # fmt: skip
    for method, path in keyed:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {gateway.api_key}"}):
            r = httpx.request(method, gateway.root + path, headers=headers, json={}, timeout=10)
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"]["type"] == "authentication_error"
    # vLLM's own routes are not reachable through the gateway
    for path in ("/tokenize", "/v1/embeddings", "/invocations", "/v1/load_lora_adapter"):
        r = httpx.post(gateway.root + path, headers={"Authorization": f"Bearer {gateway.api_key}"}, json={}, timeout=10)
        assert r.status_code in (404, 405), path
    m = httpx.get(gateway.root + "/metrics", headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=10)
    assert m.status_code == 200 and "infimed_requests_total" in m.text
    e = httpx.get(gateway.root + "/metrics?engine=true", headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=10)
    assert e.status_code == 200 and "vllm:" in e.text


def test_openai_errors_are_typed(gateway):
    c = gateway.client()
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        gateway.client(api_key="imk_wrong").models.list()
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=gateway.model, messages=[{"role": "user", "content": "hi"}], max_tokens=10**7)
    assert "cap" in str(e.value)
