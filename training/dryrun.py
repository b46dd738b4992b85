"""``--dry-run`` for any recipe: memory per GPU per stage (meta device) and, when local, the pack plans.

Nothing trains and no weights are read. The memory model is :mod:`training.memory`; the pack plans use
the stage's real manifests and the model's processor when both are on this machine (a GPU recipe
checked on a laptop prints the memory table and says why planning was skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.memory import StageMemory, estimate_memory, format_estimates
from training.stage import RunConfig


@dataclass
class DryRunReport:
    memory: list[StageMemory]
    memory_table: str
    plans: list[str]
    gpu_memory_gib: float | None = None
    over_budget: list[str] = field(default_factory=list)  # stages whose estimate exceeds gpu_memory_gib

    def lines(self) -> list[str]:
        out = [self.memory_table]
        if self.gpu_memory_gib:
            verdict = (
                f"does NOT fit: {', '.join(self.over_budget)} over {self.gpu_memory_gib:g} GiB"
                if self.over_budget
                else f"fits {self.gpu_memory_gib:g} GiB GPUs (largest stage {max(m.total_gib for m in self.memory):.2f} GiB)"
            )
            out.append(f"estimate per GPU: {verdict} (±20 %; CUDA context and NCCL buffers not included)")
        out.extend(self.plans)
        return out


def plan_lines(cfg: RunConfig) -> list[str]:
    """One line per stage: samples → packs, efficiency, dropped samples, visual tokens per image."""
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
    return plans


def dry_run(cfg: RunConfig) -> DryRunReport:
    """The memory estimate of every stage and the pack plans (see the module docstring)."""
    memory = estimate_memory(cfg)
    over = [m.stage for m in memory if cfg.gpu_memory_gib and m.total_gib > cfg.gpu_memory_gib]
    return DryRunReport(memory, format_estimates(memory), plan_lines(cfg), cfg.gpu_memory_gib, over)
