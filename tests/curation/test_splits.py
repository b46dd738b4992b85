"""Patient-level splits: one patient, one split; only the salted hash reaches the manifest."""

from __future__ import annotations

from collections import Counter

from core.manifest import Sample
from curation.analyse import analyse_sample
from curation.splits import assign_split, date_shift_days, patient_hash

from .conftest import test_recipe


def _caption(sid: str, pid: str) -> Sample:
    return Sample.model_validate(
        {"id": sid, "task": "caption", "text": "Chest radiograph: normal lungs.", "meta": {"patient_id": pid}}
    )


def test_same_patient_same_split_and_hash_not_identity() -> None:
    r = test_recipe()
    recs = [analyse_sample(_caption(f"s{i}", f"MRN{i % 7}"), i, r, "salt") for i in range(40)]
    by_patient: dict[str, set[str]] = {}
    for i, rec in enumerate(recs):
        meta = rec["sample"]["meta"]
        assert "patient_id" not in meta and f"MRN{i % 7}" not in meta["patient_hash"]
        by_patient.setdefault(meta["patient_hash"], set()).add(meta["split"])
    assert len(by_patient) == 7 and all(len(s) == 1 for s in by_patient.values())


def test_salt_changes_the_hash_and_fractions_hold() -> None:
    assert patient_hash("123", "a") != patient_hash("123", "b")
    assert patient_hash("123", "a") == patient_hash("123", "a")
    counts = Counter(
        assign_split(patient_hash(str(i), "s"), {"train": 0.8, "val": 0.1, "test": 0.1}) for i in range(5000)
    )
    assert 0.77 < counts["train"] / 5000 < 0.83 and 0.08 < counts["test"] / 5000 < 0.12


def test_date_shift_is_per_patient_nonzero_and_bounded() -> None:
    shifts = [date_shift_days(str(i), "s", 30) for i in range(200)]
    assert all(1 <= abs(d) <= 30 for d in shifts) and len(set(shifts)) > 20
    assert date_shift_days("7", "s", 30) == date_shift_days("7", "s", 30)
    assert [date_shift_days(str(i), "s", 30) for i in range(20)] != [
        date_shift_days(str(i), "t", 30) for i in range(20)
    ]
