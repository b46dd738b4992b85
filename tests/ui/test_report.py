"""The exported report: stamped, escaped, images embedded, Markdown alongside."""

from __future__ import annotations

import pytest

from ui.messages import Turn
from ui.report import INTENDED_USE, ReportStamp, report_html, report_markdown, write_report

PNG = "data:image/png;base64,iVBORw0KGgo="
TURNS = [
    Turn(question="Is there a <script>alert(1)</script> nodule?", answer="No nodule & no effusion.", model="tiny-lora",
         request_id="ui-111", finish_reason="stop", settings=["CT · 128×128: window lung"], preview=[PNG, "javascript:alert(1)"]),
    Turn(question="Longer please", answer="The lungs", model="tiny", request_id="ui-222", stopped=True),
]  # fmt: skip
STAMP = ReportStamp(server_version="0.1.0", ui_version="0.1.0", created="2026-01-02T03:04:05+00:00")


def test_html_report_is_stamped_escaped_and_self_contained():
    page = report_html(TURNS, STAMP)
    assert page.count(INTENDED_USE) == 2  # top and bottom
    for needle in (
        "tiny, tiny-lora",
        "ui-111",
        "ui-222",
        "window lung",
        "Server version: 0.1.0",
        "2026-01-02T03:04:05+00:00",
        "(stopped by the user)",
    ):
        assert needle in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "No nodule &amp; no effusion." in page
    assert f"src='{PNG}'" in page and "javascript:" not in page  # only PNG data URLs are embedded
    assert "http://" not in page and "https://" not in page  # no external assets


def test_markdown_report_has_the_same_facts():
    md = report_markdown(TURNS, STAMP)
    assert md.startswith("# InfiMed conversation report") and INTENDED_USE in md
    for needle in (
        "`ui-111`",
        "`ui-222`",
        "- CT · 128×128: window lung",
        "Answer (stopped by the user)",
        "Model: tiny, tiny-lora",
    ):
        assert needle in md


def test_write_report(tmp_path):
    html_path, md_path = write_report(TURNS, STAMP, tmp_path / "out")
    assert html_path.suffix == ".html" and md_path.suffix == ".md"
    assert "ui-111" in html_path.read_text() and "ui-111" in md_path.read_text()
    with pytest.raises(ValueError, match="nothing to export"):
        write_report([], STAMP, tmp_path / "empty")
