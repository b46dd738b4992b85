"""Score one response against one sample's answer (rule-based; the LLM judge is :mod:`evaluation.judge`)."""

from __future__ import annotations

from typing import Any

from core.manifest import Sample
from evaluation.extract import (
    canonical_yes_no,
    extract_choice,
    extract_yes_no,
    is_refusal,
    is_yes_no,
    normalize,
    option_letters,
    unwrap,
)
from evaluation.metrics import open_scores

_YES_NO = {"yes", "no", "是", "否"}


def answer_index(sample: Sample) -> int | None:
    """Index of the correct option (``meta.answer_index``, else the answer's position among the options)."""
    meta = sample.meta
    idx = getattr(meta, "answer_index", None)
    if isinstance(idx, int):
        return idx
    if meta.options and meta.answer is not None:
        norm = [normalize(o) for o in meta.options]
        if normalize(meta.answer) in norm:
            return norm.index(normalize(meta.answer))
    return None


def closed_kind(sample: Sample) -> str:
    """``yes/no`` | ``choice`` | ``exact`` — how a closed question is judged."""
    meta = sample.meta
    options = [normalize(o) for o in meta.options or []]
    if is_yes_no(meta.answer) and (not options or set(options) <= _YES_NO):
        return "yes/no"
    if options and answer_index(sample) is not None:
        return "choice"
    return "exact"


def score_response(sample: Sample, response: str) -> dict[str, Any]:
    """Judge ``response``: ``{"correct", "extracted", "method", "refusal", "scores"?}``."""
    meta = sample.meta
    answer = meta.answer or ""
    refusal = is_refusal(response)
    if meta.answer_type == "open":
        pred = unwrap(response)
        scores = open_scores(pred, answer)
        return {
            "correct": bool(scores["em"]),
            "extracted": pred,
            "method": "exact-match",
            "refusal": refusal,
            "scores": scores,
        }
    kind = closed_kind(sample)
    if kind == "yes/no":
        got = extract_yes_no(response)
        return {
            "correct": got is not None and got == canonical_yes_no(answer),
            "extracted": got,
            "method": "yes/no",
            "refusal": refusal,
        }
    if kind == "choice":
        choice = extract_choice(response, list(meta.options or []))
        letters = option_letters(len(meta.options or []))
        extracted = letters[choice.index] if choice.index is not None else None
        return {
            "correct": choice.index is not None and choice.index == answer_index(sample),
            "extracted": extracted,
            "method": choice.method,
            "refusal": refusal,
        }
    pred = normalize(unwrap(response))
    return {
        "correct": bool(pred) and pred == normalize(answer),
        "extracted": pred,
        "method": "exact",
        "refusal": refusal,
    }
