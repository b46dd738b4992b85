"""Dedup: exact and near duplicates by image pHash and text MinHash; several questions about one image survive."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from core.manifest import Sample
from curation.analyse import analyse_sample
from curation.dedup import find_duplicates
from curation.recipe import Dedup

from .conftest import make_image, test_recipe, vqa


def _records(tmp_path: Path, recs: list[dict]) -> list[dict]:
    r = test_recipe()
    return [analyse_sample(Sample.model_validate(x), i, r, "salt") for i, x in enumerate(recs)]


def test_exact_and_near_duplicates(tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.png", seed=1)
    b = make_image(tmp_path / "b.png", seed=2)
    Image.open(a).resize((250, 250)).save(tmp_path / "a_small.png")
    q, ans = "Is there a nodule in the lung?", "Yes, a small nodule in the left lower lobe."
    recs = _records(
        tmp_path,
        [
            vqa("a", str(a), q, ans),
            vqa("a_again", str(a), q, ans),  # exact
            vqa("a_resized", str(tmp_path / "a_small.png"), q, ans + " "),  # near image + same text
            vqa("a_other_q", str(a), "How many nodules are there in the left lung?", "One."),  # same image, other QA
            vqa("b", str(b), q, ans),  # other image, same text
        ],
    )
    overall = [0.9, 0.8, 0.95, 0.7, 0.9]
    drop = find_duplicates(recs, overall, Dedup())
    assert drop == {1: "exact duplicate of a", 0: "near-duplicate of a_resized"}


def test_modes_image_and_text(tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.png", seed=1)
    b = make_image(tmp_path / "b.png", seed=2)
    recs = _records(
        tmp_path,
        [
            vqa("a1", str(a), "Is there a nodule?", "Yes."),
            vqa("a2", str(a), "Where is the mass located in this scan?", "In the liver."),
            vqa("b1", str(b), "Is there a nodule?", "Yes."),
        ],
    )
    assert set(find_duplicates(recs, [1, 0.5, 0.2], Dedup(mode="image"))) == {1}
    assert set(find_duplicates(recs, [1, 0.5, 0.2], Dedup(mode="text"))) == {2}
    assert find_duplicates(recs, [1, 0.5, 0.2], Dedup(enabled=False)) == {}


def test_text_only_near_duplicates(tmp_path: Path) -> None:
    text = "Chest radiograph shows a right lower lobe consolidation consistent with pneumonia and no effusion."
    recs = _records(
        tmp_path,
        [
            {"schema_version": 1, "id": "t1", "task": "caption", "text": text},
            {"schema_version": 1, "id": "t2", "task": "caption", "text": text.replace("no effusion", "no effusions")},
            {"schema_version": 1, "id": "t3", "task": "caption", "text": "MRI of the knee shows a torn meniscus."},
        ],
    )
    assert find_duplicates(recs, [0.5, 0.6, 0.5], Dedup(text_jaccard=0.8)) == {0: "near-duplicate of t2"}
