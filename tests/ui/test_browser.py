"""End-to-end: the clinician UI in a real headless Chromium against the live gateway and the tiny model.

Needs Debian's ``chromium`` (``apt-get install -y chromium``: /usr/bin/chromium) and the ``playwright``
Python package; uses the session fixture ``gateway`` (tests/conftest.py: ``infimed serve`` with the UI
at /ui, user "clinician", password ``gateway.ui_password``). Every request that does not go to the
loopback is blocked, and the test asserts none was attempted. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

pytestmark = [pytest.mark.browser, pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(600)]


def _cancellations(root: str, key: str) -> float:
    text = httpx.get(f"{root}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    m = re.search(r"^infimed_cancellations_total (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_clinician_flow(gateway, browser):
    from pydicom.data import get_testdata_file

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    attempted_outside: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)

    def guard(route):
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlparse(url).hostname in LOOPBACK:
            route.continue_()
        else:
            attempted_outside.append(url)
            route.abort()

    page.route("**/*", guard)
    shot = lambda name: page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"), full_page=True)

    # --- log in
    page.goto(f"{gateway.root}/ui/")
    page.locator("input").first.fill("clinician")
    page.locator("input[type=password]").fill(gateway.ui_password)
    shot("0-login")
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#disclaimer", timeout=30_000)
    assert "Not a medical device" in page.locator("#disclaimer").inner_text()
    page.wait_for_function(
        "document.querySelector('#status') && document.querySelector('#status').innerText.includes('Connected')",
        timeout=30_000,
    )
    # The UI's own API key (imk_…) and the operator's key stay on the server.
    config = page.request.get(f"{gateway.root}/ui/config").text()
    for text in (page.content(), config):
        assert "imk_" not in text and (len(gateway.api_key) < 8 or gateway.api_key not in text)

    # --- upload a DICOM: the preview shows what the model sees
    page.locator("#upload input[type=file]").set_input_files(get_testdata_file("CT_small.dcm"))
    page.wait_for_selector("#preview-images img", timeout=60_000)
    assert "CT" in page.locator("#study").inner_text()
    first = page.locator("#preview-images img").first.get_attribute("src")
    assert first and first.startswith("data:image/png;base64,")
    shot("1-uploaded")

    # --- change the window preset: the preview changes
    page.locator("#window input").click()
    page.get_by_role("option", name="lung", exact=True).click()
    page.wait_for_function(
        "(old) => { const i = document.querySelector('#preview-images img'); return i && i.getAttribute('src') !== old; }",
        arg=first,
        timeout=60_000,
    )
    assert "window lung" in page.locator("#preview").inner_text()
    shot("2-lung-window")

    # --- ask a question: a streamed answer (Ask is disabled while it streams)
    answering = "document.querySelector('#ask').disabled"
    last_bot = "(() => { const b = document.querySelectorAll('#chat [data-testid=\"bot\"]'); return b.length ? b[b.length - 1].innerText.trim() : ''; })()"
    page.locator("#question textarea").fill("What modality is this image?")
    page.locator("#ask").click()
    page.wait_for_function(f"{last_bot}.length > 1", timeout=120_000)  # text beyond the '…' placeholder
    streamed = page.evaluate(last_bot)
    page.wait_for_function(f"!{answering}", timeout=300_000)  # the answer has finished
    final = page.evaluate(last_bot)
    assert final and len(final) >= len(streamed)
    shot("3-answer")
    page.locator("#chat").get_by_role("button", name="Like", exact=True).first.click()  # the quick thumbs-up
    page.wait_for_function(
        "document.querySelector('#fb-status').innerText.includes('helpful on answer 1')", timeout=30_000
    )

    # --- a long generation (ignore_eos, many tokens), stopped mid-stream
    page.locator("#sampling").get_by_text("Sampling settings").click()
    for _ in range(5):  # the accordion mounts its inputs as it opens: a value typed meanwhile can be lost
        page.locator("#max-tokens input").fill("1800")
        page.locator("#max-tokens input").press("Tab")
        page.wait_for_timeout(300)
        if page.locator("#max-tokens input").input_value() == "1800":
            break
    assert page.locator("#max-tokens input").input_value() == "1800"
    page.locator("#ignore-eos input").check()
    before = _cancellations(gateway.root, gateway.api_key)
    page.locator("#question textarea").fill("Describe it in detail.")
    page.locator("#ask").click()
    page.wait_for_function(answering, timeout=60_000)
    page.wait_for_function(
        f"document.querySelectorAll('#chat [data-testid=\"bot\"]').length >= 2 && {last_bot}.length > 3",
        timeout=120_000,
    )
    page.locator("#stop").click()
    try:
        page.wait_for_function(
            "() => document.querySelector('#chat').innerText.includes('stopped by the user')", timeout=90_000
        )
    except Exception:
        shot("failed-stop")
        raise
    page.wait_for_function(f"!{answering}", timeout=30_000)
    stopped_text = page.evaluate(last_bot)
    page.wait_for_timeout(2000)
    assert page.evaluate(last_bot) == stopped_text  # nothing more arrives
    deadline = time.monotonic() + 20
    while _cancellations(gateway.root, gateway.api_key) <= before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _cancellations(gateway.root, gateway.api_key) > before  # the gateway closed the engine's stream
    shot("4-stopped")

    # --- feedback: flag with a comment holding identifiers (scrubbed before storing)
    page.locator("#fb-rating").get_by_text("flag", exact=True).click()
    page.locator("#fb-comment textarea").fill("Wrong modality. Patient MRN: 12345678, phone 555-123-4567.")
    page.locator("#fb-link input").check()
    page.locator("#fb-send").click()
    page.wait_for_function(
        "document.querySelector('#fb-status').innerText.includes('feedback flag on answer 2 recorded')", timeout=30_000
    )
    status = page.locator("#fb-status").inner_text()
    assert "12345678" not in status and "555-123-4567" not in status and "[MRN]" in status
    shot("5-feedback")

    # --- export the report
    page.locator("#export").click()
    page.wait_for_selector("#report a", timeout=30_000)
    links = [a.get_attribute("href") for a in page.locator("#report a").all()]
    html_link = next(h for h in links if h and ".html" in h)
    body = page.request.get(html_link if html_link.startswith("http") else f"{gateway.root}{html_link}").text()
    assert "not a medical device" in body.lower()
    assert "ui-" in body and gateway.model in body  # request ids and the model id
    assert "window lung" in body and "data:image/png;base64," in body  # render settings and what the model saw
    shot("6-exported")

    page.close()
    assert attempted_outside == [], f"the page tried to reach outside the loopback: {attempted_outside[:5]}"


def _login(page, gateway) -> None:
    page.goto(f"{gateway.root}/ui/")
    page.locator("input").first.fill("clinician")
    page.locator("input[type=password]").fill(gateway.ui_password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#disclaimer", timeout=30_000)


def test_examples_navigator_and_refusal(gateway, browser):
    from pydicom.data import get_testdata_file

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    _login(page, gateway)

    # --- an example series, one click away; the navigator appears and picks slices
    page.locator("#example input").click()
    page.get_by_role("option", name="CT series (pydicom CT5N)").click()
    page.locator("#example-load").click()
    page.wait_for_selector("#preview-images img", timeout=60_000)
    assert "5 slices" in page.locator("#study").inner_text()
    assert page.locator("#question textarea").input_value()  # the example's question is filled in
    assert page.locator("#frame").is_visible()
    page.locator("#frame-mode").get_by_text("this slice/frame").click()
    page.wait_for_function("document.querySelector('#preview').innerText.includes('frames [0] of 5')", timeout=60_000)
    assert page.locator("#preview-images img").count() == 1
    page.locator("#composite input").check()
    page.wait_for_function(
        "document.querySelector('#preview').innerText.includes('3-window composite')", timeout=60_000
    )
    page.screenshot(path=str(ARTIFACTS / "ui-7-series.png"), full_page=True)

    # --- an ultrasound without BurnedInAnnotation: refused, with the reason shown
    page.locator("#upload input[type=file]").set_input_files(get_testdata_file("examples_ybr_color.dcm"))
    page.wait_for_selector("#preview-refused", timeout=60_000)
    reason = page.locator("#preview-refused").inner_text()
    assert "burned" in reason.lower() and "messages[" not in reason
    page.screenshot(path=str(ARTIFACTS / "ui-8-refused.png"), full_page=True)
    page.close()


def _guarded_page(context, attempted: list[str]):
    page = context.new_page()

    def guard(route):
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlparse(url).hostname in LOOPBACK:
            route.continue_()
        else:
            attempted.append(url)
            route.abort()

    page.route("**/*", guard)
    return page


def _ask_and_export(page, question: str) -> str:
    """Ask a short question, wait for the whole answer, export; returns the report's HTML link."""
    page.locator("#sampling").get_by_text("Sampling settings").click()
    page.locator("#max-tokens input").fill("8")
    page.locator("#max-tokens input").press("Tab")
    page.locator("#question textarea").fill(question)
    page.locator("#ask").click()
    page.wait_for_function(
        "document.querySelectorAll('#chat [data-testid=\"bot\"]').length >= 1 && !document.querySelector('#ask').disabled",
        timeout=300_000,
    )
    page.locator("#export").click()
    page.wait_for_selector("#report a", timeout=60_000)
    return next(h for h in (a.get_attribute("href") for a in page.locator("#report a").all()) if h and ".html" in h)


def _served_path(href: str) -> Path:
    return Path(unquote(href.split("file=", 1)[1]))


def _modalities(folder: Path) -> set[str]:
    import pydicom

    return {str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in folder.glob("*.dcm")}


def _wait_gone(paths: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(p.exists() for p in paths), f"still there after the tab closed: {[p for p in paths if p.exists()]}"


def test_two_sessions_are_isolated_and_closing_the_tab_deletes_its_files(gateway, browser):
    """Two logins in two browser contexts: each sees only its own study and report; closing A's tab deletes
    A's de-identified files and reports (B's stay); raw uploads never stay in Gradio's cache."""
    from pydicom.data import get_testdata_file

    t_start = time.time()
    attempted: list[str] = []
    ctx_a = browser.new_context(viewport={"width": 1400, "height": 1100})
    ctx_b = browser.new_context(viewport={"width": 1400, "height": 1100})
    page_a, page_b = _guarded_page(ctx_a, attempted), _guarded_page(ctx_b, attempted)
    for page in (page_a, page_b):
        _login(page, gateway)
    page_a.locator("#upload input[type=file]").set_input_files(get_testdata_file("CT_small.dcm"))
    page_b.locator("#upload input[type=file]").set_input_files(get_testdata_file("MR_small.dcm"))
    for page, modality in ((page_a, "CT"), (page_b, "MR")):
        page.wait_for_selector("#preview-images img", timeout=60_000)
        assert modality in page.locator("#study").inner_text()
    assert "MR" not in page_a.locator("#study").inner_text() and "CT" not in page_b.locator("#study").inner_text()

    href_a = _ask_and_export(page_a, "What modality is this?")
    href_b = _ask_and_export(page_b, "Which sequence is this?")
    pub_a, pub_b = _served_path(href_a).parent, _served_path(href_b).parent
    cache = pub_a.parents[1]
    assert pub_a != pub_b and pub_b.parents[1] == cache and cache.name == "gradio"
    # the server-side study folders: one per session, each holding only its own de-identified files
    ours = [d for d in (cache.parent / "sessions").iterdir() if d.stat().st_ctime >= t_start - 1]
    mods = {d: _modalities(d) for d in ours}
    assert sorted(map(sorted, mods.values())) == [["CT"], ["MR"]], mods
    (dir_a,) = [d for d, m in mods.items() if m == {"CT"}]
    (dir_b,) = [d for d, m in mods.items() if m == {"MR"}]
    # raw uploads are gone from Gradio's cache (de-identified into the session folder, then deleted)
    assert not list(cache.rglob("*.dcm"))

    root = gateway.root
    url = lambda href: href if href.startswith("http") else f"{root}{href}"
    assert page_a.request.get(url(href_a)).status == 200 and page_b.request.get(url(href_b)).status == 200
    assert page_b.request.get(url(href_a)).status == 404  # B cannot download A's report, even knowing its URL
    assert page_a.request.get(url(href_b)).status == 404
    page_a.screenshot(path=str(ARTIFACTS / "ui-9-session-a.png"), full_page=True)
    page_b.screenshot(path=str(ARTIFACTS / "ui-9-session-b.png"), full_page=True)

    # --- closing A's tab deletes A's files (study and reports); B's stay
    page_a.close()
    ctx_a.close()
    _wait_gone([pub_a, dir_a])
    assert pub_b.exists() and dir_b.exists() and page_b.request.get(url(href_b)).status == 200
    page_b.close()
    ctx_b.close()
    _wait_gone([pub_b, dir_b])
    assert attempted == [], f"the page tried to reach outside the loopback: {attempted[:5]}"


def _self_signed(folder: Path, host: str = "gateway.test") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` only (not 127.0.0.1): the UI must trust it by pinning, not by name."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    key_path.chmod(0o600)
    return cert_path, key_path


def test_ui_behind_tls(gateway, browser, tmp_path):
    """`infimed serve --tls-certfile/--tls-keyfile` (a second gateway on the shared engine): the mounted UI
    works over HTTPS in the browser — login, a DICOM preview rendered by the API, a streamed answer —
    with the UI calling the gateway's HTTPS port itself (self-signed certificate for another host name)."""
    import os
    import secrets
    import subprocess
    import sys

    from pydicom.data import get_testdata_file

    from tests.support.gateway import ROOT, stop_group

    m = re.search(r"engine ready at (http://127\.0\.0\.1:\d+)", gateway.log_text())
    assert m, "the shared gateway's log does not name its engine URL"
    cert, key = _self_signed(tmp_path)
    ready, log_path = tmp_path / "ready.txt", tmp_path / "tls-gateway.log"
    password = secrets.token_urlsafe(12)
    env = dict(os.environ, INFIMED_API_KEY="imk_tls_" + secrets.token_urlsafe(16), INFIMED_UI_PASSWORD=password,
               INFIMED_UI_DATA_DIR=str(tmp_path / "ui-data"), INFIMED_LOG_LEVEL="INFO")  # fmt: skip
    cmd = [sys.executable, "-m", "infimed", "serve", "--model", str(gateway.model_dir), "--served-model-name",
           gateway.model, "--engine-url", m.group(1), "--port", "0", "--ready-file", str(ready),
           "--tls-certfile", str(cert), "--tls-keyfile", str(key)]  # fmt: skip
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    context = None
    try:
        deadline = time.monotonic() + 120
        while not (ready.exists() and ready.read_text().strip()):
            assert proc.poll() is None, f"the TLS gateway exited:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the TLS gateway did not start:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        root = ready.read_text().strip()
        assert root.startswith("https://127.0.0.1:")
        assert httpx.get(f"{root}/health", verify=False, timeout=10).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{root}/health", timeout=10)  # a client that verifies the certificate refuses it

        attempted: list[str] = []
        context = browser.new_context(viewport={"width": 1400, "height": 1100}, ignore_https_errors=True)
        page = _guarded_page(context, attempted)
        page.goto(f"{root}/ui/")
        page.locator("input").first.fill("clinician")
        page.locator("input[type=password]").fill(password)
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#disclaimer", timeout=30_000)
        page.wait_for_function(
            "document.querySelector('#status') && document.querySelector('#status').innerText.includes('Connected')",
            timeout=30_000,
        )  # /v1/models and /version over HTTPS, from the UI's server side
        page.locator("#upload input[type=file]").set_input_files(get_testdata_file("CT_small.dcm"))
        page.wait_for_selector("#preview-images img", timeout=60_000)  # /v1/infimed/render over HTTPS
        page.locator("#question textarea").fill("What modality is this image?")
        page.locator("#ask").click()
        last_bot = "(() => { const b = document.querySelectorAll('#chat [data-testid=\"bot\"]'); return b.length ? b[b.length - 1].innerText.trim() : ''; })()"
        page.wait_for_function(f"{last_bot}.length > 1", timeout=120_000)
        page.wait_for_function("!document.querySelector('#ask').disabled", timeout=300_000)
        answer = page.evaluate(last_bot)
        assert answer and "did not answer" not in answer and "⚠" not in answer, answer
        assert page.evaluate("location.protocol") == "https:"
        page.screenshot(path=str(ARTIFACTS / "ui-10-tls.png"), full_page=True)
        assert attempted == [], f"the page tried to reach outside the loopback: {attempted[:5]}"
    finally:
        if context is not None:
            context.close()
        stop_group(proc)
