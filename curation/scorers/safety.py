"""Safety and compliance: PHI in text and DICOM headers, burned-in annotation, licence."""

from __future__ import annotations

from collections import Counter

from core.phi import DIRECT_KINDS, find_phi
from curation.scorers.base import SampleContext, Score, scorer


@scorer("safety.text_phi", "safety")
def text_phi(ctx: SampleContext) -> Score:
    """PHI in the text (names from the DICOM header included). Reasons name kinds, never values."""
    spans = find_phi(ctx.all_text, names=ctx.person_names)
    kinds = Counter(s.kind for s in spans)
    direct = sorted(k for k in kinds if k in DIRECT_KINDS)
    if direct:
        msg = "text holds direct identifiers: " + ", ".join(f"{k}×{kinds[k]}" for k in direct)
        flags = {"direct_identifiers": msg}
        if kinds.get("date"):
            flags["dates"] = f"text holds {kinds['date']} date(s)"
        return Score(0.0, msg, flags)
    if kinds.get("date"):
        msg = f"text holds {kinds['date']} date(s)"
        return Score(0.8, msg, {"dates": msg})
    if kinds:
        return Score(0.9, "text holds " + ", ".join(sorted(kinds)))
    return Score(1.0, "no PHI found in text")


@scorer("safety.header_phi", "safety")
def header_phi(ctx: SampleContext) -> Score:
    """DICOM headers still carrying identifying attributes (and not marked PatientIdentityRemoved)."""
    for i, im in enumerate(ctx.images):
        if im.header_phi and not im.identity_removed:
            msg = (
                f"DICOM header of image {i} carries {', '.join(im.header_phi[:4])}"
                + ("…" if len(im.header_phi) > 4 else "")
                + " (run `infimed deid` first)"
            )
            return Score(0.3, msg, {"header_phi": msg})
    dicoms = sum(1 for im in ctx.images if im.modality is not None or im.header_phi)
    return Score(1.0, "DICOM headers de-identified" if dicoms else "no DICOM header")


@scorer("safety.burned_in", "safety")
def burned_in(ctx: SampleContext, *, ocr: bool = False, min_chars: int = 4) -> Score:
    """``BurnedInAnnotation = YES`` (gate ``burned_in_annotation``); the tag absent on modalities where text
    is usually burned in, by the renderer's own rule (gate ``burned_in_risk``: such images are refused by
    ``core.render``'s default policy); optionally OCR of text burned into the pixels."""
    for i, im in enumerate(ctx.images):
        if im.burned_in == "YES":
            msg = f"image {i}: BurnedInAnnotation is YES"
            return Score(0.0, msg, {"burned_in_annotation": msg})
    for i, im in enumerate(ctx.images):
        if im.burned_in_risk and im.burned_in != "NO":
            msg = f"image {i}: {im.burned_in_risk}"
            return Score(0.4, msg, {"burned_in_risk": msg})
    if ocr:
        from curation.scorers._ocr import burned_in_text

        for i, im in enumerate(ctx.images):
            if im.ok:
                text = burned_in_text(im.gray)
                if len(text.strip()) >= min_chars:
                    kinds = sorted({s.kind for s in find_phi(text, names=ctx.person_names)})
                    msg = f"image {i}: {len(text)} characters of burned-in text" + (
                        f" with {', '.join(kinds)}" if kinds else ""
                    )
                    return Score(0.0 if kinds else 0.4, msg, {"burned_in_annotation": msg} if kinds else {})
    return Score(1.0, "no burned-in annotation flagged")


@scorer("safety.licence", "safety")
def licence(ctx: SampleContext) -> Score:
    """``meta.licence`` against the recipe's ``gates.allowed_licences`` (any licence when that is empty)."""
    lic = (ctx.sample.meta.licence or "").strip()
    allowed = {a.strip().lower() for a in ctx.allowed_licences}
    if not lic:
        msg = "no licence recorded"
        return Score(0.5, msg, {"licence": msg}) if allowed else Score(0.8, msg)
    if allowed and lic.lower() not in allowed:
        msg = f"licence {lic!r} is not allowed"
        return Score(0.0, msg, {"licence": msg})
    return Score(1.0, f"licence {lic}")
