from __future__ import annotations

import base64
import io
import json
import logging

import openai
import pytest
from PIL import Image

from core.client import ChatRequest, OpenAIClient, image_part, request_key
from evaluation.fake_server import FakeOpenAIServer


def _echo(body: dict) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "parts"


def _client(srv: FakeOpenAIServer, **kw) -> OpenAIClient:
    kw.setdefault("backoff_base", 0.001)
    return OpenAIClient(srv.base_url, "k", **kw)


def test_chat_returns_text_and_metadata():
    with FakeOpenAIServer(_echo) as srv:
        r = _client(srv).chat([{"role": "user", "content": "hello"}], model="fake-model", temperature=0)
    assert r.text == "hello"
    assert r.finish_reason == "stop"
    assert r.usage["total_tokens"] == 2
    assert r.request_id and r.request_id.startswith("chatcmpl-")
    assert r.cached is False
    assert srv.requests[0]["temperature"] == 0


def test_unknown_params_travel_in_extra_body():
    with FakeOpenAIServer(_echo) as srv:
        _client(srv).chat([{"role": "user", "content": "x"}], model="m", top_k=5, max_tokens=7)
    assert srv.requests[0]["top_k"] == 5
    assert srv.requests[0]["max_tokens"] == 7


def test_retries_429_and_5xx_then_succeeds():
    with FakeOpenAIServer(_echo, fail_first=[429, 500, 503]) as srv:
        c = _client(srv, max_retries=3)
        r = c.chat([{"role": "user", "content": "ok"}], model="m")
    assert r.text == "ok"
    assert srv.statuses == [429, 500, 503, 200]
    assert c.stats["retries"] == 3


def test_retries_exhausted_raises_rate_limit():
    with FakeOpenAIServer(_echo, fail_first=[429, 429, 429]) as srv:
        c = _client(srv, max_retries=1)
        with pytest.raises(openai.RateLimitError):
            c.chat([{"role": "user", "content": "ok"}], model="m")
    assert srv.statuses == [429, 429]


def test_client_error_is_not_retried():
    with FakeOpenAIServer(_echo, fail_first=[400]) as srv:
        c = _client(srv, max_retries=3)
        with pytest.raises(openai.BadRequestError):
            c.chat([{"role": "user", "content": "ok"}], model="m")
    assert srv.statuses == [400]


def test_connection_error_is_retried_then_raised():
    c = OpenAIClient("http://127.0.0.1:9/v1", "k", max_retries=2, backoff_base=0.001, timeout=2)
    with pytest.raises(openai.APIConnectionError):
        c.chat([{"role": "user", "content": "x"}], model="m")
    assert c.stats["retries"] == 2


def test_cache_hits_skip_the_server_and_errors_are_not_cached(tmp_path):
    msgs = [{"role": "user", "content": "cache me"}]
    with FakeOpenAIServer(_echo, fail_first=[400]) as srv:
        c = _client(srv, cache_dir=tmp_path, max_retries=0)
        with pytest.raises(openai.BadRequestError):
            c.chat(msgs, model="m")
        assert not list(tmp_path.rglob("*.json"))  # the error left no entry
        first = c.chat(msgs, model="m", temperature=0)
        second = c.chat(msgs, model="m", temperature=0)
        third = c.chat(msgs, model="m", temperature=1)  # other params: other key
    assert (first.cached, second.cached, third.cached) == (False, True, False)
    assert second.text == first.text == "cache me"
    assert len(srv.requests) == 2
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 2
    key = request_key(msgs, model="m", params={"temperature": 0})
    assert (tmp_path / key[:2] / f"{key}.json").is_file()
    assert not list(tmp_path.rglob("*.tmp"))


def test_corrupt_cache_entry_is_refetched(tmp_path):
    msgs = [{"role": "user", "content": "x"}]
    key = request_key(msgs, model="m", params={})
    (tmp_path / key[:2]).mkdir()
    (tmp_path / key[:2] / f"{key}.json").write_text("{not json")
    with FakeOpenAIServer(_echo) as srv:
        r = _client(srv, cache_dir=tmp_path).chat(msgs, model="m")
    assert r.text == "x" and not r.cached
    assert json.loads((tmp_path / key[:2] / f"{key}.json").read_text())["text"] == "x"


def test_map_chat_yields_every_index_and_exceptions():
    reqs = [ChatRequest([{"role": "user", "content": f"q{i}"}], "m") for i in range(10)]
    with FakeOpenAIServer(_echo, fail_first=[400]) as srv:
        out = dict(_client(srv, concurrency=3, max_retries=0).map_chat(reqs, progress=None))
    assert sorted(out) == list(range(10))
    errors = [i for i, r in out.items() if isinstance(r, Exception)]
    assert len(errors) == 1
    ok = {i: r.text for i, r in out.items() if not isinstance(r, Exception)}
    assert all(text == f"q{i}" for i, text in ok.items())


def test_map_chat_accepts_a_generator_and_shows_progress(capsys):
    reqs = (ChatRequest([{"role": "user", "content": str(i)}], "m") for i in range(5))
    with FakeOpenAIServer(_echo) as srv:
        out = list(_client(srv, concurrency=2).map_chat(reqs, progress="demo"))
    assert sorted(i for i, _ in out) == [0, 1, 2, 3, 4]
    assert "demo" in capsys.readouterr().err


def test_models_lists_ids():
    with FakeOpenAIServer(_echo, models=["a", "b"], owned_by="infimed") as srv:
        c = _client(srv)
        assert c.models() == ["a", "b"]
        assert c.model_cards()[0]["owned_by"] == "infimed"


def test_messages_never_reach_logs(caplog):
    secret = "Patient John Doe MRN 123456"
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(_echo, fail_first=[500, 400]) as srv:
        c = _client(srv, max_retries=2)
        with pytest.raises(openai.BadRequestError):
            c.chat([{"role": "user", "content": secret}], model="m")
    assert caplog.records  # the retry and the failure were logged …
    assert all(secret not in r.getMessage() and "123456" not in r.getMessage() for r in caplog.records)


def test_missing_base_url_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        OpenAIClient()


def test_env_defaults(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://example.invalid/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    c = OpenAIClient()
    assert c.base_url == "http://example.invalid/v1"
    assert c._sdk.api_key == "sk-env"


def _png_bytes(fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (4, 3), 128).save(buf, format=fmt)
    return buf.getvalue()


def _decode(part: dict) -> tuple[str, bytes]:
    url = part["image_url"]["url"]
    head, b64 = url.split(",", 1)
    return head, base64.b64decode(b64)


def test_image_part_png_jpeg_pil_and_other_formats(tmp_path):
    png = _png_bytes()
    head, data = _decode(image_part(png))
    assert head == "data:image/png;base64" and data == png
    jpg = _png_bytes("JPEG")
    (tmp_path / "a.jpg").write_bytes(jpg)
    head, data = _decode(image_part(tmp_path / "a.jpg"))
    assert head == "data:image/jpeg;base64" and data == jpg
    head, data = _decode(image_part(Image.new("L", (5, 5))))
    assert head == "data:image/png;base64" and Image.open(io.BytesIO(data)).size == (5, 5)
    bmp = _png_bytes("BMP")
    head, data = _decode(image_part(bmp))
    assert head == "data:image/png;base64" and data.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="dicom_part"):
        image_part(b"DICM not an image")
