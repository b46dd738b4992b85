"""Image–text consistency: does the text name the modality / body part this image shows?

The reference is the DICOM header when there is one, else ``meta.modality`` / ``meta.body_part``, else an
image-statistics check (a colour photograph described as a CT, or a grey image described as a stained
slide, is suspicious). Optional: CLIP-style similarity with a local model (``consistency.clip``).
"""

from __future__ import annotations

from curation.scorers._vocab import (
    BODY_PART_RE,
    COLOUR_MODALITIES,
    DICOM_BODY_PART,
    DICOM_MODALITY,
    GREY_MODALITIES,
    MODALITY_RE,
)
from curation.scorers.base import SampleContext, Score, scorer


def text_modalities(text: str) -> set[str]:
    """Canonical modalities named in ``text``."""
    return {k for k, rx in MODALITY_RE.items() if rx.search(text)}


def known_modality(ctx: SampleContext) -> str | None:
    """Canonical modality from the header, else from ``meta.modality``."""
    raw = ctx.header_modality or ctx.sample.meta.modality
    if not raw:
        return None
    raw = raw.strip().upper()
    if raw in DICOM_MODALITY:
        return DICOM_MODALITY[raw]
    named = text_modalities(raw)
    return next(iter(named)) if len(named) == 1 else raw


@scorer("consistency.modality", "consistency")
def modality(ctx: SampleContext, *, colour_threshold: float = 15.0) -> Score:
    """1 when the text names the known modality, low when it names another one, 0.7 when it names none."""
    named = text_modalities(ctx.all_text)
    known = known_modality(ctx)
    if known and named:
        if known in named:
            return Score(1.0, f"text names {known}, as the image is")
        return Score(0.2, f"text names {', '.join(sorted(named))} but the image is {known}")
    decoded = [im for im in ctx.images if im.ok]
    if named and decoded:
        colourful = max(im.colorfulness for im in decoded) > colour_threshold
        if colourful and named <= GREY_MODALITIES:
            return Score(0.3, f"text names {', '.join(sorted(named))} but the image is in colour")
        if not colourful and named <= COLOUR_MODALITIES:
            return Score(0.4, f"text names {', '.join(sorted(named))} but the image is grey")
        return Score(0.9, f"text names {', '.join(sorted(named))}; image statistics agree")
    return Score(0.7, "no modality to compare")


@scorer("consistency.body_part", "consistency")
def body_part(ctx: SampleContext) -> Score:
    """1 when the text names the header's / meta's body part, low when it names only others."""
    raw = (ctx.header_body_part or ctx.sample.meta.body_part or "").strip().upper()
    known = DICOM_BODY_PART.get(raw.replace(" ", ""), raw or None)
    named = {k for k, rx in BODY_PART_RE.items() if rx.search(ctx.all_text)}
    if known and named:
        if known in named:
            return Score(1.0, f"text names the {known.lower()}, as the header does")
        return Score(0.3, f"text names {', '.join(sorted(n.lower() for n in named))} but the image is {known.lower()}")
    return Score(0.7, "no body part to compare")


@scorer("consistency.clip", "consistency")
def clip(ctx: SampleContext, *, model: str, low: float = 0.15, high: float = 0.35) -> Score:
    """Cosine similarity of image and text with a local CLIP-style model (``model``: a local folder)."""
    from curation.scorers._clip import clip_similarity

    if not ctx.images or not any(im.ok for im in ctx.images):
        return Score(1.0, "no image (not applicable)")
    sim = min(clip_similarity(model, im.gray, ctx.all_text) for im in ctx.images if im.ok)
    return Score((sim - low) / (high - low), f"CLIP similarity {sim:.2f}")
