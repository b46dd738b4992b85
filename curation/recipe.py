"""The curation recipe: one YAML file (``kind: curation``, ``schema_version: 1``) validated at load.

It says which scorers run with which parameters, how the five dimensions are weighted, which hard gates
drop (or repair) a sample, how samples are deduplicated, the token budget of the final training stage,
how splits are assigned, and how many samples to keep. See ``curation/recipes/default.yaml`` for a
commented example and ``docs/curation.md`` for the reference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RECIPE_KIND = "curation"
RECIPE_SCHEMA_VERSION = 1
DIMENSIONS = ("visual", "text", "consistency", "medical", "safety")


class RecipeError(ValueError):
    """A recipe file is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScorerSpec(_Strict):
    """One deterministic scorer: its registered name (``visual.sharpness`` …), weight and parameters."""

    name: str
    weight: float = Field(default=1.0, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from curation.scorers import SCORERS  # late: the registry imports this module's constants

        if v not in SCORERS:
            raise ValueError(f"unknown scorer {v!r}; known: {', '.join(sorted(SCORERS))}")
        return v


class Gates(_Strict):
    """Hard rules applied before the threshold. Actions: ``drop`` removes the sample, ``flag`` only records."""

    undecodable_image: Literal["drop", "flag"] = "drop"
    empty_text: Literal["drop", "flag"] = "drop"
    missing_answer: Literal["drop", "flag"] = "drop"
    direct_identifiers: Literal["drop", "scrub"] = "drop"
    dates: Literal["shift", "scrub", "keep", "drop"] = "shift"
    date_shift_max_days: int = Field(default=365, ge=1)
    header_phi: Literal["drop", "flag"] = "flag"
    burned_in_annotation: Literal["drop", "flag"] = "drop"
    burned_in_risk: Literal["drop", "flag"] = "flag"
    licence: Literal["drop", "flag"] = "flag"
    allowed_licences: list[str] = Field(default_factory=list)
    min_dimension_score: dict[str, float] = Field(default_factory=dict)

    @field_validator("min_dimension_score")
    @classmethod
    def _dims(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if k not in DIMENSIONS:
                raise ValueError(f"unknown dimension {k!r}; dimensions are {', '.join(DIMENSIONS)}")
            if not 0 <= x <= 1:
                raise ValueError(f"min_dimension_score.{k} must be in [0, 1]")
        return v


class Dedup(_Strict):
    """Duplicates: exact (content hashes) and near (image pHash within a Hamming distance, text MinHash)."""

    enabled: bool = True
    mode: Literal["image_and_text", "image", "text"] = "image_and_text"
    phash_distance: int = Field(default=4, ge=0, le=64)
    text_jaccard: float = Field(default=0.9, gt=0, le=1)
    minhash_perm: int = Field(default=64, ge=16, le=512)


class Budget(_Strict):
    """The final training stage's sequence limit and pixel budget (as in its stage config)."""

    enabled: bool = True
    max_length: int = Field(default=4096, ge=16)
    min_pixels: int = Field(default=56 * 56, ge=1)
    max_pixels: int = Field(default=28 * 28 * 1280, ge=1)
    patch_size: int = Field(default=14, ge=1)
    merge_size: int = Field(default=2, ge=1)
    over_length: Literal["reduce_pixels", "drop"] = "reduce_pixels"
    tokenizer: str | None = None  # a local tokenizer folder; else a conservative estimate
    template_tokens_per_message: int = Field(default=6, ge=0)

    @model_validator(mode="after")
    def _limits(self) -> Budget:
        if self.min_pixels > self.max_pixels:
            raise ValueError("budget.min_pixels is larger than budget.max_pixels")
        return self


class Splits(_Strict):
    """Splits by a salted hash of the patient (else study, else image) identity."""

    enabled: bool = True
    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.9, "val": 0.05, "test": 0.05})
    salt: str | None = None
    salt_env: str = "INFIMED_SPLIT_SALT"
    keep_existing: bool = True

    @field_validator("fractions")
    @classmethod
    def _sum(cls, v: dict[str, float]) -> dict[str, float]:
        bad = set(v) - {"train", "val", "test"}
        if bad:
            raise ValueError(f"unknown split(s) {sorted(bad)}; use train, val, test")
        if any(x < 0 for x in v.values()) or abs(sum(v.values()) - 1) > 1e-6:
            raise ValueError(f"split fractions must be ≥ 0 and sum to 1, got {v}")
        return v


class Judge(_Strict):
    """A VLM judge reached through an OpenAI-compatible endpoint (``--base-url``/``--judge-model`` enable it)."""

    enabled: bool = False
    model: str | None = None
    dimensions: list[str] = Field(default_factory=lambda: list(DIMENSIONS))
    weight: float = Field(default=0.5, ge=0, le=1)
    concurrency: int = Field(default=4, ge=1)
    max_retries: int = Field(default=2, ge=0)
    timeout: float = Field(default=60, gt=0)
    max_tokens: int = Field(default=256, ge=16)
    rubric: str | None = None

    @field_validator("dimensions")
    @classmethod
    def _dims(cls, v: list[str]) -> list[str]:
        for k in v:
            if k not in DIMENSIONS:
                raise ValueError(f"unknown dimension {k!r}; dimensions are {', '.join(DIMENSIONS)}")
        return v


class Keep(_Strict):
    """Which gated survivors to keep: overall score ≥ ``threshold``, and/or the top ``fraction``."""

    threshold: float | None = Field(default=0.5, ge=0, le=1)
    fraction: float | None = Field(default=None, gt=0, le=1)


class Run(_Strict):
    shard_size: int = Field(default=256, ge=1)
    workers: int = Field(default=1, ge=1)
    engine: Literal["local", "ray"] = "local"
    thumbnails: int = Field(default=12, ge=0)


class Recipe(_Strict):
    """A whole curation recipe."""

    kind: Literal["curation"]
    schema_version: int
    name: str = "curation"
    description: str | None = None
    weights: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(DIMENSIONS, 1.0))
    scorers: list[ScorerSpec]
    gates: Gates = Field(default_factory=Gates)
    dedup: Dedup = Field(default_factory=Dedup)
    budget: Budget = Field(default_factory=Budget)
    splits: Splits = Field(default_factory=Splits)
    judge: Judge = Field(default_factory=Judge)
    keep: Keep = Field(default_factory=Keep)
    run: Run = Field(default_factory=Run)

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != RECIPE_SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is not supported (this code reads {RECIPE_SCHEMA_VERSION})")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        for k, w in v.items():
            if k not in DIMENSIONS:
                raise ValueError(f"unknown dimension {k!r}; dimensions are {', '.join(DIMENSIONS)}")
            if w < 0:
                raise ValueError(f"weight of {k} must be ≥ 0")
        if not any(v.values()):
            raise ValueError("at least one dimension needs a weight > 0")
        return v

    @model_validator(mode="after")
    def _unique_scorers(self) -> Recipe:
        names = [s.name for s in self.scorers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"scorer(s) listed twice: {sorted(dup)}")
        if not self.scorers:
            raise ValueError("'scorers' is empty")
        return self

    def fingerprint(self) -> str:
        """sha256 of the settings the per-shard results depend on (resume refuses a changed recipe).

        Weights, dedup, judge and keep settings are applied after scoring, so changing them reuses the shards.
        """
        blob = json.dumps(
            {
                "scorers": [s.model_dump() for s in self.scorers],
                "gates": self.gates.model_dump(),
                "dedup_perm": self.dedup.minhash_perm,
                "shard_size": self.run.shard_size,
                "budget": self.budget.model_dump(),
                "splits": self.splits.model_dump(exclude={"salt"}),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()


def parse_recipe(data: Any, *, source: str = "<recipe>") -> Recipe:
    """Validate an already-parsed recipe mapping; raises :class:`RecipeError` naming ``source`` and fields."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping, got {type(data).__name__}")
    if data.get("kind") != RECIPE_KIND:
        raise RecipeError(f"{source}: 'kind' must be '{RECIPE_KIND}', got {data.get('kind')!r}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors()[:5]:
            loc = ".".join(str(x) for x in err["loc"]) or "(recipe)"
            lines.append(f"  {loc}: {err['msg']}")
        more = "" if e.error_count() <= 5 else f"\n  (+{e.error_count() - 5} more)"
        raise RecipeError(f"{source}: invalid curation recipe:\n" + "\n".join(lines) + more) from e


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecipeError(f"{path}: cannot read recipe: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from e
    return parse_recipe(data, source=str(path))


def default_recipe_path() -> Path:
    return Path(__file__).parent / "recipes" / "default.yaml"
