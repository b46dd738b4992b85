"""Three-stage supervised fine-tuning: general instructions → medical → a cross-domain/task mix.

    infimed finetune run finetune/configs/smoke_tiny_cpu.yaml --output-dir runs/ft-smoke --resume   # CPU
    infimed finetune run finetune/configs/qwen2_5_vl_3b_24gb.yaml --dry-run                          # memory per GPU
    torchrun --nproc_per_node 8 -m finetune run finetune/configs/qwen2_5_vl_3b_80gb.yaml --resume    # one node
    infimed finetune export runs/ft-smoke --out runs/ft-smoke-model --mode merged                      # serve it

The story: read the pipeline YAML (``kind: finetune``, a list of the engine's stages, each starting from
the previous one's output with ``init_from: previous``) → resolve the smoke-test sources (``tiny://``,
``phantoms://``) → either estimate memory and plan packs (``--dry-run``) or train the stages on the
shared engine (:func:`training.trainer.run_stages`), which resumes an interrupted pipeline at the stage
and step where it stopped. The pipeline YAML is copied into the run folder for the model card.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from training.sources import resolve_sources
from training.stage import MODULES, RunConfig, load_run_config

log = logging.getLogger(__name__)

PIPELINE_COPY = "pipeline.yaml"


def load_pipeline(path: str | Path) -> RunConfig:
    """Read and validate a ``kind: finetune`` YAML and resolve ``tiny://`` / ``phantoms://`` sources."""
    return resolve_sources(load_run_config(path, kind="finetune"))


def run(config_path: str | Path, *, output_dir: str | None = None, dry: bool = False, resume: bool = False) -> int:
    """Train (or dry-run) the pipeline; returns a process exit code."""
    cfg = load_pipeline(config_path)
    if dry:
        from training.dryrun import dry_run

        for line in dry_run(cfg).lines():
            print(line)
        return 0

    from training.trainer import is_main_process, run_stages

    out = Path(output_dir or cfg.output_dir)
    results = run_stages(cfg, output_dir=out, resume=resume)
    if is_main_process():
        shutil.copyfile(config_path, out / PIPELINE_COPY)
        for r in results:
            tps = f"{r.tokens_per_second:.0f}" if r.tokens_per_second else "-"
            loss = f"{r.final_loss:.4f}" if r.final_loss is not None else "-"
            trained = ", ".join(f"{m} {r.trainable[m][0]:,}/{r.trainable[m][1]:,}" for m in MODULES if m in r.trainable)
            resumed = f" (resumed from {r.resumed_from})" if r.resumed_from else ""
            print(f"{r.name}: {r.steps} steps{resumed}, final loss {loss}, {tps} tokens/s, "
                  f"trainable {trained} → {r.output}")  # fmt: skip
        print(f"run finished: {out}  (export: infimed finetune export {out} --out DIR --mode merged|adapter)")
    return 0
