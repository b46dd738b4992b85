"""``--dry-run``: build the model on the meta device and estimate GPU memory per stage, per GPU.

Nothing is allocated and no weights are read: the model is instantiated from its ``config.json`` under
``torch.device("meta")`` so parameter counts per module are exact. The estimate, per GPU:

* weights: 4 bytes/param (fp32; the HF Trainer's bf16 is autocast over fp32 weights), or 2 with
  DeepSpeed bf16; ZeRO-3 divides them by the world size;
* gradients: same width as the weights, trainable parameters only; ZeRO-2/3 divide by world size;
* optimizer: AdamW's two fp32 moments (8 bytes) plus a 4-byte fp32 master copy under DeepSpeed bf16,
  trainable parameters only; ZeRO (any stage) divides by world size; CPU offload moves it off the GPU;
* activations: per token and layer ``34 × hidden`` bytes in 16 bit (Korthikanti et al. 2022, no
  attention-score term: flash/flex attention), ×2 in fp32; with gradient checkpointing only one layer
  is live plus a ``hidden``-wide boundary per layer; plus the fp32 logits (``tokens × vocab × 8``) and
  the vision tower over the pack's patches (4 per visual token).

It is an estimate (±20 %): allocator fragmentation, CUDA context (~0.5–1 GiB) and NCCL buffers are not
modelled. LoRA adds ``r × (in + out)`` parameters per targeted linear layer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.stage import MODULES, RunConfig, Stage
from training.trainability import module_of

log = logging.getLogger(__name__)
GiB = 1024**3


@dataclass
class StageMemory:
    stage: str
    world_size: int
    zero_stage: int
    params: dict[str, int]
    trainable_params: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    total_gib: float


def load_model_config(cfg: RunConfig) -> Any:
    """The model's config from ``model_config_file`` or the model directory's ``config.json``."""
    from transformers import AutoConfig

    path = Path(cfg.model_config_file) if cfg.model_config_file else Path(cfg.model) / "config.json"
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model config (set 'model_config_file' for a model that is not local)")
    raw = json.loads(path.read_text())
    model_type = raw.pop("model_type", None)
    if not model_type:
        raise ValueError(f"{path}: config has no 'model_type'")
    return AutoConfig.for_model(model_type, **raw)


def meta_model(config: Any) -> Any:
    """The model built on the meta device (no memory, exact shapes)."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def _deepspeed(cfg: RunConfig) -> tuple[int, bool, bool]:
    if not cfg.deepspeed:
        return 0, False, False
    ds = json.loads(Path(cfg.deepspeed).read_text())
    z = ds.get("zero_optimization", {})
    off_opt = z.get("offload_optimizer", {}).get("device", "none") not in ("none", None)
    off_par = z.get("offload_param", {}).get("device", "none") not in ("none", None)
    return int(z.get("stage", 0)), off_opt, off_par


def estimate_stage(
    model: Any, config: Any, cfg: RunConfig, stage: Stage, *, world_size: int, visual_fraction: float = 0.5
) -> StageMemory:
    """Estimate one stage's memory per GPU (see the module docstring for the model)."""
    params = {m: 0 for m in MODULES}
    trainable = 0
    lora_targets = set(stage.lora.target_modules)
    for name, p in model.named_parameters():
        m = module_of(name)
        params[m] += p.numel()
        mode = getattr(stage.trainable, m)
        if mode == "full":
            trainable += p.numel()
        elif mode == "lora" and p.ndim == 2 and name.rsplit(".", 2)[-2] in (lora_targets | {"qkv", "proj"}):
            trainable += stage.lora.r * (p.shape[0] + p.shape[1])
    total = sum(params.values())
    zero, off_opt, off_par = _deepspeed(cfg)
    ds_bf16 = zero > 0 and cfg.precision == "bf16"
    wbytes = 2 if ds_bf16 else 4
    weights = total * wbytes / (world_size if zero == 3 and not off_par else 1) * (0 if off_par else 1)
    grads = trainable * wbytes / (world_size if zero >= 2 else 1)
    opt_bytes = 8 + (4 if ds_bf16 else 0)
    optim = 0.0 if off_opt else trainable * opt_bytes / (world_size if zero >= 1 else 1)

    text = config.text_config if hasattr(config, "text_config") else config
    vision = getattr(config, "vision_config", None)
    hidden, layers, vocab = text.hidden_size, text.num_hidden_layers, text.vocab_size
    act_width = 2 if cfg.precision == "bf16" else 4
    tokens = stage.max_length * stage.batch_size
    per_layer = 34 * hidden * tokens * act_width / 2
    if stage.gradient_checkpointing:
        lm_act = layers * hidden * tokens * act_width + per_layer
    else:
        lm_act = layers * per_layer
    logits = tokens * vocab * 8
    vis_act = 0.0
    if vision is not None:
        patches = 4 * visual_fraction * tokens
        vh = getattr(vision, "hidden_size", hidden)
        vd = getattr(vision, "depth", getattr(vision, "num_hidden_layers", 0))
        vis_layer = 34 * vh * patches * act_width / 2
        vis_act = (vd * vh * patches * act_width + vis_layer) if stage.gradient_checkpointing else vd * vis_layer
        if stage.trainable.vision == "frozen" and stage.trainable.projector == "frozen":
            vis_act = vis_layer  # no backward through the tower: one layer live at a time
    acts = lm_act + logits + vis_act
    gib = [x / GiB for x in (weights, grads, optim, acts)]
    return StageMemory(stage.name, world_size, zero, params, trainable, *[round(x, 2) for x in gib], round(sum(gib), 2))


def estimate_memory(cfg: RunConfig, *, world_size: int | None = None) -> list[StageMemory]:
    """Per-stage memory estimates for a run (model on the meta device)."""
    config = load_model_config(cfg)
    model = meta_model(config)
    ws = world_size or cfg.dry_run_gpus
    return [estimate_stage(model, config, cfg, st, world_size=ws) for st in cfg.stages]


def format_estimates(rows: list[StageMemory]) -> str:
    """A small table for the terminal."""
    head = f"{'stage':<16}{'GPUs':>5}{'ZeRO':>5}{'params':>14}{'trainable':>14}{'weights':>9}{'grads':>8}{'optim':>8}{'activ.':>8}{'total GiB':>11}"
    lines = [head]
    for r in rows:
        d = asdict(r)
        lines.append(
            f"{r.stage:<16}{r.world_size:>5}{r.zero_stage:>5}{sum(d['params'].values()):>14,}{r.trainable_params:>14,}"
            f"{r.weights_gib:>9.2f}{r.gradients_gib:>8.2f}{r.optimizer_gib:>8.2f}{r.activations_gib:>8.2f}{r.total_gib:>11.2f}"
        )
    return "\n".join(lines)
