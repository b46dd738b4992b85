"""Patient data never reaches logs or the engine; a client that disconnects mid-stream cancels upstream."""

from __future__ import annotations

import base64
import io
import json
import logging
import time

import httpx
import pydicom
import pydicom.data
import pytest

from core.budget import PixelBudget
from serve.app import create_app
from serve.settings import GatewaySettings
from tests.support.servers import ServerThread, fake_engine

PHI = {"PatientName": "SMITH^JOHNATHAN", "PatientID": "MRN99887766", "PatientBirthDate": "19450317",
       "InstitutionName": "St Elsewhere Hospital", "AccessionNumber": "ACC55443322"}  # fmt: skip


def _dicom_with_phi() -> bytes:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    for k, v in PHI.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_phi_never_reaches_logs_or_engine(caplog):
    bodies: list[bytes] = []
    with ServerThread(fake_engine("m", bodies=bodies)) as engine:
        settings = GatewaySettings(engine_urls=[engine.url], api_key="k", port=0)
        app = create_app(settings, budget=PixelBudget(min_pixels=3136, max_pixels=50176))
        with caplog.at_level(logging.DEBUG), ServerThread(app) as gw:
            url = "data:application/dicom;base64," + base64.b64encode(_dicom_with_phi()).decode()
            body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url, "dicom": {"window": "lung"}}},
                {"type": "text", "text": "Any nodules?"}]}]}  # fmt: skip
            r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}, timeout=60)
            assert r.status_code == 200, r.text
            bad = dict(body, max_tokens=-1)  # an error path logs too
            assert httpx.post(gw.url + "/v1/chat/completions", json=bad, headers={"Authorization": "Bearer k"}).status_code == 400
    assert len(bodies) == 1
    forwarded = bodies[0].decode()
    sent = json.loads(forwarded)
    image_url = sent["messages"][0]["content"][0]["image_url"]["url"]
    assert image_url.startswith("data:image/png;base64,")  # the engine only ever sees a PNG
    png = base64.b64decode(image_url.split(",", 1)[1])
    haystacks = {"logs": caplog.text, "forwarded body": forwarded, "forwarded png": png.decode("latin-1"), "response": r.text}
    for where, text in haystacks.items():
        for key, value in PHI.items():
            for needle in {value, value.replace("^", " "), "JOHNATHAN", "SMITH"} if key == "PatientName" else {value}:
                assert needle not in text, f"{key} ({needle!r}) leaked into the {where}"
    # and the access log did record the request, with ids and counts only
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "infimed.access"]
    assert any(line["status"] == 200 and line["images"] == 1 and line["key_id"] == "k_env" for line in lines)


@pytest.mark.engine
@pytest.mark.slow
def test_client_disconnect_cancels_upstream(gateway):
    headers = {"Authorization": f"Bearer {gateway.api_key}"}

    def counter(text: str, name: str) -> float:
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    before = counter(httpx.get(gateway.root + "/metrics", headers=headers).text, "infimed_cancellations_total")
    tokens_before = counter(httpx.get(gateway.root + "/metrics?engine=true", headers=headers).text, "vllm:generation_tokens_total")
    body = {"model": gateway.model, "messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 2000,
            "stream": True, "ignore_eos": True}  # fmt: skip
    with httpx.Client(timeout=60) as http, http.stream("POST", gateway.root + "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        n = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                n += 1
            if n >= 3:
                break  # the client goes away mid-stream
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        after = counter(httpx.get(gateway.root + "/metrics", headers=headers).text, "infimed_cancellations_total")
        if after > before:
            break
        time.sleep(0.2)
    assert after == before + 1
    # vLLM aborted the request too: once nothing runs, far fewer than 2000 tokens were generated.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        engine = httpx.get(gateway.root + "/metrics?engine=true", headers=headers).text
        if counter(engine, "vllm:num_requests_running") == 0:
            break
        time.sleep(0.2)
    generated = counter(engine, "vllm:generation_tokens_total") - tokens_before
    assert 0 < generated < 2000, f"the engine generated {generated} tokens: the request was not aborted upstream"
