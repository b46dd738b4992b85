"""Gateway behaviour that needs no real engine: fake OpenAI-compatible engines in-process."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json

import httpx
import pytest
from pydantic import ValidationError

from core.budget import PixelBudget
from serve.app import create_app
from serve.auth import KeyStore
from serve.settings import GatewaySettings
from tests.support.servers import ServerThread, fake_engine

BUDGET = PixelBudget(min_pixels=3136, max_pixels=50176)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _gateway(engine_urls: list[str], **settings):
    s = GatewaySettings(engine_urls=engine_urls, api_key="k", port=0, **settings)
    return ServerThread(create_app(s, budget=BUDGET))


def _auth(key: str = "k") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_unsafe_settings_are_refused():
    with pytest.raises(ValidationError, match="no API key"):
        GatewaySettings(engine_urls=["http://127.0.0.1:1"])
    with pytest.raises(ValidationError, match="plain HTTP"):
        GatewaySettings(engine_urls=["http://127.0.0.1:1"], api_key="k", host="0.0.0.0")
    with pytest.raises(ValidationError, match="loopback"):
        GatewaySettings(engine_urls=["http://127.0.0.1:1"], auth_disabled=True, host="0.0.0.0", allow_insecure_public=True)
    with pytest.raises(ValidationError, match="--model"):
        GatewaySettings(api_key="k")
    with pytest.raises(ValidationError, match="NAME=PATH"):
        GatewaySettings(model="m", api_key="k", lora=["nope"])


def test_replicas_are_balanced_and_routed_by_name():
    hits: list[str] = []
    with ServerThread(fake_engine("m", hits=hits)) as a, ServerThread(fake_engine("m", hits=hits)) as b, \
            ServerThread(fake_engine("other", hits=hits)) as c, _gateway([a.url, b.url, c.url]) as gw:  # fmt: skip
        models = httpx.get(gw.url + "/v1/models", headers=_auth()).json()["data"]
        assert sorted(m["id"] for m in models) == ["m", "other"]
        for _ in range(6):
            assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=_auth()).status_code == 200
        assert httpx.post(gw.url + "/v1/chat/completions", json=dict(CHAT, model="other"), headers=_auth()).status_code == 200
    assert hits.count("m") == 6 and hits.count("other") == 1  # each request reached an engine serving its model


def test_round_robin_splits_between_replicas():
    a_hits: list[str] = []
    b_hits: list[str] = []
    with ServerThread(fake_engine("m", hits=a_hits)) as a, ServerThread(fake_engine("m", hits=b_hits)) as b, _gateway([a.url, b.url]) as gw:
        for _ in range(8):
            assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=_auth()).status_code == 200
    assert len(a_hits) == 4 and len(b_hits) == 4


def test_engine_down_gives_503_and_not_ready():
    with _gateway(["http://127.0.0.1:9"]) as gw:
        r = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=_auth())
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        assert httpx.get(gw.url + "/ready").status_code == 503
        assert httpx.get(gw.url + "/health").status_code == 200


def test_rate_limit_per_key():
    with ServerThread(fake_engine("m")) as e, _gateway([e.url], rate_limit_per_minute=3) as gw:
        codes = [httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=_auth()).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=_auth())
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1


def test_concurrency_cap_and_queue_give_429_past_capacity():
    with ServerThread(fake_engine("m", delay=1.0)) as e, _gateway([e.url], max_concurrency=2, queue_size=1, queue_timeout=5) as gw:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=_auth(), timeout=30).status_code, range(6)))
        assert codes.count(200) >= 3 and codes.count(429) >= 1
        assert set(codes) <= {200, 429}
        assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=_auth(), timeout=30).status_code == 200


def test_keys_file_create_list_revoke(tmp_path, capsys):
    from infimed.cli import main

    keys = tmp_path / "keys.jsonl"
    assert main(["serve", "keys", "create", "--file", str(keys), "--name", "ris"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("imk_")
    assert token not in keys.read_text()  # stored hashed
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    key_id = json.loads(keys.read_text())["id"]
    with ServerThread(fake_engine("m")) as e:
        s = GatewaySettings(engine_urls=[e.url], api_keys_file=keys, port=0)
        with ServerThread(create_app(s, budget=BUDGET)) as gw:
            assert httpx.get(gw.url + "/v1/models", headers=_auth(token)).status_code == 200
            assert main(["serve", "keys", "list", "--file", str(keys)]) == 0
            assert key_id in capsys.readouterr().out
            assert main(["serve", "keys", "revoke", key_id, "--file", str(keys)]) == 0
            r = httpx.get(gw.url + "/v1/models", headers=_auth(token))
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert main(["serve", "keys", "revoke", "k_nope", "--file", str(keys)]) == 1


def test_key_store_compares_every_record():
    store = KeyStore(None, "secret")
    assert store.verify("secret") == "k_env"
    assert store.verify("secreT") is None and store.verify("") is None


def test_tls(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with ServerThread(fake_engine("m")) as e:
        s = GatewaySettings(engine_urls=[e.url], api_key="k", port=0, tls_certfile=tmp_path / "cert.pem", tls_keyfile=tmp_path / "key.pem")
        app = create_app(s, budget=BUDGET)
        with ServerThread(app, ssl_certfile=str(tmp_path / "cert.pem"), ssl_keyfile=str(tmp_path / "key.pem")) as gw:
            assert gw.url.startswith("https://")
            r = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=_auth(), verify=str(tmp_path / "cert.pem"))
            assert r.status_code == 200
            with pytest.raises(httpx.HTTPError):
                httpx.get(gw.url.replace("https", "http") + "/health", timeout=5)


def test_openapi_describes_dicom_extension():
    s = GatewaySettings(engine_urls=["http://127.0.0.1:9"], api_key="k")
    schema = create_app(s, budget=BUDGET).openapi()
    text = json.dumps(schema)
    assert "data:application/dicom;base64" in text and "ct3" in text and "uniform:N" in text
    assert "/v1/chat/completions" in schema["paths"] and "/v1/infimed/render" in schema["paths"]


def test_disconnected_streams_release_their_slots():
    with ServerThread(fake_engine("m")) as e, _gateway([e.url], max_concurrency=2, queue_size=0) as gw:
        body = dict(CHAT, stream=True)
        for _ in range(5):  # more than the cap: a leaked slot would turn the later ones into 429s
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=_auth(), timeout=30) as r:
                assert r.status_code == 200
                for i, _line in enumerate(r.iter_lines()):
                    if i >= 3:
                        break
        metrics = ""
        for _ in range(100):
            metrics = httpx.get(gw.url + "/metrics", headers=_auth()).text
            if "infimed_in_flight 0.0" in metrics:
                break
            __import__("time").sleep(0.05)
        assert "infimed_in_flight 0.0" in metrics
        assert "infimed_cancellations_total 5.0" in metrics
        assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=_auth()).status_code == 200


def test_dicomweb_wado_rs_series_from_an_allowlisted_host():
    """A WADO-RS answer (multipart/related, one DICOM instance per part) is fetched, split and rendered
    as one series; hosts outside the allowlist are refused without any request."""
    from pathlib import Path

    import pydicom.data
    from fastapi import FastAPI
    from fastapi.responses import Response

    folder = Path(pydicom.data.get_testdata_file("CT_small.dcm", read=False)).parent / "dicomdirtests" / "98892001" / "CT5N"
    files = sorted(folder.iterdir())[:3]
    boundary = "infimed-test-boundary"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + f.read_bytes() + b"\r\n" for f in files)
    body += b"--" + boundary.encode() + b"--\r\n"
    pacs = FastAPI()
    fetched: list[str] = []

    @pacs.get("/dicomweb/studies/1/series/2")
    async def series():
        fetched.append("series")
        return Response(body, media_type=f'multipart/related; type="application/dicom"; boundary={boundary}')

    bodies: list[bytes] = []
    with ServerThread(pacs) as p, ServerThread(fake_engine("m", bodies=bodies)) as e, \
            _gateway([e.url], allowed_image_domains=["127.0.0.1"]) as gw:  # fmt: skip
        url = p.url + "/dicomweb/studies/1/series/2"
        part = {"type": "image_url", "image_url": {"url": url, "dicom": {"window": "soft_tissue"}}}
        req = {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": [part, {"type": "text", "text": "Describe."}]}]}
        r = httpx.post(gw.url + "/v1/chat/completions", json=req, headers=_auth(), timeout=60)
        assert r.status_code == 200, r.text
        recs = r.json()["infimed"]["render_records"]
        assert len(recs) == 1 and recs[0]["source_kind"] == "series" and len(recs[0]["output_sizes"]) == 3
        sent = json.loads(bodies[0])["messages"][0]["content"]
        assert [c["type"] for c in sent] == ["image_url"] * 3 + ["text"]
        assert all(c["image_url"]["url"].startswith("data:image/png;base64,") for c in sent[:3])
    with ServerThread(pacs) as p, ServerThread(fake_engine("m")) as e, _gateway([e.url]) as gw:
        part = {"type": "image_url", "image_url": {"url": p.url + "/dicomweb/studies/1/series/2"}}
        req = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
        r = httpx.post(gw.url + "/v1/chat/completions", json=req, headers=_auth(), timeout=60)
        assert r.status_code == 400 and r.json()["error"]["code"] == "remote_url_not_allowed"
    assert fetched == ["series"]  # the refused request never reached the server


def test_body_limits_per_route():
    with ServerThread(fake_engine("m")) as e, _gateway([e.url], max_body_bytes=8 * 1024 * 1024, max_text_body_bytes=1024 * 1024) as gw:
        text = "x" * (2 * 1024 * 1024)
        chat = {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": 2}
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat, headers=_auth(), timeout=30).status_code == 200
        r = httpx.post(gw.url + "/v1/completions", json={"model": "m", "prompt": text}, headers=_auth(), timeout=30)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
        assert httpx.post(gw.url + "/v1/chat/completions", json=big, headers=_auth(), timeout=30).status_code == 413


@pytest.mark.parametrize(("failures", "healthy"), [(0, True), (1, True), (2, False)])
def test_engine_probe_survives_one_dropped_connection(failures: int, healthy: bool):
    """A kept-alive connection closed by the engine as a probe goes out (RemoteProtocolError) is retried
    once; a second failure marks the engine down."""
    import asyncio

    from serve.engines import EngineRouter

    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def probe() -> EngineRouter:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            router = EngineRouter(["http://127.0.0.1:1"], client=client)
            await router.refresh()
            return router

    router = asyncio.run(probe())
    assert router.ready is healthy and calls["n"] == min(failures + 1, 2)
    assert router.engines[0].last_error == (None if healthy else "RemoteProtocolError")


def test_a_client_leaving_mid_stream_cancels_upstream_at_once_without_the_garbage_collector():
    """The engine streams without pause, so the client's disconnect usually finds the relay suspended at
    ``yield`` (not awaiting the engine); the upstream request must still be closed and counted at once,
    not when the garbage collector finalises the abandoned generator (disabled here)."""
    import gc
    import time

    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    engine = FastAPI()
    closed: list[bool] = []

    @engine.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "m", "object": "model"}]}

    @engine.post("/v1/chat/completions")
    async def chat():
        async def sse():
            try:
                for i in range(200_000):
                    yield f'data: {{"choices": [{{"index": 0, "delta": {{"content": "t{i}"}}}}]}}\n\n'
            finally:
                closed.append(True)  # the gateway closed the engine's stream

        return StreamingResponse(sse(), media_type="text/event-stream")

    body = dict(CHAT, stream=True)
    with ServerThread(engine) as e, _gateway([e.url]) as gw:
        gc.disable()
        try:
            for round_ in range(1, 4):
                with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=_auth(), timeout=30) as r:
                    for i, _line in enumerate(r.iter_lines()):
                        if i >= 50:
                            break
                deadline = time.monotonic() + 10
                metrics = ""
                while time.monotonic() < deadline:
                    metrics = httpx.get(gw.url + "/metrics", headers=_auth()).text
                    if f"infimed_cancellations_total {float(round_)}" in metrics:
                        break
                    time.sleep(0.05)
                assert f"infimed_cancellations_total {float(round_)}" in metrics
                assert "infimed_in_flight 0.0" in metrics
        finally:
            gc.enable()
    assert len(closed) == 3
