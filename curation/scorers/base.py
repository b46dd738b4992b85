"""What every scorer sees (:class:`SampleContext`) and returns (:class:`Score`), and the scorer registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.manifest import Sample
from curation.features import ImageInfo


@dataclass
class Score:
    """A score in [0, 1] with the reason for it; ``flags`` name hard gates this sample trips (gate → reason)."""

    score: float
    reason: str
    flags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.score = float(min(1.0, max(0.0, self.score)))


@dataclass
class SampleContext:
    """One sample with its decoded images and the text views scorers use."""

    sample: Sample
    images: list[ImageInfo]
    allowed_licences: list[str] = field(default_factory=list)

    @property
    def all_text(self) -> str:
        """Every message (or the caption) joined, without image markers."""
        s = self.sample
        if s.text is not None:
            return s.text.replace("<image>", " ").strip()
        return "\n".join(m.text() for m in s.messages or []).strip()

    @property
    def question(self) -> str:
        s = self.sample
        if s.messages is None:
            return ""
        return "\n".join(m.text() for m in s.messages if m.role == "user").strip()

    @property
    def final_text(self) -> str:
        """The answer (last assistant turn) of a conversation, or the caption."""
        s = self.sample
        if s.text is not None:
            return s.text.replace("<image>", " ").strip()
        msgs = s.messages or []
        return msgs[-1].text() if msgs and msgs[-1].role == "assistant" else ""

    @property
    def person_names(self) -> list[str]:
        names: list[str] = []
        for im in self.images:
            names.extend(im.person_names)
        extra = self.sample.meta.model_extra or {}
        if isinstance(extra.get("patient_name"), str):
            names.append(extra["patient_name"])
        return names

    @property
    def header_modality(self) -> str | None:
        return next((im.modality for im in self.images if im.modality), None)

    @property
    def header_body_part(self) -> str | None:
        return next((im.body_part for im in self.images if im.body_part), None)


ScorerFn = Callable[..., Score]
SCORERS: dict[str, tuple[str, ScorerFn]] = {}


def scorer(name: str, dimension: str) -> Callable[[ScorerFn], ScorerFn]:
    """Register ``fn(ctx, **params) -> Score`` under ``name`` for ``dimension``."""

    def deco(fn: ScorerFn) -> ScorerFn:
        SCORERS[name] = (dimension, fn)
        return fn

    return deco


def run_scorer(name: str, ctx: SampleContext, params: dict[str, Any]) -> Score:
    """Run one registered scorer; a ``TypeError`` from unknown params names the scorer."""
    _dim, fn = SCORERS[name]
    try:
        return fn(ctx, **params)
    except TypeError as e:
        raise ValueError(f"scorer {name}: bad parameters {sorted(params)}: {e}") from e
