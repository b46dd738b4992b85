"""Export the conversation as a report for the chart: self-contained HTML (images embedded) and Markdown.

Both are stamped with the intended-use statement, the model id(s), the server version, the time, and for
each answer its request id and the render settings; the HTML embeds the images exactly as the model saw
them (the PNGs the gateway rendered). Everything shown is escaped; no uploaded file names appear.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ui.messages import Turn

INTENDED_USE = (
    "Intended use: research and decision support only. InfiMed is not a medical device and must not be used "
    "for diagnosis or treatment without a qualified clinician reviewing the images and the answer."
)


@dataclass(frozen=True)
class ReportStamp:
    """What identifies the software behind a report."""

    server_version: str
    ui_version: str
    created: str = ""

    def when(self) -> str:
        return self.created or datetime.now(UTC).isoformat(timespec="seconds")


def _models(turns: list[Turn]) -> str:
    names = sorted({t.model for t in turns if t.model})
    return ", ".join(names) or "—"


def report_markdown(turns: list[Turn], stamp: ReportStamp) -> str:
    """The report as Markdown (images are listed by their settings; they are embedded in the HTML)."""
    lines = [
        "# InfiMed conversation report",
        "",
        f"> {INTENDED_USE}",
        "",
        f"- Created: {stamp.when()}",
        f"- Model: {_models(turns)}",
        f"- Server version: {stamp.server_version} · UI version: {stamp.ui_version}",
        "",
    ]
    for i, t in enumerate(turns, 1):
        lines += [f"## Question {i}", "", t.question, ""]
        if t.settings:
            lines += [f"Images ({len(t.settings)}), as the model saw them (see the HTML report):", ""]
            lines += [f"- {s}" for s in t.settings] + [""]
        status = " (stopped by the user)" if t.stopped else ""
        lines += [f"### Answer{status}", "", t.answer or "_(no answer)_", ""]
        if t.error:
            lines += [f"Error: {t.error}", ""]
        lines += [
            f"_Model {t.model or '—'} · request id `{t.request_id or '—'}` · finish reason {t.finish_reason or '—'}_",
            "",
        ]
    lines += ["---", "", INTENDED_USE, ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111}
.disclaimer{border:2px solid #b45309;background:#fffbeb;padding:.75rem 1rem;border-radius:.5rem;font-weight:600}
.turn{border-top:1px solid #ddd;margin-top:1.5rem;padding-top:1rem}
.q{font-weight:600}.a{white-space:pre-wrap;background:#f6f6f6;padding:.75rem;border-radius:.5rem}
.meta{color:#555;font-size:.85rem}img{max-width:18rem;margin:.25rem;border:1px solid #ccc}
"""


def report_html(turns: list[Turn], stamp: ReportStamp) -> str:
    """The report as one self-contained HTML page (no external assets)."""
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>InfiMed conversation report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>InfiMed conversation report</h1>",
        f"<p class='disclaimer'>{e(INTENDED_USE)}</p>",
        "<ul class='meta'>",
        f"<li>Created: {e(stamp.when())}</li><li>Model: {e(_models(turns))}</li>",
        f"<li>Server version: {e(stamp.server_version)} · UI version: {e(stamp.ui_version)}</li></ul>",
    ]
    for i, t in enumerate(turns, 1):
        parts.append(f"<section class='turn'><h2>Question {i}</h2><p class='q'>{e(t.question)}</p>")
        if t.preview or t.settings:
            parts.append("<div class='images'>")
            parts += [
                f"<img alt='input image {j + 1} as the model saw it' src='{e(u)}'>"
                for j, u in enumerate(t.preview)
                if u.startswith("data:image/png;base64,")
            ]
            parts.append("</div><ul class='meta'>" + "".join(f"<li>{e(s)}</li>" for s in t.settings) + "</ul>")
        status = " (stopped by the user)" if t.stopped else ""
        parts.append(f"<h3>Answer{status}</h3><div class='a'>{e(t.answer) or '<em>(no answer)</em>'}</div>")
        if t.error:
            parts.append(f"<p class='meta'>Error: {e(t.error)}</p>")
        parts.append(
            f"<p class='meta'>Model {e(t.model or '—')} · request id <code>{e(t.request_id or '—')}</code> · finish reason {e(t.finish_reason or '—')}</p></section>"
        )
    parts.append(f"<hr><p class='disclaimer'>{e(INTENDED_USE)}</p></body></html>")
    return "".join(parts)


def write_report(turns: list[Turn], stamp: ReportStamp, directory: Path) -> list[Path]:
    """Write ``report.html`` and ``report.md`` into ``directory``; returns both paths."""
    if not turns:
        raise ValueError("nothing to export: ask a question first")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp_name = stamp.when().replace(":", "").replace("-", "")[:15]
    h = directory / f"infimed-report-{stamp_name}.html"
    m = directory / f"infimed-report-{stamp_name}.md"
    h.write_text(report_html(turns, stamp), encoding="utf-8")
    m.write_text(report_markdown(turns, stamp), encoding="utf-8")
    return [h, m]
