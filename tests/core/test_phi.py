"""The shared PHI detector: what it must find, what it must leave alone, scrubbing and date shifting."""

from __future__ import annotations

import itertools

import pytest

from core.phi import PhiSpan, find_phi, has_direct_identifiers, name_variants, scrub, shift_date_text


def _found(text: str, **kw) -> list[tuple[str, str]]:
    return [(text[s.start : s.end], s.kind) for s in find_phi(text, **kw)]


@pytest.mark.parametrize(
    "date",
    [
        "2021-03-04",
        "03/04/2021",
        "4 March 2021",
        "Mar 4, 2021",
        "20210304",
        "4th of March 2021",
        "04.03.2021",
        "3/4/21",
        "March 4 2021",
        "04-Mar-2021",
        "2021/03/04",
        "March 2021",
    ],
)
def test_dates_in_all_formats_are_found(date: str) -> None:
    text = f"Study performed on {date} without contrast."
    assert _found(text) == [(date, "date")]


@pytest.mark.parametrize(
    "text,value,kind",
    [
        ("MRN: 1234567 noted", "1234567", "mrn"),
        ("Patient ID 00123456.", "00123456", "mrn"),
        ("ID 00123456", "00123456", "mrn"),
        ("Accession No. A123456", "A123456", "mrn"),
        ("ref 123456789012 on file", "123456789012", "mrn"),
        ("call (555) 123-4567 today", "(555) 123-4567", "phone"),
        ("call 555-123-4567 today", "555-123-4567", "phone"),
        ("call +44 20 7946 0958 today", "+44 20 7946 0958", "phone"),
        ("Tel: 0123 456789", "0123 456789", "phone"),
        ("write to jane.roe@hospital.org.", "jane.roe@hospital.org", "email"),
        ("SSN 123-45-6789", "123-45-6789", "ssn"),
        ("see https://example.org/case/1.", "https://example.org/case/1", "url"),
        ("lives at 12 Main Street now", "12 Main Street", "address"),
        ("uid 1.2.840.113619.2.55.3.28311 here", "1.2.840.113619.2.55.3.28311", "uid"),
        ("Patient: Jane Roe, 45F", "Jane Roe", "name"),
        ("seen by Dr. Smith", "Smith", "name"),
        ("Name DOE^JOHN^Q.", "DOE^JOHN^Q", "name"),
        ("a 92-year-old woman", "92", "age"),
        ("Patient John Smith has a nodule", "John Smith", "name"),
        ("aged 101, stable", "101", "age"),
    ],
)
def test_identifiers_are_found(text: str, value: str, kind: str) -> None:
    assert (value, kind) in _found(text)


@pytest.mark.parametrize(
    "text",
    [
        "5 mm nodule in the right upper lobe",
        "T2 hyperintense lesion, T1 hypointense",
        "disc bulge at C5-C6 and L4/L5",
        "mass measures 1.5 cm, previously 3.2 x 2.1 x 1.5 cm",
        "slice 12 of 40",
        "lung window -600/1500, W:1500 L:-600",
        "120 kVp, 0.625 mm slices, 512x512 matrix, dose 12.5 mGy",
        "followed since 2019, stable white matter changes",
        "ID card not needed",
        "Grade 3/4 stenosis; ratio 1:2",
        "Patient Position HFS; patient Health Questionnaire done; the patient was Positioned supine",
        "a 67-year-old man, 95% stenosis, 90 mm Hg, follow-up in 2 years",
    ],
)
def test_measurements_are_not_phi(text: str) -> None:
    assert find_phi(text) == []


def test_header_names_are_found_in_all_spellings() -> None:
    text = "John Doe, Doe, John, J. Doe, JOHN DOE and Mr Doe; John was here."
    kinds = {k for _, k in _found(text, names=["DOE^JOHN"])}
    assert kinds == {"name"}
    assert "John" not in scrub(text, names=["DOE^JOHN"]) and "Doe" not in scrub(text, names=["DOE^JOHN"])
    variants = name_variants(["DOE^JOHN^Q"])
    assert {"John", "Doe", "John Doe", "Doe, John"} <= set(variants)


def test_lowercase_common_word_matching_a_name_is_not_flagged() -> None:
    # Patient WHITE^ANNA: "white matter" is anatomy, "Mrs White" is a name.
    text = "white matter lesions; Mrs White agreed"
    assert _found(text, names=["WHITE^ANNA"]) == [("White", "name")]


def test_spans_do_not_overlap_and_prefer_labelled_values() -> None:
    text = "MRN: 20210304 mail a.b@x.org phone 555-123-4567"
    spans = find_phi(text)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
    assert ("20210304", "mrn") in _found(text)
    assert all(isinstance(s, PhiSpan) for s in spans)


def test_scrub_replaces_with_kind_tags() -> None:
    text = "Seen 2021-03-04, MRN: 1234567, call 555-123-4567, jane@x.org."
    assert scrub(text) == "Seen [DATE], MRN: [MRN], call [PHONE], [EMAIL]."


@pytest.mark.parametrize(
    "date,days,shifted",
    [
        ("2021-03-04", 30, "2021-04-03"),
        ("03/04/2021", 30, "04/03/2021"),
        ("4 March 2021", 30, "3 April 2021"),
        ("Mar 4, 2021", 30, "Apr 3, 2021"),
        ("20210304", -4, "20210228"),
        ("4th of March 2021", 30, "3rd of April 2021"),
        ("04.03.2021", 1, "05.03.2021"),
        ("3/4/21", 365, "3/4/22"),
        ("MARCH 4, 2021", 1, "MARCH 5, 2021"),
        ("03/2021", 31, "04/2021"),
    ],
)
def test_date_shift_keeps_format(date: str, days: int, shifted: str) -> None:
    assert shift_date_text(date, days) == shifted
    assert scrub(f"on {date}.", date_shift_days=days) == f"on {shifted}."


def test_invalid_dates_are_not_dates() -> None:
    assert find_phi("values 13/13/2020 and 2021-02-30") == []
    assert shift_date_text("not a date", 3) is None


def test_direct_identifiers_exclude_dates() -> None:
    assert not has_direct_identifiers("CT chest 2021-03-04: 5 mm nodule")
    assert has_direct_identifiers("MRN: 1234567")
    assert has_direct_identifiers("Mr Doe has a nodule", names=["DOE^JOHN"])
    assert not has_direct_identifiers("")
