"""Mounting the UI: login, no key in what the browser gets, analytics off, a wide queue, private folders."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ui.app import mount_ui
from ui.isolation import SessionMismatch, login_keys, sweep_raw_uploads
from ui.sessions import Sessions

KEY = "imk_testkey_0123456789abcdefghij"


@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    app = FastAPI()
    mount_ui(
        app,
        api_url=lambda: "",
        api_key=KEY,
        username="clinician",
        password="s3cret-pw",
        data_dir=tmp_path_factory.mktemp("data"),
    )
    with TestClient(app) as client:
        yield app, client


def test_login_is_required_and_works(mounted):
    _, client = mounted
    assert client.get("/ui/config").status_code == 401
    assert client.post("/ui/login", data={"username": "clinician", "password": "wrong"}).status_code == 400
    r = client.post("/ui/login", data={"username": "clinician", "password": "s3cret-pw"})
    assert r.status_code == 200
    config = client.get("/ui/config")
    assert config.status_code == 200
    assert KEY not in config.text and "imk_" not in config.text
    assert "Not a medical device" in config.text


def test_blocks_settings(mounted):
    app, _ = mounted
    demo = app.state.ui
    assert demo.analytics_enabled is False
    assert demo._queue.default_concurrency_limit >= 32  # many clinicians at once, not Gradio's default of 1
    cache = Path(os.environ["GRADIO_TEMP_DIR"])
    assert cache.name == "gradio" and (os.stat(cache.parent).st_mode & 0o777) == 0o700  # a private upload cache
    assert demo.auth == [("clinician", "s3cret-pw")]


def test_mount_refuses_an_empty_password():
    with pytest.raises(ValueError, match="username and a password"):
        mount_ui(FastAPI(), api_url="http://127.0.0.1:1/v1", api_key=KEY, username="u", password="")


def test_sessions_are_private_and_removed(tmp_path):
    sessions = Sessions(tmp_path / "sessions")
    a, b = sessions.get("abc"), sessions.get("../etc")
    assert a.dir != b.dir and b.dir.parent == tmp_path / "sessions"  # no path tricks from the session hash
    assert a.deid.salt != b.deid.salt
    (a.dir / "0001.dcm").write_bytes(b"x")
    sessions.end("abc")
    assert not a.dir.exists()
    b.touched = time.time() - 10_000
    assert sessions.sweep(max_age_s=3600) == 1 and not b.dir.exists()


def test_gateway_mounts_the_ui_with_an_ephemeral_key(monkeypatch):
    from core.budget import PixelBudget
    from infimed.commands.serve import _mount_ui
    from serve.app import create_app
    from serve.auth import KeyStore
    from serve.settings import GatewaySettings

    store = KeyStore()
    token = store.add_ephemeral("ui")
    assert token.startswith("imk_") and store.verify(token) is not None and store.verify(token + "x") is None

    monkeypatch.setenv("INFIMED_UI_PASSWORD", "pw-from-env")
    settings = GatewaySettings(api_key="operator-key", engine_urls=["http://127.0.0.1:9"])
    app = create_app(
        settings, budget=PixelBudget(min_pixels=3136, max_pixels=200_704), engine_urls=["http://127.0.0.1:9"]
    )
    _mount_ui(app, settings)
    demo = app.state.ui
    assert demo.auth == [("clinician", "pw-from-env")]
    api = demo.infimed_api
    assert api._url() == ""  # not started yet: the UI says so instead of calling a wrong port
    app.state.public_url = "http://0.0.0.0:8123"
    assert api.base_url == "http://127.0.0.1:8123/v1"
    assert app.state.gateway.keys.verify(api._key) is not None  # the UI's key is valid on the gateway


def _login(client: TestClient) -> frozenset[str]:
    r = client.post("/ui/login", data={"username": "clinician", "password": "s3cret-pw"})
    assert r.status_code == 200
    return login_keys(dict(client.cookies))


def test_files_are_served_only_to_the_login_that_owns_the_session(tmp_path):
    """Two logins: each downloads its own session's files; the other's, raw uploads and deep links are 404."""
    app = FastAPI()
    mount_ui(app, api_url=lambda: "", api_key=KEY, username="clinician", password="s3cret-pw", data_dir=tmp_path / "d")
    sessions: Sessions = app.state.ui.infimed_sessions
    cache: Path = app.state.ui.infimed_cache
    with TestClient(app) as a, TestClient(app) as b:
        ka, kb = _login(a), _login(b)
        assert ka and kb and not ka & kb
        sa, sb = sessions.get("tab-a", ka), sessions.get("tab-b", kb)
        assert sa.public.parent == sb.public.parent == cache / "s" and sa.public != sb.public
        (sa.public / "report.html").write_text("A's report")
        (sb.public / "report.html").write_text("B's report")
        raw = cache / ("ab" * 32) / "DOE_JOHN.dcm"  # a raw upload as Gradio stores it
        raw.parent.mkdir()
        raw.write_bytes(b"raw")
        url = lambda p: f"/ui/gradio_api/file={p}"
        assert a.get(url(sa.public / "report.html")).text == "A's report"
        assert b.get(url(sb.public / "report.html")).text == "B's report"
        assert b.get(url(sa.public / "report.html")).status_code == 404
        assert a.get(url(sb.public / "report.html")).status_code == 404
        assert a.get(f"/ui/gradio_api/file/{sb.public / 'report.html'}").status_code == 404  # the old route too
        assert a.get(url(sa.public / ".." / sb.public.name / "report.html")).status_code == 404
        assert a.get(url(raw)).status_code == 404 and b.get(url(raw)).status_code == 404
        assert a.get("/ui/gradio_api/deep_link", params={"session_hash": "tab-b"}).status_code == 404
        # a session hash is bound to its login: B cannot listen to A's queue or keep A's session alive
        assert b.get("/ui/gradio_api/queue/data", params={"session_hash": "tab-a"}).status_code == 404
        assert b.get("/ui/gradio_api/heartbeat/tab-a").status_code == 404
        with pytest.raises(SessionMismatch):
            sessions.get("tab-a", kb)
        sessions.end("tab-a")
        assert not sa.public.exists() and not sa.dir.exists() and sb.public.exists()
        # raw uploads left behind by a closed tab are swept by age
        assert sweep_raw_uploads(cache, max_age_s=3600) == 0 and raw.exists()
        old = time.time() - 7200
        os.utime(raw.parent, (old, old))
        assert sweep_raw_uploads(cache, max_age_s=3600) == 1 and not raw.parent.exists()
        assert (cache / "s").exists()  # session folders are not raw uploads
