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
from urllib.parse import urlparse

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
    page.locator("#max-tokens input").fill("1800")
    page.locator("#max-tokens input").press("Tab")
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
    page.wait_for_function("document.querySelector('#fb-status').innerText.includes('feedback flag on answer 2 recorded')", timeout=30_000)
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
