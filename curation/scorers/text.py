"""Text quality: length, repetition, truncation, answer present, character/language checks."""

from __future__ import annotations

import re

from curation.scorers.base import SampleContext, Score, scorer

_WORD = re.compile(r"\w+", re.UNICODE)
_MOJIBAKE = re.compile(r"Ã[\x80-\xbf¡-ÿ]|â€|Â[\xa0-\xbf]|\ufffd")
_DANGLING = {"and", "or", "the", "a", "an", "of", "with", "to", "in", "on", "for", "but", "is", "are", "was", "which"}


@scorer("text.length", "text")
def length(ctx: SampleContext, *, min_words: int = 3, max_words: int = 4000) -> Score:
    """Word count of the whole text: 0 when empty (``empty_text`` gate), less below/above the limits."""
    n = len(_WORD.findall(ctx.all_text))
    if n == 0:
        return Score(0.0, "text is empty", {"empty_text": "text is empty"})
    if n < min_words:
        return Score(n / min_words, f"{n} word(s) < {min_words}")
    if n > max_words:
        return Score(max_words / n, f"{n} words > {max_words}")
    return Score(1.0, f"{n} words")


@scorer("text.repetition", "text")
def repetition(ctx: SampleContext, *, max_repeated: float = 0.2, max_char_run: int = 20) -> Score:
    """Share of repeated word 3-grams (degenerate generated text loops) and long runs of one character."""
    words = [w.lower() for w in _WORD.findall(ctx.all_text)]
    if re.search(rf"(.)\1{{{max_char_run},}}", ctx.all_text):
        return Score(0.2, f"a character repeated more than {max_char_run} times")
    grams = list(zip(words, words[1:], words[2:]))
    if len(grams) < 4:
        return Score(1.0, "too short to repeat")
    dup = 1 - len(set(grams)) / len(grams)
    s = 1.0 if dup <= max_repeated else max(0.0, 1 - (dup - max_repeated) * 2)
    return Score(s, f"{dup:.0%} repeated 3-grams")


@scorer("text.truncation", "text")
def truncation(ctx: SampleContext, *, min_words: int = 8) -> Score:
    """Does the caption / answer end like a finished sentence? Short answers ("yes", "left lung") pass."""
    t = ctx.final_text.strip()
    words = _WORD.findall(t)
    if len(words) < min_words:
        return Score(1.0, "short answer")
    if t.endswith(("...", "…")):
        return Score(0.3, "ends with an ellipsis (truncated?)")
    if t[-1] in ".!?)]\"'”»%":
        return Score(1.0, "complete")
    if words[-1].lower() in _DANGLING:
        return Score(0.2, f"ends on '{words[-1]}' (truncated)")
    if t[-1] in ",;:-(/&":
        return Score(0.4, f"ends on '{t[-1]}' (truncated?)")
    return Score(0.8, "ends without sentence-final punctuation")


@scorer("text.answer", "text")
def answer(ctx: SampleContext) -> Score:
    """A question needs an answer: the last turn is a non-empty assistant turn; closed answers are in options."""
    s = ctx.sample
    if s.messages is None:
        return Score(1.0, "caption (not applicable)")
    last = s.messages[-1]
    if last.role != "assistant" or not last.text():
        msg = "no assistant answer after the question"
        return Score(0.0, msg, {"missing_answer": msg})
    opts = s.meta.options
    if opts and s.meta.answer_type == "closed":
        ans = (s.meta.answer or last.text()).strip().lower().rstrip(".")
        if ans not in {o.strip().lower().rstrip(".") for o in opts}:
            return Score(0.5, "closed answer is not one of the options")
    return Score(1.0, "answer present")


@scorer("text.language", "text")
def language(ctx: SampleContext, *, latin_min: float = 0.0) -> Score:
    """Broken characters (U+FFFD, mojibake, control characters) and, optionally, a minimum Latin share."""
    t = ctx.all_text
    if not t:
        return Score(0.0, "text is empty")
    bad = len(_MOJIBAKE.findall(t)) + sum(1 for ch in t if ord(ch) < 32 and ch not in "\n\t\r")
    frac = bad / len(t)
    s = max(0.0, 1 - frac * 20)
    reason = f"{bad} broken character(s)" if bad else "clean characters"
    if latin_min > 0:
        letters = [ch for ch in t if ch.isalpha()]
        latin = sum(1 for ch in letters if ch.isascii() or "\u00c0" <= ch <= "\u024f") / max(1, len(letters))
        if latin < latin_min:
            s *= latin / latin_min
            reason += f", {latin:.0%} Latin letters < {latin_min:.0%}"
    return Score(s, reason)
