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
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from training.stage import RunConfig, load_run_config

log = logging.getLogger(__name__)


@dataclass
class DryRunReport:
    memory_table: str
    plans: list[str]


def cache_dir() -> Path:
    return Path(os.environ.get("INFIMED_CACHE", Path.home() / ".cache" / "infimed"))


# --------------------------------------------------------------------------- smoke-test sources


def resolve_sources(cfg: RunConfig) -> RunConfig:
    """Replace ``tiny://`` models and ``phantoms://`` manifests by real paths (built once, cached)."""
    if cfg.model.startswith("tiny://"):
        from core.tiny import ensure_tiny_model

        cfg.model = str(ensure_tiny_model(cache_dir() / "tiny", preset=cfg.model.removeprefix("tiny://") or "tiny"))
    for stage in cfg.stages:
        for src in stage.data:
            if src.manifest.startswith("phantoms://"):
                src.manifest = str(_phantoms(src.manifest))
    return cfg


def _phantoms(uri: str) -> Path:
    from core.phantoms import generate_phantoms

    u = urlparse(uri)
    n = int(u.netloc or u.path.strip("/") or 32)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    seed = int(q.pop("seed", 0))
    size = int(q.pop("size", 128))
    out = cache_dir() / "phantoms" / f"n{n}-seed{seed}-size{size}"
    manifest = out / "manifest.jsonl"
    if not manifest.exists():
        generate_phantoms(out, n=n, seed=seed, size=size)
    return manifest


# --------------------------------------------------------------------------- dry run


def dry_run(cfg: RunConfig) -> DryRunReport:
    """Memory per GPU for every stage (meta device) and, when data and processor are local, the pack plans."""
    from training.memory import estimate_memory, format_estimates

    table = format_estimates(estimate_memory(cfg))
    plans: list[str] = []
    for stage in cfg.stages:
        missing = [s.manifest for s in stage.data if not Path(s.manifest).is_file()]
        if missing or not Path(cfg.model).is_dir():
            why = f"manifest {missing[0]} not found" if missing else f"model {cfg.model} is not a local directory"
            plans.append(f"{stage.name}: pack planning skipped ({why})")
            continue
        from transformers import AutoProcessor

        from training.data import StageDataset, budget_from_processor

        processor = AutoProcessor.from_pretrained(cfg.model)
        ds = StageDataset(stage, processor, base_budget=budget_from_processor(processor), seed=cfg.seed)
        plan = ds.plan(0)
        _, images = ds.lengths()
        n_img = sum(images[i] for p in plan.packs for i in p)
        vis = sum(sum(ds.visual_tokens(i)) for p in plan.packs for i in p)
        plans.append(
            f"{stage.name}: {len(ds)} samples → {len(plan.packs)} packs of ≤ {stage.max_length} tokens, "
            f"efficiency {plan.efficiency(stage.pad_to_multiple_of):.3f}, {len(plan.dropped)} dropped, "
            f"{vis / n_img if n_img else 0:.1f} visual tokens/image at ≤ {ds.budget.max_pixels} pixels"
        )
    return DryRunReport(table, plans)


# --------------------------------------------------------------------------- run


def run(config_path: str | Path, *, output_dir: str | None = None, dry: bool = False, resume: bool = True) -> int:
    """Load the recipe and train (or dry-run) it; returns a process exit code."""
    cfg = resolve_sources(load_run_config(config_path, kind="pretrain"))
    if dry:
        report = dry_run(cfg)
        print(report.memory_table)
        for line in report.plans:
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
