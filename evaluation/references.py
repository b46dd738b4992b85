"""Published reference scores shown beside a user's run. Every row carries its source and table.

Only numbers with a citable source belong here. The InfiMed-Foundation paper (arXiv 2509.22261) table
was not reachable when this file was written, so it has no rows yet; the rows below come from the
model card of InfiMed-SFT-3B by the same team (InfiX-ai), "Model Comparison Table", which states:
"We evaluated our model on MedEvalKit, using Qwen2.5-72B as the judge model." Values are accuracy in
percent. Our harness scores open answers by exact match unless ``--judge-model`` is given, so compare
judged runs with these rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ReferenceRow:
    model: str
    size: str
    values: dict[str, float]  # benchmark name (our spelling) -> accuracy in percent
    source: str
    table: str
    note: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


_CARD = "https://huggingface.co/InfiX-ai/InfiMed-SFT-3B (README, section Evaluation Results)"
_TABLE = "Model Comparison Table (MedEvalKit, judge Qwen2.5-72B)"
_COLS = ("mmmu-med", "vqa-rad", "slake", "pathvqa", "pmc-vqa", "omnimedvqa", "medxpertqa")


def _row(model: str, size: str, *values: float) -> ReferenceRow:
    assert len(values) == len(_COLS)
    return ReferenceRow(model, size, dict(zip(_COLS, values, strict=True)), _CARD, _TABLE)


REFERENCE_ROWS: tuple[ReferenceRow, ...] = (
    _row("Qwen2.5VL-3B", "3B", 51.30, 56.80, 63.20, 37.10, 50.60, 64.50, 20.70),
    _row("Qwen2.5VL-7B", "7B", 54.00, 64.96, 67.62, 44.60, 51.25, 63.47, 21.70),
    _row("MedGemma-4B-IT", "4B", 43.70, 72.50, 76.40, 48.80, 49.90, 69.80, 22.30),
    _row("HuatuoGPT-V-7B", "7B", 47.30, 67.00, 67.80, 48.00, 53.30, 74.20, 21.60),
    _row("Lingshu-7B", "7B", 54.00, 67.90, 83.10, 61.90, 56.30, 82.90, 26.70),
    _row("InfiMed-SFT-3B", "3B", 54.67, 58.09, 82.00, 60.59, 53.22, 67.01, 23.55),
    _row("InfiMed-RL-3B", "3B", 55.33, 60.53, 82.38, 61.97, 58.74, 71.71, 23.60),
)
