from __future__ import annotations

import pytest

from evaluation.extract import (
    boxed_content,
    extract_choice,
    extract_yes_no,
    is_refusal,
    normalize,
    strip_option_label,
    unwrap,
)

OPTIONS = ["Axial", "Coronal", "Sagittal", "Oblique"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("yes", "yes"),
        ("YES", "yes"),
        ("No.", "no"),
        ("no", "no"),
        ("Yes, there is a fracture.", "yes"),
        ("No, there is no evidence of pneumothorax.", "no"),
        ("There is no fracture.", "no"),
        ("Based on the image, the answer is yes.", "yes"),
        ("The heart size is normal", None),  # "normal" is not "no" (MedEvalKit's substring bug)
        ("It is not possible to say", None),
        ("I'm sorry, I cannot determine that.", None),
        ("", None),
        ("\\boxed{No}", "no"),
        ("<think>maybe yes, maybe no</think><answer>yes</answer>", "yes"),
        ("是的", "yes"),
        ("否", "no"),
        ("不是", "no"),
    ],
)
def test_yes_no(response, expected):
    assert extract_yes_no(response) == expected


@pytest.mark.parametrize(
    ("response", "index", "method"),
    [
        ("B", 1, "letter"),
        ("b", 1, "letter"),
        ("(C)", 2, "letter"),
        ("D.", 3, "letter"),
        ("B: Coronal", 1, "letter"),
        ("C. Sagittal view", 2, "letter"),
        ("The answer is (B).", 1, "letter"),
        ("The answer is B", 1, "letter"),
        ("Answer: d", 3, "letter"),
        ("\\boxed{A}", 0, "letter"),
        ("coronal", 1, "text"),
        ("Sagittal.", 2, "text"),
        ("This is a sagittal image of the brain", 2, "contains"),
        ("I think option C is right", 2, "letter-in-text"),
        ("saggital", 2, "fuzzy"),
        ("I'm sorry, I can't tell from this image.", None, "refusal"),
        ("", None, "empty"),
    ],
)
def test_choice(response, index, method):
    got = extract_choice(response, OPTIONS)
    assert (got.index, got.method) == (index, method)


def test_choice_prefers_the_longer_contained_option():
    got = extract_choice("There is no mass.", ["mass", "no mass"])
    assert got.index == 1 and got.method == "contains"


def test_article_a_is_not_read_as_letter_a():
    got = extract_choice("a coronal slice", OPTIONS)
    assert got.index == 1


def test_unwrap_and_helpers():
    assert boxed_content("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert boxed_content("no box") is None
    assert unwrap("<think>long</think>Final answer: liver") == "liver"
    assert unwrap("The answer is: right upper lobe.") == "right upper lobe."
    assert normalize("  The  Liver. ") == "the liver"
    assert strip_option_label("A:Axial") == "Axial" and strip_option_label("(B) MRI") == "MRI"
    assert strip_option_label("Anterior") == "Anterior"
    assert is_refusal("As an AI, I cannot provide a diagnosis") and not is_refusal("Yes")
