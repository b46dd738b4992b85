"""Medical value: medical vocabulary, a known modality, a recognised question type."""

from __future__ import annotations

from curation.scorers._vocab import MEDICAL_RE, QUESTION_TYPE_RE
from curation.scorers.base import SampleContext, Score, scorer
from curation.scorers.consistency import known_modality, text_modalities


@scorer("medical.vocabulary", "medical")
def vocabulary(ctx: SampleContext, *, target: int = 2) -> Score:
    """Distinct medical terms in the text: 1 at ``target`` or more."""
    terms = {m.group(1).lower() for m in MEDICAL_RE.finditer(ctx.all_text)}
    s = min(1.0, len(terms) / max(1, target))
    return Score(s, f"{len(terms)} medical term(s)" + (f" ({', '.join(sorted(terms)[:5])})" if terms else ""))


@scorer("medical.modality", "medical")
def modality(ctx: SampleContext) -> Score:
    """Is the imaging modality known (header, meta or text)?"""
    known = known_modality(ctx)
    if known:
        return Score(1.0, f"modality {known}")
    named = text_modalities(ctx.all_text)
    if named:
        return Score(0.9, f"modality {', '.join(sorted(named))} (from the text)")
    return Score(0.4, "modality unknown")


def question_type(question: str) -> str | None:
    """The question type of a VQA question (first matching rule), or None."""
    for name, rx in QUESTION_TYPE_RE.items():
        if rx.search(question):
            return name
    return None


@scorer("medical.question_type", "medical")
def question_kind(ctx: SampleContext) -> Score:
    """VQA: a question type that medical benchmarks use (``meta.question_type`` or recognised)."""
    if ctx.sample.task != "vqa":
        return Score(1.0, "not a VQA sample (not applicable)")
    qt = ctx.sample.meta.question_type or question_type(ctx.question)
    if qt:
        return Score(1.0, f"question type {qt}")
    return Score(0.6, "question type not recognised")
