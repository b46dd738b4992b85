"""``infimed finetune export RUN_DIR --out DIR --mode merged|adapter``: a servable model with a model card.

    infimed finetune export runs/ft --out runs/ft-merged --mode merged     # infimed serve --model runs/ft-merged
    infimed finetune export runs/ft --out runs/ft-lora --mode adapter      # infimed serve --model BASE --lora ft=runs/ft-lora

The story: read the run (its ``run_config.json``; every stage must be finished) → find the *lineage* of
the last stage (the stages it grew from through ``init_from: previous``, back to the base) → for an
adapter, read every lineage stage's LoRA adapter and compare the trained model with the base tensor by
tensor (:func:`training.export.compare_to_base`): the adapter is written only when base + adapters
reproduces the model, i.e. nothing but the language model's LoRA weights changed. Otherwise (a trained
projector, vision LoRA, full fine-tuning, ``modules_to_save``) vLLM would apply the adapter to the
wrong weights, so the merged model is written instead and the reasons are given → the model card.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune import card as model_card
from training.export import (
    ChangeReport,
    ExportError,
    LoraAdapter,
    compare_to_base,
    config_dtype,
    read_adapter,
    resolve_model_dir,
    stack_adapters,
    write_merged,
)
from training.stage import MODULES, RunConfig, Stage

log = logging.getLogger(__name__)

__all__ = ["ExportError", "ExportResult", "adapter_blockers_from_config", "export_run"]


@dataclass
class ExportResult:
    out: Path
    mode: str  # what was written
    requested_mode: str
    base_model: str = "BASE"
    adapter_rank: int | None = None
    refusal: str | None = None  # why an adapter export became a merged one
    reasons: list[str] = field(default_factory=list)
    card: list[Path] = field(default_factory=list)
    changes: ChangeReport | None = None

    def summary(self) -> str:
        what = "merged model" if self.mode == "merged" else "LoRA adapter"
        serve = (
            f"infimed serve --model {self.out}"
            if self.mode == "merged"
            else f"infimed serve --model {self.base_model} --lora NAME={self.out} -- --max-lora-rank "
            f"{_vllm_rank(self.adapter_rank or 8)}"
        )
        return f"wrote {what} to {self.out} (model card: {self.out / model_card.CARD_MD}); serve it: {serve}"


def _vllm_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds ``rank`` (its choices are 8, 16, 32, …)."""
    return max(8, 1 << (rank - 1).bit_length())


# --------------------------------------------------------------------------- the run


def _read_run(run_dir: Path) -> tuple[RunConfig, dict[str, Any]]:
    cfg_path = run_dir / "run_config.json"
    if not cfg_path.is_file():
        raise ExportError(f"{run_dir}: not a training run folder (no run_config.json)")
    try:
        cfg = RunConfig.model_validate(json.loads(cfg_path.read_text()))
    except ValueError as e:
        raise ExportError(f"{cfg_path}: unreadable run configuration ({e})") from e
    for st in cfg.stages:
        if not (run_dir / st.name / "final" / "stage_done.json").is_file():
            raise ExportError(
                f"{run_dir}: stage {st.name!r} has not finished (no {st.name}/final/stage_done.json); "
                "finish the run with `infimed finetune run PIPELINE.yaml --output-dir "
                f"{run_dir} --resume`"
            )
    prov_path = run_dir / "provenance.json"
    if prov_path.is_file():
        provenance = json.loads(prov_path.read_text())
    else:  # a run from before provenance was recorded: hash what is there now, and say so
        from training.provenance import run_provenance

        provenance = run_provenance(cfg) | {"note": "recorded at export time, not at training time"}
    return cfg, provenance


def lineage(cfg: RunConfig) -> tuple[list[Stage], str]:
    """The stages the last stage grew from (oldest first) and the model the first of them started from."""
    chain = [cfg.stages[-1]]
    i = len(cfg.stages) - 1
    while chain[0].init_from == "previous" and i > 0:
        i -= 1
        chain.insert(0, cfg.stages[i])
    start = chain[0].init_from
    return chain, cfg.model if start in ("base", "previous") else start


def adapter_blockers_from_config(chain: list[Stage], adapters: list[LoraAdapter]) -> list[str]:
    """What the configuration says was trained besides the language model's LoRA (the user's view)."""
    out = []
    for st in chain:
        for m in MODULES:
            mode = getattr(st.trainable, m)
            if mode == "full":
                what = {"vision": "the vision tower", "projector": "the projector", "language": "the language model"}[m]
                out.append(f"stage {st.name!r} trained {what} in full (trainable.{m}: full)")
            elif mode == "lora" and m == "vision":
                out.append(f"stage {st.name!r} trained the vision tower with LoRA (trainable.vision: lora)")
    for a in adapters:
        if a.config.get("modules_to_save"):
            out.append(f"{a.path}: modules_to_save {a.config['modules_to_save']} are full weights, not LoRA")
    return out


def _stage_rows(cfg: RunConfig, run_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for st in cfg.stages:
        done = json.loads((run_dir / st.name / "final" / "stage_done.json").read_text())
        rows.append({
            "name": st.name, "init_from": st.init_from, "data": [d.model_dump(mode="json") for d in st.data],
            "trainable": st.trainable.model_dump(), "learning_rate": st.learning_rate,
            "module_learning_rates": st.module_learning_rates.model_dump(), "lora": st.lora.model_dump(),
            "max_pixels": st.max_pixels, "max_length": st.max_length, "steps_done": done.get("steps"),
            "final_loss": done.get("final_loss"), "trainable_params": done.get("trainable"),
        })  # fmt: skip
    return rows


# --------------------------------------------------------------------------- export


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    mode: str = "merged",
    dtype: str = "auto",
    eval_dirs: list[str] | tuple[str, ...] = (),
    name: str | None = None,
) -> ExportResult:
    """Export a finished run as a merged model or a LoRA adapter (see the module docstring)."""
    if mode not in ("merged", "adapter"):
        raise ExportError(f"--mode must be merged or adapter, got {mode!r}")
    run_dir, out = Path(run_dir), Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: export folder exists and is not empty (choose a new --out)")
    cfg, provenance = _read_run(run_dir)
    evaluations = []
    for d in eval_dirs:
        try:
            evaluations.append(model_card.read_eval_results(d))
        except (OSError, ValueError) as e:
            raise ExportError(f"--eval {d}: {e}") from e
    chain, start_model = lineage(cfg)
    final = run_dir / chain[-1].name / "final"
    try:
        base_dir: Path | None = resolve_model_dir(start_model)
    except ExportError:
        if mode == "adapter":  # the refusal rule needs the base's tensors
            raise
        base_dir = None  # a merged export does not need the base: the card just says less
        log.warning("base model %s is not available here: the model card will not compare against it", start_model)
    adapters = [read_adapter(run_dir / st.name / "final" / "adapter")
                for st in chain if (run_dir / st.name / "final" / "adapter").is_dir()]  # fmt: skip

    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    result = ExportResult(out=out, mode=mode, requested_mode=mode, base_model=start_model)
    changes = None
    if base_dir is not None:
        log.info("comparing %s with its base %s tensor by tensor", final, base_dir)
        changes = result.changes = compare_to_base(base_dir, final, adapters)
    if mode == "adapter":
        assert changes is not None  # adapter mode requires the base (above)
        reasons = adapter_blockers_from_config(chain, adapters) + changes.reasons()
        if not adapters:
            reasons.insert(0, "no stage of the lineage trained LoRA adapters (trainable.language: lora)")
        if reasons:
            result.mode = "merged"
            result.reasons = reasons
            result.refusal = (
                "vLLM applies an adapter to the original base model, so only the language model's LoRA weights may "
                "change, but " + "; ".join(reasons)
            )
            log.info("adapter export refused: %s", result.refusal)
    target_dtype = None if dtype == "auto" else dtype
    rank = None
    if result.mode == "adapter":
        stack_adapters(adapters, tmp, base_model=start_model)
        rank = result.adapter_rank = int(json.loads((tmp / "adapter_config.json").read_text())["r"])
    else:
        target_dtype = target_dtype or config_dtype(base_dir or final)
        write_merged(final, tmp, dtype=target_dtype)

    card = model_card.build_card(
        name=name or out.name, mode=result.mode, requested_mode=mode, refusal=result.reasons, run_dir=run_dir,
        run_config=cfg.model_dump(mode="json"), provenance=provenance, stages=_stage_rows(cfg, run_dir),
        lineage=[s.name for s in chain],
        changes=None if changes is None else {
            "tensors": changes.tensors, "lora_explained": len(changes.lora_explained),
            "changed": {m: len(k) for m, k in changes.changed.items()},
            "lora_mismatch": len(changes.lora_mismatch), "structure": changes.structure[:5]},
        dtype=target_dtype, adapter_rank=rank, evaluations=evaluations,
        exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )  # fmt: skip
    pipeline = run_dir / "pipeline.yaml"
    if pipeline.is_file():
        shutil.copyfile(pipeline, tmp / "training_pipeline.yaml")
    model_card.write_card(tmp, card)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    result.card = [out / model_card.CARD_MD, out / model_card.CARD_JSON]
    return result
