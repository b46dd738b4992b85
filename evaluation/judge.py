"""Optional LLM judge for open answers, through any OpenAI-compatible endpoint (off by default).

The judge sees the question, the reference answer and the model's answer, and replies
``<judge>0</judge>`` (correct: same meaning) or ``<judge>1</judge>`` — MedEvalKit's convention. A reply
that cannot be parsed, or a failed request, leaves the item to exact match (``judge`` is ``None``).
Closed questions are always judged by rules, so each question is counted exactly once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.client import ChatRequest, OpenAIClient

log = logging.getLogger(__name__)

_JUDGE_TAG = re.compile(r"<judge>\s*([01])\s*</judge>", re.I)

JUDGE_PROMPT = """\
Decide whether the user's answer to a medical question is correct, given the reference answer. \
It is correct when it means the same as the reference answer (synonyms, a more specific or equivalent \
phrasing, another valid reading of the reference); it is incorrect when it contradicts it, misses it \
or refuses to answer.

Question: {question}

Reference answer: {answer}

User's answer: {response}

Reply in exactly this format (0 = correct, 1 = incorrect):
<think>one short sentence</think>
<judge>0 or 1</judge>"""


@dataclass
class Judge:
    """A judge model behind ``client`` (its own endpoint, cache and concurrency)."""

    client: OpenAIClient
    model: str
    max_tokens: int = 256

    def messages(self, question: str, answer: str, response: str) -> list[dict[str, Any]]:
        prompt = JUDGE_PROMPT.format(question=question, answer=answer, response=response)
        return [{"role": "user", "content": prompt}]

    def judge_many(self, items: Iterable[tuple[str, str, str]], *, progress: str | None = None) -> list[bool | None]:
        """Verdicts for ``(question, reference, response)`` triples, in order (``None``: no verdict)."""
        triples = list(items)
        requests = [
            ChatRequest(self.messages(q, a, r), self.model, {"temperature": 0, "max_tokens": self.max_tokens})
            for q, a, r in triples
        ]
        out: list[bool | None] = [None] * len(triples)
        failures = 0
        for i, result in self.client.map_chat(requests, progress=progress):
            if isinstance(result, Exception):
                failures += 1
                continue
            out[i] = parse_verdict(result.text)
        if failures:
            log.warning("judge: %d of %d requests failed; those items fall back to exact match", failures, len(triples))
        return out


def parse_verdict(text: str) -> bool | None:
    """``True`` for ``<judge>0</judge>``, ``False`` for ``<judge>1</judge>``, ``None`` otherwise."""
    found = _JUDGE_TAG.findall(text or "")
    if not found:
        return None
    return found[-1] == "0"
