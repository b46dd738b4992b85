"""Which parameters train, and how: vision tower / projector / language model × frozen | lora | full.

A parameter belongs to the ``projector`` when its name contains ``visual.merger`` (Qwen2/2.5-VL) or
``visual.deepstack_merger`` (Qwen3-VL), to ``vision`` when it contains ``visual.``, and to the
``language`` model otherwise (embeddings and the LM head included). LoRA adapters (PEFT, imported
lazily) go on the language model's and/or the vision blocks' linear layers; ``full`` modules are then
re-enabled on top of PEFT's freezing, so any mix works.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from training.stage import MODULES, Module, Stage

log = logging.getLogger(__name__)

_PROJECTOR = ("visual.merger", "visual.deepstack_merger")
_VISION_LORA_TARGETS = ("qkv", "proj", "gate_proj", "up_proj", "down_proj", "fc1", "fc2")


def module_of(name: str) -> Module:
    """The module a parameter name belongs to (``vision`` / ``projector`` / ``language``)."""
    if any(p in name for p in _PROJECTOR):
        return "projector"
    if "visual." in name:
        return "vision"
    return "language"


def lora_target_regex(stage: Stage) -> str | None:
    """A PEFT ``target_modules`` regex covering the modules whose mode is ``lora`` (None if none)."""
    parts = []
    if stage.trainable.language == "lora":
        names = "|".join(re.escape(t) for t in stage.lora.target_modules)
        parts.append(rf".*language_model\..*\.({names})")
    if stage.trainable.vision == "lora":
        names = "|".join(_VISION_LORA_TARGETS)
        parts.append(rf".*visual\.blocks\..*\.({names})")
    return "|".join(f"(?:{p})" for p in parts) if parts else None


def apply_trainability(model: Any, stage: Stage) -> Any:
    """Freeze / LoRA-wrap / unfreeze per module as the stage says; returns the (maybe PEFT) model."""
    target = lora_target_regex(stage)
    if target is not None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=stage.lora.r,
            lora_alpha=stage.lora.alpha,
            lora_dropout=stage.lora.dropout,
            target_modules=target,
            bias="none",
        )
        model = get_peft_model(model, cfg)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(getattr(stage.trainable, module_of(name)) == "lora")
        else:
            p.requires_grad_(getattr(stage.trainable, module_of(name)) == "full")
    summary = trainable_summary(model)
    log.info(
        "stage %s trainable parameters: %s", stage.name, ", ".join(f"{m} {t:,}/{n:,}" for m, (t, n) in summary.items())
    )
    return model


def trainable_summary(model: Any) -> dict[str, tuple[int, int]]:
    """``{module: (trainable, total)}`` parameter counts, read from the model itself."""
    out = {m: [0, 0] for m in MODULES}
    for name, p in model.named_parameters():
        m = module_of(name)
        n = getattr(p, "ds_numel", None) or p.numel()  # ZeRO-3 partitions p; ds_numel is its full size
        out[m][1] += n
        if p.requires_grad:
            out[m][0] += n
    return {m: (t, n) for m, (t, n) in out.items()}


def param_groups(model: Any, stage: Stage) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one per (module, decay / no decay), each with its module's rate."""
    groups: dict[tuple[str, bool], list[Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and "norm" not in name.lower()
        groups.setdefault((module_of(name), decay), []).append(p)
    return [
        {
            "params": ps,
            "lr": stage.rate(m),
            "weight_decay": stage.weight_decay if decay else 0.0,
            "name": f"{m}{'' if decay else '-no-decay'}",
        }
        for (m, decay), ps in sorted(groups.items())
    ]
