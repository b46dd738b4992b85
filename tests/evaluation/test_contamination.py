from __future__ import annotations

import random

import pytest

from evaluation.contamination import _HashIndex, check_contamination, question_hash
from evaluation.prompts import choice_prompt, judgement_prompt


def test_question_hash_ignores_case_punctuation_slots_and_instructions():
    base = question_hash("Is there a fracture?")
    assert question_hash("<image>\nIS THERE A FRACTURE") == base
    assert question_hash(judgement_prompt("Is there a fracture?")) == base
    assert question_hash("Is there a fracture in the rib?") != base
    assert question_hash(choice_prompt("Which plane?", ["Axial"])) != question_hash("Which plane?")  # options stay


def test_hash_index_finds_everything_within_seven_bits():
    rng = random.Random(0)
    index = _HashIndex()
    base = rng.getrandbits(64)
    for _ in range(200):
        index.add(rng.getrandbits(64))
    index.add(base)
    for d in range(8):
        bits = rng.sample(range(64), d)
        probe = base
        for b in bits:
            probe ^= 1 << b
        assert index.nearest(probe, 7) == d
    far = base ^ 0xFF  # 8 bits away, all in one band
    assert index.nearest(far, 4) is None


def test_max_distance_is_validated(tmp_path):
    with pytest.raises(ValueError, match="max_distance"):
        check_contamination([], tmp_path, tmp_path / "m.jsonl", max_distance=9)
