"""The one PHI detector for free text: dates, record numbers, phone, e-mail, SSN, URLs, addresses, names.

Used by curation (gates and scrubbing), the UI's feedback box, de-identification of report text and the
gateway's log tests. Pure standard library, no I/O, deterministic.

Order of work in :func:`find_phi`:

1. every pattern below proposes candidate spans, each with a kind and a priority (labelled values such as
   ``MRN: 1234567`` outrank bare digit runs; an e-mail outranks the digits inside it);
2. candidates are accepted greedily by (priority, length) and overlapping lower-ranked ones are dropped;
3. the accepted spans are returned sorted by position.

What it deliberately does *not* flag: measurements (``5 mm``, ``1.5 cm``, ``3.2 x 2.1 cm``), sequence and
level names (``T2``, ``C5-C6``, ``L4/L5``), ``slice 12 of 40``, window values (``-600/1500``, ``W:1500 L:-600``),
bare years (HIPAA Safe Harbor keeps the year). Numeric dates are read month-first (``03/04/2021`` is 4 March)
unless the first field is > 12 or the separator is a dot (``04.03.2021`` is day-first, European style).

Kinds: ``date``, ``age`` (ages over 89, which Safe Harbor aggregates), ``mrn`` (record / accession / patient ids and long digit runs), ``uid`` (DICOM-style dotted
UIDs), ``phone``, ``email``, ``ssn``, ``url``, ``address``, ``name``. :data:`DIRECT_KINDS` are the direct
identifiers (dates and URLs are not: nearly every report carries a date, and URLs are usually citations).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DIRECT_KINDS",
    "PhiSpan",
    "find_phi",
    "has_direct_identifiers",
    "name_variants",
    "scrub",
    "shift_date_text",
]

DIRECT_KINDS: frozenset[str] = frozenset({"name", "mrn", "uid", "phone", "email", "ssn", "address"})


@dataclass(frozen=True)
class PhiSpan:
    """A half-open character span ``text[start:end]`` holding PHI of one ``kind``."""

    start: int
    end: int
    kind: str


# --------------------------------------------------------------------------- dates

_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_MONTH_ABBR = {m[:3]: i + 1 for i, m in enumerate(_MONTHS)}
_MONTH_ABBR["sept"] = 9
_MONTH_FULL = {m: i + 1 for i, m in enumerate(_MONTHS)}
_MON = r"(?P<mon>(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?))\.?"
_DAY = r"(?P<d>0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_NB = r"(?<![\w.\-/])"  # not glued to a preceding word, decimal, range or fraction
_NA = r"(?![\w\-/]|\.\d)"  # nor to a following one

_DATE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # 2021-03-04, 2021/03/04, 2021.03.04 (optionally followed by a time, which is left alone)
    (
        re.compile(
            _NB
            + r"(?P<y>(?:19|20)\d\d)(?P<s>[-/.])(?P<m>0?[1-9]|1[0-2])(?P=s)(?P<d>0?[1-9]|[12]\d|3[01])(?![\d/]|\.\d)"
        ),
        "ymd",
    ),
    # 03/04/2021, 3-4-21, 04.03.2021 (dot form requires a four-digit year)
    (re.compile(_NB + r"(?P<a>\d{1,2})(?P<s>[/-])(?P<b>\d{1,2})(?P=s)(?P<y>(?:19|20)?\d\d)" + _NA), "num"),
    (re.compile(_NB + r"(?P<a>\d{1,2})(?P<s>\.)(?P<b>\d{1,2})\.(?P<y>(?:19|20)\d\d)" + _NA), "num"),
    # DICOM DA 20210304 (optionally followed by a DICOM TM)
    (
        re.compile(r"(?<![\w.])(?P<y>(?:19|20)\d\d)(?P<m>0[1-9]|1[0-2])(?P<d>0[1-9]|[12]\d|3[01])(?=\b|\d{4,6}\b)"),
        "ymd",
    ),
    # 4 March 2021, 4th Mar. 2021, 04-Mar-2021
    (re.compile(r"\b" + _DAY + r"(?:\s+|-)(?:of\s+)?" + _MON + r"(?:,?\s+|-)(?P<y>(?:19|20)\d\d)\b"), "dmy"),
    # March 4, 2021, Mar 4 2021
    (re.compile(r"\b" + _MON + r"\s+" + _DAY + r",?\s+(?P<y>(?:19|20)\d\d)\b"), "mdy"),
    # March 2021 (month and year only: still a date element under Safe Harbor)
    (re.compile(r"\b" + _MON + r",?\s+(?P<y>(?:19|20)\d\d)\b"), "my"),
    # 03/2021 (numeric month and year)
    (re.compile(_NB + r"(?P<m>0?[1-9]|1[0-2])/(?P<y>(?:19|20)\d\d)" + _NA), "mym"),
]


def _month_from_name(name: str) -> int:
    key = name.lower().rstrip(".")
    return _MONTH_FULL.get(key) or _MONTH_ABBR.get(key) or _MONTH_ABBR[key[:3]]


def _parse_date(m: re.Match[str], form: str) -> _dt.date | None:
    """The calendar date a match denotes, or None when it is not a valid date (e.g. 31/31/2020)."""
    g = m.groupdict()
    try:
        year = int(g["y"])
        if year < 100:
            year += 2000 if year < 50 else 1900
        if form == "num":
            a, b = int(g["a"]), int(g["b"])
            month, day = (b, a) if (g["s"] == "." or a > 12) else (a, b)
        elif form == "ymd":
            month, day = int(g["m"]), int(g["d"])
        elif form == "mym":
            month, day = int(g["m"]), 15
        else:
            month = _month_from_name(g["mon"])
            day = int(g["d"]) if form != "my" else 15  # mid-month: shifting keeps a plausible month
        return _dt.date(year, month, day)
    except (ValueError, KeyError):
        return None


def _fit_case(template: str, word: str) -> str:
    if template.isupper():
        return word.upper()
    if template.islower():
        return word.lower()
    return word.capitalize()


def _render_group(name: str, old: str, new: _dt.date, m: re.Match[str], form: str) -> str:
    if name == "y":
        return f"{new.year:04d}" if len(old) == 4 else f"{new.year % 100:02d}"
    if name == "mon":
        full = _MONTHS[new.month - 1]
        word = full if len(old.rstrip(".")) > 4 else full[:3]
        return _fit_case(old, word)
    value = {"m": new.month, "d": new.day}.get(name)
    if name in ("a", "b"):
        a = int(m.group("a"))
        month_first = not (m.group("s") == "." or a > 12)
        is_month = (name == "a") == month_first
        value = new.month if is_month else new.day
    assert value is not None
    digits = re.match(r"\d+", old)
    width = len(digits.group(0)) if digits else 1
    suffix = old[len(digits.group(0)) :] if digits else ""
    if suffix:  # ordinal suffix follows the new day
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(value % 10 if value not in (11, 12, 13) else 0, "th")
    return f"{value:0{width}d}" + suffix if width > 1 else f"{value}{suffix}"


def shift_date_text(text: str, days: int) -> str | None:
    """Shift the single date ``text`` by ``days``, keeping its format; None when ``text`` is not a date."""
    for pattern, form in _DATE_PATTERNS:
        m = pattern.fullmatch(text)
        if m and (d := _parse_date(m, form)) is not None:
            return _shift_match(m, form, d, days)
    return None


def _shift_match(m: re.Match[str], form: str, date: _dt.date, days: int) -> str:
    new = date + _dt.timedelta(days=days)
    groups = ["y", "m", "d", "mon", "a", "b"]
    if form == "my":
        groups = ["y", "mon"]
    elif form == "mym":
        groups = ["y", "m"]
    edits = []
    for g in groups:
        if g in m.re.groupindex and m.group(g) is not None:
            old = m.group(g)
            if g == "d":  # the day group may carry an ordinal suffix in the named forms
                end = m.end(g)
                tail = re.match(r"st|nd|rd|th", m.string[end : m.end()])
                if tail:
                    old += tail.group(0)
            edits.append(
                (m.start(g) - m.start(), m.start(g) - m.start() + len(old), _render_group(g, old, new, m, form))
            )
    out = m.group(0)
    for s, e, rep in sorted(edits, reverse=True):
        out = out[:s] + rep + out[e:]
    return out


# --------------------------------------------------------------------------- identifiers

_LABEL_ID = re.compile(
    r"(?:(?i:\b(?:MRN|MR\s*#|med(?:ical)?\s+rec(?:ord)?(?:\s+(?:number|num|no\.?|#))?|patient\s+(?:id|number|no\.?)|"
    r"hospital\s+(?:id|number|no\.?)|accession(?:\s+(?:number|num|no\.?|#))?|acc\.?\s*(?:#|no\.?)|"
    r"record\s+(?:number|no\.?)|chart\s+(?:number|no\.?)|encounter\s+(?:id|number|no\.?)))|\bID\b|\bPID\b)"
    r"\s*(?:[:#=]|is|no\.?)?\s*(?P<v>(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{3,})\b"
)
_DIGIT_RUN = re.compile(r"(?<![\w.\-/])\d{7,}(?![\w]|\.\d)")
_UID = re.compile(r"(?<![\w.])\d+(?:\.\d+){4,}(?![\w.])")
_SSN = re.compile(r"(?<![\w\-])\d{3}-\d{2}-\d{4}(?![\w\-])")
_SSN_LABELLED = re.compile(
    r"(?i:\b(?:SSN|social\s+security(?:\s+(?:number|no\.?))?)\s*[:#]?\s*)(?P<v>\d{3}[- ]?\d{2}[- ]?\d{4})\b"
)
_PHONE = re.compile(r"(?<![\w\-/.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w\-/]|\.\d)")
_PHONE_INTL = re.compile(r"(?<![\w\-/.])\+\d{1,3}(?:[\s.-]\d{1,4}){2,5}(?![\w\-/]|\.\d)")
_PHONE_LABELLED = re.compile(
    r"(?i:\b(?:tel(?:ephone)?|phone|ph|fax|mobile|cell|pager)\.?\s*(?:no\.?|number)?\s*[:#]?\s*)(?P<v>\+?[\d()][\d()\s.-]{5,}\d)"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+[^\s<>\"')\].,;:!?]")
_ADDRESS = re.compile(
    r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Court|Ct|"
    r"Place|Pl|Way|Terrace|Highway|Hwy)\b\.?"
)
_AGE_OVER_89 = re.compile(
    r"(?i:\b(?P<v>(?:9\d|1[01]\d))(?:[- ]?(?:year|yr)s?[- ]old|[- ]?y/?o\b|[- ]?(?:years|yrs)\b(?! ago))"
    r"|\b(?:aged?|age:)\s*(?P<w>9\d|1[01]\d)\b)"
)
_CAP = r"[A-Z][a-z'\-]+"
_NAME_HONORIFIC = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?\s+(?P<v>" + _CAP + r"(?:\s+" + _CAP + r")?)")
_NAME_LABELLED = re.compile(
    r"(?i:\b(?:patient(?:'s)?\s+name|name|patient|pt)\s*:\s*)(?P<v>" + _CAP + r"(?:,?\s+" + _CAP + r"){1,2})"
)
# "Patient John Smith" (no colon): two or three capitalised words that are not a known phrase.
_NOT_NAMES = (
    r"(?!(?:Position|Positioning|Health|History|Information|Identity|Identification|Name|Care|Safety|Record|Portal|"
    r"Education|Consent|Orientation|Registration|Preparation|Monitoring|Support|Services?|Data|ID)\b)"
)
_NAME_UNLABELLED = re.compile(
    r"(?:\b[Pp]atient|\bPt\.?)\s+" + r"(?P<v>" + _NOT_NAMES + _CAP + r"\s+" + _NOT_NAMES + _CAP + r")\b"
)
_NAME_PN = re.compile(r"\b[A-Z][A-Za-z'\-]+\^[A-Z][A-Za-z'\-]*(?:\^(?:[A-Za-z'.\-]*[A-Za-z'])?)*")

# (pattern, kind, priority, value group or None for the whole match)
_RULES: list[tuple[re.Pattern[str], str, int, str | None]] = [
    (_EMAIL, "email", 10, None),
    (_URL, "url", 10, None),
    (_SSN_LABELLED, "ssn", 9, "v"),
    (_LABEL_ID, "mrn", 9, "v"),
    (_SSN, "ssn", 8, None),
    (_PHONE_LABELLED, "phone", 8, "v"),
    (_PHONE, "phone", 7, None),
    (_PHONE_INTL, "phone", 7, None),
    (_NAME_PN, "name", 6, None),
    (_NAME_LABELLED, "name", 6, "v"),
    (_NAME_HONORIFIC, "name", 6, "v"),
    (_NAME_UNLABELLED, "name", 5, "v"),
    (_ADDRESS, "address", 5, None),
    (_UID, "uid", 5, None),
    (_DIGIT_RUN, "mrn", 3, None),
]


# --------------------------------------------------------------------------- names from headers


def name_variants(names: Iterable[str]) -> list[str]:
    """Spellings of the given person names to look for, longest first.

    A DICOM PN value ``"DOE^JOHN^Q"`` (family^given^middle^prefix^suffix) yields ``"DOE^JOHN^Q"``,
    ``"John Doe"``, ``"Doe, John"``, ``"Doe John"``, ``"John Q Doe"``, ``"J. Doe"`` and the single parts
    ``"John"`` and ``"Doe"``; a plain ``"John Doe"`` yields itself, ``"Doe, John"`` and its parts.
    Parts shorter than two letters are not used on their own.
    """
    out: set[str] = set()
    for raw in names:
        raw = (raw or "").strip()
        if not raw:
            continue
        if "^" in raw:
            parts = [p.strip() for p in raw.split("^")]
            family, given = parts[0], parts[1] if len(parts) > 1 else ""
            middle = parts[2] if len(parts) > 2 else ""
            out.add(raw.rstrip("^"))
        elif "," in raw:
            family, _, given = (p.strip() for p in raw.partition(","))
            middle = ""
        else:
            words = raw.split()
            family, given, middle = (words[-1], " ".join(words[:-1]), "") if len(words) > 1 else (raw, "", "")
        family, given, middle = (x.title() if x.isupper() or x.islower() else x for x in (family, given, middle))
        if family and given:
            out.update({f"{given} {family}", f"{family}, {given}", f"{family} {given}", f"{given[0]}. {family}"})
            if middle:
                out.update({f"{given} {middle} {family}", f"{given} {middle[0]}. {family}"})
        for part in (family, given, middle, *given.split()):
            if len(part) >= 2:
                out.add(part)
    return sorted(out, key=lambda s: (-len(s), s))


def _name_spans(text: str, names: Iterable[str]) -> list[tuple[int, int, str, int]]:
    found = []
    for variant in name_variants(names):
        single = " " not in variant and "^" not in variant and "," not in variant
        # A lone given or family name must be capitalised in the text ("Mr White" yes, "white matter" no).
        flags = 0 if single else re.IGNORECASE
        body = re.escape(variant)
        if single:
            body = f"(?:{re.escape(variant)}|{re.escape(variant.upper())})"
        for m in re.finditer(r"(?<![\w])" + body + r"(?![\w])", text, flags):
            found.append((m.start(), m.end(), "name", 7 if not single else 6))
    return found


# --------------------------------------------------------------------------- public API


def _candidates(text: str, names: Iterable[str]) -> list[tuple[int, int, str, int]]:
    cands: list[tuple[int, int, str, int]] = []
    for pattern, form in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if _parse_date(m, form) is not None:
                cands.append((m.start(), m.end(), "date", 6 if form not in ("my", "mym") else 4))
    for pattern, kind, prio, group in _RULES:
        for m in pattern.finditer(text):
            s, e = (m.start(group), m.end(group)) if group else (m.start(), m.end())
            if e > s:
                cands.append((s, e, kind, prio))
    for m in _AGE_OVER_89.finditer(text):
        g = "v" if m.group("v") else "w"
        cands.append((m.start(g), m.end(g), "age", 5))
    cands.extend(_name_spans(text, names))
    return cands


def find_phi(text: str, *, names: Iterable[str] = ()) -> list[PhiSpan]:
    """Find PHI in ``text``; ``names`` are person names known to belong to the record (e.g. PatientName).

    Returns non-overlapping spans sorted by ``start``. Overlaps are resolved by priority, then length.
    """
    if not text:
        return []
    cands = _candidates(text, list(names))
    cands.sort(key=lambda c: (-c[3], -(c[1] - c[0]), c[0]))
    taken: list[tuple[int, int]] = []
    spans: list[PhiSpan] = []
    for s, e, kind, _prio in cands:
        if any(s < te and ts < e for ts, te in taken):
            continue
        taken.append((s, e))
        spans.append(PhiSpan(s, e, kind))
    return sorted(spans, key=lambda sp: sp.start)


def scrub(text: str, *, names: Iterable[str] = (), date_shift_days: int | None = None) -> str:
    """Replace every PHI span with a ``[KIND]`` tag; dates are shifted (same format) when ``date_shift_days``
    is given, else replaced by ``[DATE]``."""
    out = text
    for span in reversed(find_phi(text, names=names)):
        piece = text[span.start : span.end]
        rep = f"[{span.kind.upper()}]"
        if span.kind == "date" and date_shift_days is not None:
            rep = shift_date_text(piece, date_shift_days) or rep
        out = out[: span.start] + rep + out[span.end :]
    return out


def has_direct_identifiers(text: str, *, names: Iterable[str] = ()) -> bool:
    """True when ``text`` holds a direct identifier (:data:`DIRECT_KINDS`); dates and URLs do not count."""
    return any(span.kind in DIRECT_KINDS for span in find_phi(text, names=names))
