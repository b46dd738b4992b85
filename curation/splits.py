"""Splits by a salted hash of the patient (else study, else image) identity: one patient, one split.

Only the hash reaches the manifest (``meta.patient_hash``); the identity itself is dropped. The same salt
gives the same splits on every run, so keep it (``splits.salt``, the ``INFIMED_SPLIT_SALT`` environment
variable, or the ``.state/salt`` file a run writes when neither is set). A secret salt matters: an unsalted
hash of a 7-digit record number is reversed by trying all ten million.
"""

from __future__ import annotations

import hashlib


def patient_hash(identity: str, salt: str) -> str:
    """``p-`` + 16 hex digits of sha256(salt | identity)."""
    return "p-" + hashlib.sha256(f"{salt}|{identity}".encode()).hexdigest()[:16]


def assign_split(phash: str, fractions: dict[str, float]) -> str:
    """The split a patient hash falls in (uniform in [0, 1) from the hash, cut by the fractions)."""
    u = int(hashlib.sha256(f"split|{phash}".encode()).hexdigest()[:12], 16) / 16**12
    acc = 0.0
    for name in ("train", "val", "test"):
        acc += fractions.get(name, 0.0)
        if u < acc:
            return name
    return next(n for n in ("test", "val", "train") if fractions.get(n, 0) > 0)


def date_shift_days(identity: str, salt: str, max_days: int) -> int:
    """A per-patient shift in ±[1, max_days] (same patient, same shift: intervals between dates survive).

    Derived from the salt and the identity, not from the published patient hash, so a reader of the
    manifest cannot undo the shift.
    """
    h = int(hashlib.sha256(f"shift|{salt}|{identity}".encode()).hexdigest()[:12], 16)
    days = h % max_days + 1
    return days if (h >> 40) & 1 else -days
