from __future__ import annotations

import math

import pytest

from evaluation.metrics import aggregate, bleu, chance_rate, open_scores, rouge_l, rouge_n, token_prf, tokenize, wilson


def test_tokenize_words_and_cjk():
    assert tokenize("The Right-upper lobe, 2cm.") == ["the", "right", "upper", "lobe", "2cm"]
    assert tokenize("肝脏 CT") == ["肝", "脏", "ct"]


def test_token_prf_counts_bags():
    assert token_prf("the liver", "liver") == (0.5, 1.0, pytest.approx(2 / 3))
    assert token_prf("", "liver") == (0.0, 0.0, 0.0)
    p, r, f = token_prf("left left lung", "left lung")
    assert (p, r) == (pytest.approx(2 / 3), 1.0) and f == pytest.approx(0.8)


def test_bleu_values():
    assert bleu("right upper lobe", "right upper lobe", 4) == 0.0  # 3 tokens: no 4-grams → 0, as nltk without smoothing
    assert bleu("right upper lobe", "right upper lobe", 3) == pytest.approx(1.0)
    assert bleu("the liver", "liver", 1) == pytest.approx(0.5)
    # brevity penalty: hypothesis shorter than the reference
    assert bleu("liver", "the liver", 1) == pytest.approx(math.exp(1 - 2 / 1))
    assert bleu("kidney", "liver", 1) == 0.0


def test_rouge_values():
    assert rouge_n("right upper lobe", "upper lobe", 1) == pytest.approx(0.8)
    assert rouge_n("right upper lobe", "upper lobe", 2) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert rouge_l("a b c d", "a c d") == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    assert rouge_l("", "x") == 0.0


def test_open_scores_exact_match_is_normalised():
    s = open_scores("Right upper lobe.", "right upper lobe")
    assert s["em"] == 1.0 and s["f1"] == 1.0 and s["rougel"] == 1.0


def test_wilson_interval():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 5)
    assert lo == 0.0 and 0 < hi < 0.6


def _item(answer_type, correct, answer="yes", qt="presence", modality="CT", **kw):
    it = {"answer_type": answer_type, "correct": correct, "answer": answer, "question_type": qt, "modality": modality}
    if answer_type == "open":
        it["scores"] = kw.pop("scores")
    it.update(kw)
    return it


def test_aggregate_counts_each_question_once_and_breaks_down():
    zero = {
        k: 0.0
        for k in ("em", "precision", "recall", "f1", "bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougel")
    }
    one = {k: 1.0 for k in zero}
    items = [
        _item("closed", True, "yes"),
        _item("closed", True, "yes"),
        _item("closed", False, "no"),
        _item("closed", True, "left", qt="side", modality="MR"),
        _item("closed", False, "right", qt="side", modality="MR"),
        _item("open", True, "liver", qt="organ", scores=one, judge=True),
        _item("open", False, "kidney", qt="organ", modality="MR", scores=zero, error="boom"),
    ]
    m = aggregate(items)
    assert m["overall"]["total"] == 7 and m["overall"]["right"] == 4
    assert m["closed"]["total"] == 5 and m["closed"]["right"] == 3 and m["closed"]["acc"] == pytest.approx(0.6)
    assert m["open"]["total"] == 2 and m["open"]["em"] == 0.5 and m["open"]["acc"] == 0.5
    assert m["open"]["judge_acc"] == 1.0 and m["open"]["judge_total"] == 1
    assert m["errors"] == 1
    # chance: presence majority 'yes' 2/3, side majority 1/2 → (2 + 1) / 5
    assert m["closed"]["chance"] == pytest.approx(3 / 5)
    pres = m["by_question_type"]["presence"]["closed"]
    assert pres["chance"] == pytest.approx(2 / 3) and pres["majority_answer"] == "yes"
    assert pres["above_chance"] is False
    assert m["by_modality"]["MR"]["total"] == 3
    assert m["by_modality"]["MR"]["closed"]["acc"] == 0.5 and m["by_modality"]["MR"]["open"]["total"] == 1


def test_chance_rate_and_above_chance():
    items = [{"answer": "yes"}] * 3 + [{"answer": "No"}]
    assert chance_rate(items) == (0.75, "yes")
    assert chance_rate([]) == (None, None)
    many = [_item("closed", True, "yes" if i % 2 else "no") for i in range(60)]
    assert aggregate(many)["by_question_type"]["presence"]["closed"]["above_chance"] is True


def test_chance_of_varying_multiple_choice_is_the_majority_position():
    items = [
        {"answer": "Axial", "options": ["Axial", "Coronal"], "answer_index": 0},
        {"answer": "MRI", "options": ["MRI", "CT"], "answer_index": 0},
        {"answer": "Liver", "options": ["Lung", "Liver"], "answer_index": 1},
    ]
    assert chance_rate(items) == (pytest.approx(2 / 3), "option A")
    same = [{"answer": a, "options": ["yes", "no"], "answer_index": i} for a, i in (("yes", 0), ("no", 1), ("no", 1))]
    assert chance_rate(same) == (pytest.approx(2 / 3), "no")
