"""Scores for one item and their aggregation (closed accuracy, open text metrics, breakdowns, chance).

Text metrics (no nltk, no downloads) work on tokens from :func:`tokenize`: lower-case words (``\\w+``)
with each CJK character its own token.

- exact match: normalised strings equal (:func:`evaluation.extract.normalize`);
- precision / recall / F1: bag-of-tokens overlap (SQuAD style);
- BLEU-n: sentence BLEU with uniform weights over orders 1…n, clipped counts, brevity penalty,
  no smoothing (0 when any order has no overlap, as nltk's default);
- ROUGE-1 / ROUGE-2: n-gram overlap F1; ROUGE-L: longest-common-subsequence F1.

Aggregation counts each question once: closed questions by the rule-based judgement, open ones by
exact match (or by the LLM judge when it ran). "Chance" per question type is the majority-answer rate
among that type's closed questions (by answer position for multiple choice whose options vary);
accuracies carry a Wilson 95 % interval, and a type is "above chance" when the interval's lower bound
exceeds the chance rate.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from evaluation.extract import normalize

Z95 = 1.959963984540054
OPEN_KEYS = ("em", "precision", "recall", "f1", "bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougel")
_TOKEN = re.compile(r"[\u4e00-\u9fff]|[^\W_]+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; every CJK character is a token of its own."""
    return _TOKEN.findall((text or "").lower())


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, n_pred: int, n_ref: int) -> tuple[float, float, float]:
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return 0.0, 0.0, 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return p, r, 2 * p * r / (p + r)


def token_prf(prediction: str, reference: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of bag-of-token overlap."""
    pred, ref = tokenize(prediction), tokenize(reference)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    return _f1(overlap, len(pred), len(ref))


def bleu(prediction: str, reference: str, n: int = 4) -> float:
    """Sentence BLEU-n (uniform weights, brevity penalty, no smoothing)."""
    pred, ref = tokenize(prediction), tokenize(reference)
    if not pred or not ref:
        return 0.0
    log_sum = 0.0
    for k in range(1, n + 1):
        hyp = _ngrams(pred, k)
        total = sum(hyp.values())
        clipped = sum((hyp & _ngrams(ref, k)).values())
        if total == 0 or clipped == 0:
            return 0.0
        log_sum += math.log(clipped / total) / n
    bp = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return bp * math.exp(log_sum)


def rouge_n(prediction: str, reference: str, n: int) -> float:
    """ROUGE-n F1."""
    pred, ref = _ngrams(tokenize(prediction), n), _ngrams(tokenize(reference), n)
    return _f1(sum((pred & ref).values()), sum(pred.values()), sum(ref.values()))[2]


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of tokens)."""
    pred, ref = tokenize(prediction), tokenize(reference)
    return _f1(_lcs(pred, ref), len(pred), len(ref))[2]


def open_scores(prediction: str, reference: str) -> dict[str, float]:
    """All open-answer metrics for one item (``em`` is 0.0 or 1.0)."""
    p, r, f = token_prf(prediction, reference)
    return {
        "em": float(normalize(prediction) == normalize(reference)),
        "precision": p,
        "recall": r,
        "f1": f,
        **{f"bleu{k}": bleu(prediction, reference, k) for k in range(1, 5)},
        "rouge1": rouge_n(prediction, reference, 1),
        "rouge2": rouge_n(prediction, reference, 2),
        "rougel": rouge_l(prediction, reference),
    }


def wilson(right: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``(0, 1)`` when ``total`` is 0)."""
    if total == 0:
        return 0.0, 1.0
    p = right / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _closed_block(items: list[dict[str, Any]]) -> dict[str, Any]:
    right = sum(1 for it in items if it["correct"])
    total = len(items)
    lo, hi = wilson(right, total)
    return {"total": total, "right": right, "acc": right / total if total else None, "ci95": [lo, hi]}


def _open_block(items: list[dict[str, Any]]) -> dict[str, Any]:
    total = len(items)
    block: dict[str, Any] = {"total": total, "right": sum(1 for it in items if it["correct"])}
    block["acc"] = block["right"] / total if total else None
    for key in OPEN_KEYS:
        block[key] = sum(it["scores"][key] for it in items) / total if total else None
    judged = [it for it in items if it.get("judge") is not None]
    if judged:
        block["judge_acc"] = sum(1 for it in judged if it["judge"]) / len(judged)
        block["judge_total"] = len(judged)
    return block


def chance_rate(items: Iterable[dict[str, Any]]) -> tuple[float | None, str | None]:
    """(majority-answer rate, majority answer) among closed items.

    Items sharing one option set (yes/no, a fixed list of modalities, free closed answers) are
    counted by answer text. Multiple-choice items whose options differ from question to question
    are counted by answer *position* ("always answer B"), reported as ``option B``.
    """
    items = list(items)
    option_sets = {tuple(normalize(o) for o in it.get("options") or []) for it in items}
    by_position = (
        len(option_sets) > 1
        and all(it.get("options") for it in items)
        and all(isinstance(it.get("answer_index"), int) for it in items)
    )
    if by_position:
        answers = Counter(f"option {chr(ord('A') + it['answer_index'])}" for it in items)
    else:
        answers = Counter(normalize(it["answer"]) for it in items)
    if not answers:
        return None, None
    answer, count = answers.most_common(1)[0]
    return count / sum(answers.values()), answer


def aggregate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate scored items (see module docstring) into a JSON-ready dict.

    Each item needs ``answer_type`` ("closed"/"open"), ``correct`` (bool), ``answer``, ``modality``,
    ``question_type`` and, for open items, ``scores`` (from :func:`open_scores`).
    """
    closed = [it for it in items if it["answer_type"] == "closed"]
    open_ = [it for it in items if it["answer_type"] == "open"]
    right = sum(1 for it in items if it["correct"])
    out: dict[str, Any] = {
        "overall": {
            "total": len(items),
            "right": right,
            "acc": right / len(items) if items else None,
            "ci95": list(wilson(right, len(items))),
        },
        "closed": _closed_block(closed),
        "open": _open_block(open_),
        "errors": sum(1 for it in items if it.get("error")),
        "refusals": sum(1 for it in items if it.get("refusal")),
    }
    out["by_modality"] = _breakdown(items, "modality")
    out["by_question_type"] = _breakdown(items, "question_type", with_chance=True)
    # Overall closed chance: each type's majority answer, weighted by the type's size.
    by_type: dict[str, list[dict[str, Any]]] = {}
    for it in closed:
        by_type.setdefault(it.get("question_type") or "unknown", []).append(it)
    if closed:
        majority = sum((chance_rate(v)[0] or 0) * len(v) for v in by_type.values())
        out["closed"]["chance"] = majority / len(closed)
        out["closed"]["above_chance"] = out["closed"]["ci95"][0] > out["closed"]["chance"]
    return out


def _breakdown(items: list[dict[str, Any]], key: str, *, with_chance: bool = False) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        groups.setdefault(str(it.get(key) or "unknown"), []).append(it)
    out: dict[str, Any] = {}
    for name in sorted(groups):
        g = groups[name]
        closed = [it for it in g if it["answer_type"] == "closed"]
        open_ = [it for it in g if it["answer_type"] == "open"]
        entry: dict[str, Any] = {"total": len(g)}
        if closed:
            entry["closed"] = _closed_block(closed)
            if with_chance:
                rate, answer = chance_rate(closed)
                entry["closed"]["chance"] = rate
                entry["closed"]["majority_answer"] = answer
                entry["closed"]["above_chance"] = entry["closed"]["ci95"][0] > (rate or 0)
        if open_:
            entry["open"] = _open_block(open_)
        out[name] = entry
    return out
