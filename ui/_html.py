"""HTML fragments and CSS of the clinician UI (everything shown is escaped; images only as PNG data URLs)."""

from __future__ import annotations

import html

from ui.api import RenderResult
from ui.messages import ImagingOptions, StudyItem, describe_options, dicom_extension


def study_html(items: list[StudyItem], warnings: list[str]) -> str:
    if not items and not warnings:
        return "<p class='im-muted'>No images yet: upload PNG/JPEG, DICOM files, a series (several files or a .zip), or pick an example.</p>"
    rows = "".join(f"<li>{html.escape(it.label)}</li>" for it in items)
    warn = "".join(f"<li class='im-warn'>{html.escape(w)}</li>" for w in warnings)
    return f"<p><b>Study</b> (de-identified on upload)</p><ul id='study-items'>{rows}{warn}</ul>"


def preview_html(result: RenderResult | None, error: str | None, settings: list[str]) -> str:
    if error:
        return f"<div class='im-refused' id='preview-refused'><b>Not sent to the model:</b> {html.escape(error)}</div>"
    if result is None or not result.images:
        return "<p class='im-muted'>The preview shows exactly what the model will see.</p>"
    imgs = []
    for i, url in enumerate(result.images):
        if not url.startswith("data:image/png;base64,"):
            continue
        imgs.append(
            f"<figure><img class='im-preview-img' alt='model input {i + 1}' src='{html.escape(url)}'><figcaption>image {i + 1}</figcaption></figure>"
        )
    notes = []
    for rec, line in zip(result.records, settings, strict=False):
        sizes = ", ".join(f"{w}×{h}" for w, h in rec.get("output_sizes", [])[:4])
        tokens = sum(rec.get("visual_tokens") or [])
        frames = rec.get("frames", [])
        notes.append(f"<li>{html.escape(line)} — frames {html.escape(str(frames[:8]))} of {rec.get('frames_total', 1)}; "
                     f"{html.escape(sizes)}; {tokens} visual tokens</li>")  # fmt: skip
    return f"<div id='preview-images' class='im-grid'>{''.join(imgs)}</div><ul class='im-notes'>{''.join(notes)}</ul>"


def study_key(items: list[StudyItem], opts: ImagingOptions) -> str:
    return repr(([str(p) for it in items for p in it.paths], opts))


def settings_lines(items: list[StudyItem], opts: ImagingOptions) -> list[str]:
    return [
        f"{it.label}: {describe_options(dicom_extension(opts, frames_total=it.frames_total)) if it.is_dicom else 'as uploaded (metadata removed)'}"
        for it in items
    ]


def options(
    window: str, center: float, width: float, composite: bool, frame_mode: str, frame: float, uniform_n: float
) -> ImagingOptions:
    mode = {"auto": "auto", "this slice/frame": "current", "evenly spaced": "uniform"}.get(frame_mode, "auto")
    return ImagingOptions(window=window or "auto", center=float(center), width=float(width), composite=bool(composite),
                          frame_mode=mode, frame=int(frame or 0), uniform_n=int(uniform_n or 4))  # type: ignore[arg-type]  # fmt: skip


CSS = """
#disclaimer{position:sticky;top:0;z-index:50;background:#fffbeb;border:2px solid #b45309;border-radius:8px;padding:6px 12px;font-weight:600;color:#7c2d12}
.im-muted{color:#666}.im-warn{color:#b45309}
.im-refused{border:2px solid #b91c1c;background:#fef2f2;color:#7f1d1d;padding:8px 12px;border-radius:8px}
.im-grid{display:flex;flex-wrap:wrap;gap:6px}.im-grid figure{margin:0;flex:1 1 45%;max-width:360px;min-width:140px}.im-grid img{width:100%;border:1px solid #ccc}
.im-notes{font-size:0.85em;color:#444}
"""
