"""Continual pretraining recipe: low→high resolution stages with multimodal packing.

    infimed pretrain pretrain/configs/smoke_tiny_cpu.yaml --output-dir runs/smoke        # CPU, tiny model
    infimed pretrain pretrain/configs/qwen2_5_vl_3b_8gpu.yaml --dry-run                   # memory per GPU
    torchrun --nproc_per_node 8 -m pretrain pretrain/configs/qwen2_5_vl_3b_8gpu.yaml      # one node
    deepspeed --hostfile hosts -m pretrain pretrain/configs/qwen2_5_vl_7b_multinode.yaml  # several nodes

The story: read the YAML → resolve the smoke-test sources (``tiny://PRESET`` builds the tiny model,
``phantoms://N?seed=S`` writes synthetic phantoms, both into a cache) → either estimate memory and plan
the packs (``--dry-run``) or run the stages on the shared engine (``training.trainer.run_stages``),
which resumes by default when the output directory holds an unfinished run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.dryrun import dry_run
from training.sources import resolve_sources
from training.stage import load_run_config

__all__ = ["dry_run", "resolve_sources", "run"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- run


def run(config_path: str | Path, *, output_dir: str | None = None, dry: bool = False, resume: bool = True) -> int:
    """Load the recipe and train (or dry-run) it; returns a process exit code."""
    cfg = resolve_sources(load_run_config(config_path, kind="pretrain"))
    if dry:
        for line in dry_run(cfg).lines():
            print(line)
        return 0
    from training.trainer import run_stages

    results = run_stages(cfg, output_dir=output_dir, resume=resume)
    for r in results:
        tps = f"{r.tokens_per_second:.0f}" if r.tokens_per_second else "-"
        vt = f"{r.visual_tokens_per_image:.1f}" if r.visual_tokens_per_image else "-"
        print(f"{r.name}: {r.steps} steps, final loss {r.final_loss:.4f}, {tps} tokens/s, {vt} visual tokens/image, "
              f"packing efficiency {r.packing_efficiency:.3f} → {r.output}")  # fmt: skip
    return 0
