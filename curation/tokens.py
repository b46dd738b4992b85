"""Token-budget check: a sample's expanded length against the final training stage's ``max_length``.

Expanded length = text tokens in the chat template (a local tokenizer when the recipe names one, else a
conservative estimate: 1.3 tokens per word plus one per punctuation mark, plus a fixed template cost per
message) + visual tokens of every image from :class:`core.budget.PixelBudget`. An over-long sample gets a
lower per-image ``max_pixels`` (the training planner honours it) or is dropped; image tokens are never
truncated.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from core.budget import BudgetError, PixelBudget
from core.manifest import ImageRef, Sample
from curation.recipe import Budget

_WORD = re.compile(r"\w+")
_PUNCT = re.compile(r"[^\w\s]")


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def count_text_tokens(text: str, cfg: Budget) -> int:
    if cfg.tokenizer:
        return len(_tokenizer(cfg.tokenizer)(text, add_special_tokens=False)["input_ids"])
    return math.ceil(1.3 * len(_WORD.findall(text)) + len(_PUNCT.findall(text.replace("<image>", ""))))


def sample_text_tokens(sample: Sample, cfg: Budget) -> int:
    """Text tokens of the sample in the chat template (image slots excluded)."""
    if sample.text is not None:
        return count_text_tokens(sample.text, cfg) + cfg.template_tokens_per_message
    return sum(count_text_tokens(m.text(), cfg) + cfg.template_tokens_per_message for m in sample.messages or [])


def images_per_slot(ref: ImageRef) -> int:
    """Model images one slot expands to: listed frames, ``uniform:N`` or 1."""
    frames = ref.render.frames if ref.render else None
    if isinstance(frames, list):
        return max(1, len(frames))
    if isinstance(frames, str) and frames.startswith("uniform:"):
        return int(frames.split(":")[1])
    return 1


def visual_tokens(sample: Sample, budget: PixelBudget, max_pixels: int | None = None) -> int:
    """Visual tokens of all images, each under its own ``max_pixels`` (or ``max_pixels`` when given)."""
    total = 0
    for ref in sample.images:
        if not ref.width or not ref.height:
            continue
        limit = min(x for x in (budget.max_pixels, ref.max_pixels, max_pixels) if x)
        b = budget.with_limits(max_pixels=limit, min_pixels=min(budget.min_pixels, limit))
        total += b.visual_tokens(ref.width, ref.height) * images_per_slot(ref)
    return total


def check_budget(sample: Sample, cfg: Budget) -> tuple[int, int, int | None, str | None]:
    """``(text_tokens, visual_tokens, new_max_pixels, problem)``.

    ``new_max_pixels`` is set when the sample fits only with fewer pixels; ``problem`` is set when it
    cannot fit (drop). Sizes unknown to the manifest count zero visual tokens.
    """
    budget = PixelBudget(cfg.min_pixels, cfg.max_pixels, cfg.patch_size, cfg.merge_size)
    text = sample_text_tokens(sample, cfg)
    try:
        vis = visual_tokens(sample, budget)
    except BudgetError as e:
        return text, 0, None, f"image cannot be sized for the model: {e}"
    total = text + vis
    if total <= cfg.max_length:
        return text, vis, None, None
    over = f"{total} tokens > max_length {cfg.max_length}"
    if cfg.over_length == "drop" or not sample.images:
        return text, vis, None, over
    lo = budget.factor**2
    hi = budget.max_pixels
    if text + visual_tokens(sample, budget, lo) > cfg.max_length:
        return text, vis, None, over + " even at the smallest image size"
    while hi - lo > budget.factor**2:  # largest max_pixels that fits (tokens grow with pixels)
        mid = (lo + hi) // 2
        if text + visual_tokens(sample, budget, mid) <= cfg.max_length:
            lo = mid
        else:
            hi = mid
    return text, visual_tokens(sample, budget, lo), lo, None
