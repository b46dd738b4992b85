"""The run configuration both recipes share: a run is a list of :class:`Stage` s.

A stage is data: which manifests (with weights), at which resolution (min/max pixels), into which
token budget (``max_length``), which modules train and how (``frozen`` / ``lora`` / ``full``), with which
learning rates and for how long. ``pretrain`` and ``finetune`` YAML files are :class:`RunConfig` s with
``kind`` set accordingly; the engine never reads YAML keys itself (builders get plain arguments).

Relative paths (manifests, DeepSpeed configs, ``init_from``) are resolved against the YAML file's folder
by :func:`load_run_config`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.manifest import Task

SCHEMA_VERSION = 1
Mode = Literal["frozen", "lora", "full"]
Module = Literal["vision", "projector", "language"]
MODULES: tuple[Module, ...] = ("vision", "projector", "language")


class ConfigError(ValueError):
    """A run configuration is invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSource(_Strict):
    """One manifest of a stage's data mix.

    ``weight`` multiplies the manifest's share of an epoch: 1.0 takes every sample once, 0.5 a
    (seeded) half, 2.0 every sample twice. ``tasks`` / ``split`` filter the manifest's samples.
    """

    manifest: str
    weight: float = Field(default=1.0, gt=0)
    tasks: list[Task] | None = None
    split: Literal["train", "val", "test"] | None = None
    render_policy: Literal["refuse", "redact", "allow"] = "refuse"


class Trainable(_Strict):
    """How each module trains. Defaults: vision frozen, projector and language model fully trained."""

    vision: Mode = "frozen"
    projector: Mode = "full"
    language: Mode = "full"

    @field_validator("projector")
    @classmethod
    def _projector_no_lora(cls, v: Mode) -> Mode:
        if v == "lora":
            raise ValueError("the projector is small: train it 'full' or keep it 'frozen' (LoRA is not offered)")
        return v


class ModuleRates(_Strict):
    """Per-module learning rates; ``None`` falls back to the stage's ``learning_rate``."""

    vision: float | None = Field(default=None, gt=0)
    projector: float | None = Field(default=None, gt=0)
    language: float | None = Field(default=None, gt=0)


class LoraSettings(_Strict):
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class Stage(_Strict):
    """One training stage (one HF Trainer): data mix, resolution, token budget, trainability, schedule."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: list[DataSource] = Field(min_length=1)
    min_pixels: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)
    max_length: int = Field(default=2048, ge=16)
    packing: bool = True
    max_images_per_pack: int | None = Field(default=None, ge=1)
    pad_to_multiple_of: int = Field(default=8, ge=1)
    trainable: Trainable = Field(default_factory=Trainable)
    learning_rate: float = Field(default=1e-4, gt=0)
    module_learning_rates: ModuleRates = Field(default_factory=ModuleRates)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    epochs: float | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=1, ge=1)  # packs per device per micro-step
    gradient_accumulation: int = Field(default=1, ge=1)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0)
    gradient_checkpointing: bool = False
    init_from: str = "previous"  # "base" | "previous" | a model directory
    save_steps: int = Field(default=50, ge=1)
    logging_steps: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Stage:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of 'epochs' or 'steps'")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"stage {self.name!r}: min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        if all(getattr(self.trainable, m) == "frozen" for m in MODULES):
            raise ValueError(f"stage {self.name!r}: every module is frozen, nothing would train")
        return self

    def rate(self, module: Module) -> float:
        """The learning rate of one module (its own, else the stage's)."""
        own = getattr(self.module_learning_rates, module)
        return self.learning_rate if own is None else own


class RunConfig(_Strict):
    """A whole run (one YAML file): model, precision, launcher settings and the list of stages."""

    kind: Literal["pretrain", "finetune"]
    schema_version: int = SCHEMA_VERSION
    model: str  # model directory or hub name (hub names need a local cache: nothing downloads here)
    model_config_file: str | None = None  # config.json for --dry-run when the weights are not local
    output_dir: str = "runs/default"
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    attn_implementation: Literal["auto", "sdpa", "varlen_sdpa", "eager", "flash_attention_2", "flex_attention"] = "auto"
    deepspeed: str | None = None  # a JSON config (training/deepspeed/zero2.json, zero3.json)
    report_to: list[Literal["tensorboard", "none"]] = Field(default_factory=lambda: ["tensorboard"])
    dataloader_workers: int = Field(default=0, ge=0)
    save_total_limit: int | None = Field(default=2, ge=1)
    dry_run_gpus: int = Field(default=1, ge=1)  # world size the --dry-run memory estimate assumes
    gpu_memory_gib: float | None = Field(default=None, gt=0)  # the GPU this recipe targets: --dry-run checks the fit
    stages: list[Stage] = Field(min_length=1)

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is not supported (this code reads {SCHEMA_VERSION})")
        return v

    @model_validator(mode="after")
    def _check_stages(self) -> RunConfig:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        if self.stages[0].init_from == "previous":
            self.stages[0].init_from = "base"
        return self


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: str) -> str:
    """``${VAR}`` / ``${VAR:-default}`` from the environment (lets one recipe serve many machines)."""
    return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)


def _resolve(base: Path, value: str) -> str:
    if "://" in value or value in ("base", "previous"):
        return value
    p = Path(os.path.expanduser(_expand(value)))
    if p.is_absolute():
        return str(p)
    candidate = base / p
    # Hub names ("Qwen/Qwen2.5-VL-3B-Instruct") stay as they are unless such a folder exists.
    return str(candidate) if candidate.exists() or value.startswith(".") or p.suffix else value


def load_run_config(path: str | Path, *, kind: str | None = None) -> RunConfig:
    """Read and validate a run YAML; relative paths are resolved against the file's folder.

    Raises :class:`ConfigError` naming the file (and the field) on any problem.
    """
    path = Path(path)
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if kind is not None and raw.get("kind") != kind:
        raise ConfigError(f"{path}: kind is {raw.get('kind')!r}, expected {kind!r}")
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors()[:4])
        raise ConfigError(f"{path}: invalid {raw.get('kind', 'run')} config: {errs}") from e
    base = path.resolve().parent
    cfg.model = _resolve(base, cfg.model)
    cfg.output_dir = _expand(cfg.output_dir)
    if cfg.model_config_file:
        cfg.model_config_file = _resolve(base, cfg.model_config_file)
    if cfg.deepspeed:
        cfg.deepspeed = _resolve_repo_file(base, cfg.deepspeed)
    for st in cfg.stages:
        for src in st.data:
            src.manifest = _resolve(base, src.manifest)
        if st.init_from not in ("base", "previous"):
            st.init_from = _resolve(base, st.init_from)
    return cfg


def _resolve_repo_file(base: Path, value: str) -> str:
    """DeepSpeed configs may be named relative to the YAML or to the repository (``training/deepspeed/…``)."""
    p = Path(_expand(value))
    if p.is_absolute() or (base / p).exists():
        return str(p if p.is_absolute() else base / p)
    repo = Path(__file__).resolve().parent.parent
    return str(repo / p) if (repo / p).exists() else value
