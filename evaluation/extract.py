"""Answer extraction in MedEvalKit's style: unwrap, then yes/no, option letter or normalised text.

Order of steps for every response (:func:`unwrap`): drop ``<think>…</think>``, take ``\\boxed{…}`` or
``<answer>…</answer>`` when present, then the text after the last "answer is" / "answer:" / "final
answer" marker. Then, by question kind:

- yes/no (:func:`extract_yes_no`): the leading word if it is yes/no, else the only one of the two
  words present (whole words: MedEvalKit's substring test reads "normal" and "not" as "no").
- multiple choice (:func:`extract_choice`): rules first (a bare letter, "(B)", "B.", "B: text",
  an option's exact text, the only option text or letter mentioned), then a fuzzy fallback
  (the most similar option, as MedEvalKit does). Refusals never fall back: they are wrong.
- closed without options and open answers (:func:`normalize`): lower case, whitespace collapsed,
  surrounding punctuation removed.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_MARKERS = ("final answer is", "final answer:", "final answer", "answer is", "answer:", "答案:", "答案：")
_REFUSALS = re.compile(
    r"\b(i\s*(?:am|'m)\s*(?:sorry|unable|not able)|i\s*(?:cannot|can't|can not)|unable to (?:determine|answer|"
    r"provide|assess|see)|cannot (?:be )?determined?|not possible to (?:determine|tell|say)|as an ai|"
    r"i (?:do not|don't) (?:know|have enough))",
    re.I,
)
_YES = {"yes", "是", "true", "y"}
_NO = {"no", "否", "false", "n"}
_STRIP = " \t\r\n.,;:!?\"'`*()[]{}。，；：！？"


def boxed_content(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` (balanced braces), or ``None``."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def unwrap(response: str) -> str:
    """The answer part of a response (see module docstring for the order of steps)."""
    text = _THINK.sub(" ", response or "")
    boxed = boxed_content(text)
    if boxed is not None:
        text = boxed
    else:
        tags = _ANSWER_TAG.findall(text)
        if tags:
            text = tags[-1]
    low = text.lower()
    for marker in _MARKERS:
        pos = low.rfind(marker)
        if pos >= 0 and low[pos + len(marker) :].strip(_STRIP):
            text = text[pos + len(marker) :].lstrip(" \t:：-")
            low = text.lower()
    return text.strip()


def normalize(text: str) -> str:
    """Lower case, NFKC, whitespace collapsed, surrounding punctuation removed."""
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = re.sub(r"\s+", " ", t).strip(_STRIP).strip()
    return t


def is_refusal(response: str) -> bool:
    """True when the response declines to answer ("I cannot determine…", "I'm sorry…")."""
    return bool(_REFUSALS.search(response or ""))


def is_yes_no(answer: str | None) -> bool:
    """True for answers MedEvalKit treats as yes/no judgements."""
    return normalize(answer or "") in {"yes", "no", "是", "否"}


def canonical_yes_no(answer: str) -> str | None:
    a = normalize(answer)
    if a in _YES:
        return "yes"
    if a in _NO:
        return "no"
    return None


def extract_yes_no(response: str) -> str | None:
    """``"yes"``, ``"no"`` or ``None`` (both, neither, or a refusal)."""
    text = normalize(unwrap(response))
    if not text or is_refusal(text):
        return None
    # Chinese answers (SLAKE zh): 否 / 不 mean no, 是 alone means yes.
    if re.search(r"[\u4e00-\u9fff]", text):
        if "否" in text or "不" in text:
            return "no"
        if "是" in text:
            return "yes"
    words = re.findall(r"[a-z]+", text)
    if not words:
        return None
    if words[0] in ("yes", "no"):
        return words[0]
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes != has_no:
        return "yes" if has_yes else "no"
    return None


@dataclass(frozen=True)
class Choice:
    """Which option a response picked (``index`` is ``None`` when nothing was picked) and how."""

    index: int | None
    method: str  # letter | text | contains | letter-in-text | fuzzy | refusal | empty


_LEADING_LETTER = re.compile(r"^\s*(?:option\s*)?\(?([A-Z])\)?(?:\s*[.:)\]]|\s*$|\s+)")
_LETTER_MENTION = re.compile(r"(?:\(([A-Z])\)|\boption\s+([A-Z])\b|\b([A-Z])[.:)](?:\s|$))")


def option_letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def strip_option_label(option: str) -> str:
    """``"A: Axial"`` / ``"(A) Axial"`` / ``"A. Axial"`` → ``"Axial"`` (PMC-VQA and others prefix letters)."""
    m = re.match(r"^\s*\(?[A-Z]\)?\s*[.:)]\s*(.*)$", option, re.S)
    return m.group(1).strip() if m else option.strip()


def extract_choice(response: str, options: list[str]) -> Choice:
    """Which of ``options`` (texts without letters, shown as A, B, …) the response picked."""
    letters = option_letters(len(options))
    raw = unwrap(response)
    text = raw.strip()
    if not text:
        return Choice(None, "empty")
    if is_refusal(text):
        return Choice(None, "refusal")
    norm_opts = [normalize(o) for o in options]
    norm = normalize(text)
    # 1. a leading letter in upper case ("B", "(B)", "B.", "B: Axial"), or a bare lower-case letter.
    m = _LEADING_LETTER.match(text)
    if m and m.group(1) in letters:
        return Choice(letters.index(m.group(1)), "letter")
    if len(norm) == 1 and norm.upper() in letters:
        return Choice(letters.index(norm.upper()), "letter")
    # 2. the exact text of an option.
    if norm in norm_opts:
        return Choice(norm_opts.index(norm), "text")
    # 3. exactly one option's text inside the response (longest texts first, so "no mass" beats "mass").
    contained = [i for i, o in enumerate(norm_opts) if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", norm)]
    contained = [i for i in contained if not any(j != i and norm_opts[i] in norm_opts[j] for j in contained)]
    if len(contained) == 1:
        return Choice(contained[0], "contains")
    # 4. exactly one letter mentioned as "(B)", "option B" or "B."
    mentioned = {g for m in _LETTER_MENTION.finditer(text) for g in m.groups() if g and g in letters}
    if len(mentioned) == 1:
        return Choice(letters.index(mentioned.pop()), "letter-in-text")
    # 5. fuzzy fallback: the most similar option text.
    ratios = [difflib.SequenceMatcher(None, norm, o).ratio() for o in norm_opts]
    best = max(range(len(options)), key=lambda i: ratios[i])
    return Choice(best, "fuzzy")
