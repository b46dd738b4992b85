"""Prompts in MedEvalKit's style, so scores are comparable with numbers published with it.

The instruction sentences follow MedEvalKit's ``question_formats`` (English and Chinese; "reasoning"
variants ask for the answer inside ``\\boxed{}``). The question text itself is never rewritten.
"""

from __future__ import annotations

from evaluation.extract import option_letters

_INSTRUCTIONS = {
    ("judgement", "en", False): "Please output 'yes' or 'no'(no extra output).",
    ("judgement", "en", True): 'Please output "yes" or "no" and put the answer in one "\\boxed{}".',
    ("judgement", "zh", False): "请输出'是'或'否'(不要有任何其它输出)。",
    ("judgement", "zh", True): "请输出'是'或'否'，并将答案放在一个'\\boxed{}'中。",
    ("closed", "en", False): "Answer the question using a single word or phrase.",
    ("closed", "en", True): 'Answer the question using a single word or phrase and put the answer in one "\\boxed{}".',
    ("closed", "zh", False): "请用一个单词或者短语回答该问题。",
    ("closed", "zh", True): "请用一个单词或者短语回答该问题，并将答案放在一个'\\boxed{}'中。",
    ("open", "en", False): "Please answer the question concisely.",
    ("open", "en", True): 'Please answer the question concisely and put the answer in one "\\boxed{}".',
    ("open", "zh", False): "请简要回答该问题。",
    ("open", "zh", True): "请简要回答该问题，并将答案放在一个'\\boxed{}'中。",
    ("choice", "en", False): "Answer with the option's letter from the given choices directly.",
    (
        "choice",
        "en",
        True,
    ): 'Answer with the option\'s letter from the given choices and put the letter in one "\\boxed{}".',
    ("choice", "zh", False): "请直接使用给定选项中的选项字母来回答该问题。",
    ("choice", "zh", True): '请直接使用给定选项中的选项字母来回答该问题,并将答案包裹在"\\boxed{}"里',
}


def _instruction(kind: str, lang: str, reasoning: bool) -> str:
    return _INSTRUCTIONS[(kind, "zh" if lang == "zh" else "en", reasoning)]


def judgement_prompt(question: str, *, lang: str = "en", reasoning: bool = False) -> str:
    """Yes/no question."""
    return f"{question}\n{_instruction('judgement', lang, reasoning)}"


def closed_prompt(question: str, *, lang: str = "en", reasoning: bool = False) -> str:
    """Closed question without listed options (SLAKE's non-yes/no closed questions)."""
    return f"{question}\n{_instruction('closed', lang, reasoning)}"


def open_prompt(question: str, *, lang: str = "en", reasoning: bool = False) -> str:
    """Open question."""
    return f"{question}\n{_instruction('open', lang, reasoning)}"


def choice_prompt(question: str, options: list[str], *, lang: str = "en", reasoning: bool = False) -> str:
    """Multiple choice: options listed as ``A. text`` lines, answer with the letter."""
    lines = "\n".join(f"{letter}. {text}" for letter, text in zip(option_letters(len(options)), options, strict=True))
    head = "问题" if lang == "zh" else "Question"
    opts = "选项" if lang == "zh" else "Options"
    return f"{head}: {question}\n{opts}: \n{lines}\n{_instruction('choice', lang, reasoning)}"


def mmmu_prompt(question: str, options: list[str] | None, *, reasoning: bool = False) -> str:
    """MMMU's own layout: ``(A) text`` lines after a blank line."""
    if options:
        lines = "\n".join(
            f"({letter}) {text}" for letter, text in zip(option_letters(len(options)), options, strict=True)
        )
        return f"{question}\n\n{lines}\n\n{_instruction('choice', 'en', reasoning)}"
    return f"{question}\n\n{_instruction('closed', 'en', reasoning)}"
