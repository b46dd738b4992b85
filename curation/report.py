"""The HTML report: counts per rule, a histogram per dimension, score correlations, and dropped examples
as de-identified thumbnails (pixels only, at most 96 px, blurred when burned-in text is suspected; text
scrubbed of PHI and shortened). Plots are PNG files under ``report_files/``.
"""

from __future__ import annotations

import html
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.phi import scrub
from curation._io import atomic_write_bytes, atomic_write_text
from curation.readers import ReaderIssue
from curation.recipe import DIMENSIONS, Recipe

log = logging.getLogger(__name__)
THUMB_SIDE = 96


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    atomic_write_bytes(path, buf.getvalue())


def _plots(records: Sequence[dict[str, Any]], summary: dict[str, Any], recipe: Recipe, files: Path) -> list[str]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend, faster import

    names = []
    dims = [d for d in DIMENSIONS if any(d in r.get("dimensions_final", {}) for r in records)]
    if dims:
        fig = Figure(figsize=(2.4 * (len(dims) + 1), 2.4))
        fig.subplots_adjust(left=0.04, right=0.99, bottom=0.12, top=0.88, wspace=0.3)
        axes = fig.subplots(1, len(dims) + 1, squeeze=False)
        for ax, d in zip(axes[0], [*dims, "overall"]):
            for decision, colour in (("kept", "tab:green"), ("rejected", "tab:red")):
                vals = [
                    r["overall"] if d == "overall" else r["dimensions_final"].get(d)
                    for r in records
                    if r["decision"] == decision
                ]
                vals = [v for v in vals if v is not None]
                if vals:
                    ax.hist(vals, bins=20, range=(0, 1), alpha=0.6, color=colour, label=decision)
            if d == "overall" and recipe.keep.threshold is not None:
                ax.axvline(recipe.keep.threshold, color="k", linestyle="--", linewidth=1)
            ax.set_title(d)
            ax.set_xlim(0, 1)
        axes[0][0].legend(fontsize=7)
        _save(fig, files / "histograms.png")
        names.append("histograms.png")

    rules = summary.get("rules") or {}
    if rules:
        fig = Figure(figsize=(6, 0.35 * len(rules) + 1))
        fig.subplots_adjust(left=0.4, right=0.97, bottom=0.25 / (0.35 * len(rules) + 1) * 3, top=0.95)
        ax = fig.subplots()
        items = sorted(rules.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:red")
        ax.set_xlabel("samples dropped")
        _save(fig, files / "rules.png")
        names.append("rules.png")

    if len(dims) >= 2 and len(records) >= 3:
        cols = [*dims, "overall"]
        mat = np.array(
            [[r["dimensions_final"].get(d, np.nan) if d != "overall" else r["overall"] for d in cols] for r in records],
            dtype=float,
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.ma.corrcoef(np.ma.masked_invalid(mat), rowvar=False).filled(np.nan)
        fig = Figure(figsize=(4.2, 3.6))
        fig.subplots_adjust(left=0.25, right=0.95, bottom=0.25, top=0.9)
        ax = fig.subplots()
        im = ax.imshow(corr, vmin=-1, vmax=1, cmap="coolwarm")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(cols)), cols, fontsize=8)
        for i in range(len(cols)):
            for j in range(len(cols)):
                if not np.isnan(corr[i, j]):
                    ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title("score correlations")
        _save(fig, files / "correlations.png")
        names.append("correlations.png")
    return names


def thumbnail(ref: dict[str, Any], *, blur: bool) -> bytes | None:
    """A small de-identified PNG of one image slot (pixels only; no header reaches the report)."""
    from PIL import Image, ImageFilter

    from curation.features import analyse_image

    files = [Path(f) for f in ref.get("files") or []] or None
    info = analyse_image(Path(ref["path"]), ref.get("kind", "image"), files)
    if not info.ok:
        return None
    im = Image.fromarray(info.gray)
    im.thumbnail((THUMB_SIDE, THUMB_SIDE))
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(radius=4))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _examples(records: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` rejected samples, one per rule first, then the rest in order."""
    rejected = [r for r in records if r["decision"] == "rejected"]
    chosen, seen_rules = [], set()
    for r in rejected:
        rule = r["reasons"][0]["rule"]
        if rule not in seen_rules:
            seen_rules.add(rule)
            chosen.append(r)
    for r in rejected:
        if len(chosen) >= n:
            break
        if r not in chosen:
            chosen.append(r)
    return chosen[:n]


def _text_of(sample: dict[str, Any]) -> str:
    if sample.get("text") is not None:
        t = sample["text"]
    else:
        parts = []
        for m in sample.get("messages") or []:
            c = m["content"]
            parts.append(f"{m['role']}: " + (c if isinstance(c, str) else " ".join(p.get("text") or "" for p in c)))
        t = " | ".join(parts)
    t = scrub(t.replace("<image>", "").strip())
    return t if len(t) <= 200 else t[:200] + "…"


def write_report(
    output: Path,
    records: Sequence[dict[str, Any]],
    issues: Sequence[ReaderIssue],
    summary: dict[str, Any],
    recipe: Recipe,
) -> Path:
    """Write ``report.html`` and its PNG files; returns the report's path."""
    files = output / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    plots = _plots(records, summary, recipe, files)
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in sorted((summary.get("rules") or {}).items()))
    ex_rows = []
    for k, r in enumerate(_examples(records, recipe.run.thumbnails)):
        imgs = []
        flagged = any(im.get("burned_in") for im in r["images"]) or any(
            x["rule"] == "gate:burned_in_annotation" for x in r["reasons"]
        )
        for j, ref in enumerate(r["sample"].get("images", [])[:2]):
            png = thumbnail(ref, blur=flagged)
            if png is None:
                imgs.append("<span class='na'>undecodable</span>")
                continue
            name = f"example-{k}-{j}.png"
            atomic_write_bytes(files / name, png)
            imgs.append(f"<img src='report_files/{name}' alt='thumbnail'>")
        reasons = "<br>".join(f"<b>{esc(x['rule'])}</b>: {esc(x['reason'])}" for x in r["reasons"])
        ex_rows.append(
            f"<tr><td>{''.join(imgs) or '—'}</td><td>{esc(r['id'])}</td><td>{esc(_text_of(r['sample']))}</td>"
            f"<td>{r['overall']:.2f}</td><td>{reasons}</td></tr>"
        )
    issue_rows = "".join(
        f"<tr><td>{esc(Path(i.source).name)}</td><td>{esc(i.where)}</td><td>{esc(i.message)}</td></tr>"
        for i in issues[:100]
    )
    judge = ""
    if summary.get("judged"):
        judge = f"<p>Judge: {summary['judged']} sample(s) rated, {summary['judge_invalid']} answer(s) invalid (recorded, deterministic scores kept).</p>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Curation report: {esc(recipe.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}}img{{margin:2px;image-rendering:pixelated}}
.na{{color:#a00}}</style></head><body>
<h1>Curation report: {esc(recipe.name)}</h1>
<p><b>{summary["total"]}</b> samples read, <b>{summary["kept"]}</b> kept, <b>{summary["rejected"]}</b> rejected;
{summary["unreadable_records"]} input record(s) could not be read.</p>{judge}
<h2>Dropped samples per rule</h2><table><tr><th>rule</th><th>samples</th></tr>{rows or "<tr><td colspan=2>none</td></tr>"}</table>
<p>A sample can break several rules; every reason is in <code>rejected.jsonl</code> and <code>scores.jsonl</code>.</p>
<h2>Scores</h2>{"".join(f"<p><img src='report_files/{p}' alt='{p}'></p>" for p in plots)}
<h2>Examples of dropped samples</h2>
<p>Thumbnails are pixels only ({THUMB_SIDE} px, blurred when burned-in annotation is flagged); text is scrubbed of PHI.</p>
<table><tr><th>image</th><th>id</th><th>text</th><th>overall</th><th>reasons</th></tr>{"".join(ex_rows) or "<tr><td colspan=5>none</td></tr>"}</table>
<h2>Unreadable input records</h2><table><tr><th>file</th><th>where</th><th>problem</th></tr>{issue_rows or "<tr><td colspan=3>none</td></tr>"}</table>
<h2>Recipe</h2><pre>{esc(recipe.model_dump_json(indent=1))}</pre>
</body></html>"""
    path = output / "report.html"
    atomic_write_text(path, page)
    return path
