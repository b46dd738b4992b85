"""Run a list of stages, one Hugging Face Trainer per stage, with packing and exact resume.

For each stage: load the model (from the base, the previous stage's output, or a path) → apply
trainability per module → plan the stage's packs at its resolution → train with a
:class:`PackTrainer` (packed sampler, per-module parameter groups, block-diagonal / varlen / flex
attention, tokens/s logging) → save ``<output>/<stage>/final`` atomically (model with LoRA merged,
``adapter/`` when LoRA was used, processor, ``stage_done.json``).

Resume: a finished stage (``final/stage_done.json``) is skipped; an unfinished one restarts from its
newest *complete* checkpoint (``checkpoint-N/COMPLETE`` is written last, so a checkpoint cut short by a
kill is never used). The Trainer restores weights, optimizer, scheduler and RNG; the packed sampler is
a pure function of (seed, data), so skipping the consumed batches — indices only, no decoding — puts
it exactly where it was; its saved state (``packed_sampler.json``) is checked against the data first.

Fault injection for tests: ``INFIMED_FAULT_AT=<stage>:<step>`` stops the run right after that optimizer
step (after its checkpoint, if one is due); ``INFIMED_FAULT_MODE=raise|exit|kill`` (default raise).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from training.attention import static_pad_length
from training.collator import PackCollator, real_tokens
from training.data import StageDataset, budget_from_processor
from training.packing import PackBatchSampler
from training.provenance import run_provenance
from training.stage import RunConfig, Stage
from training.trainability import apply_trainability, param_groups, trainable_summary

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
SAMPLER_STATE = "packed_sampler.json"
STAGE_DONE = "stage_done.json"
PROVENANCE = "provenance.json"
# The trainable parameters under their in-memory names: the Trainer's own weight reload goes through
# ``load_state_dict`` on files that ``save_pretrained`` wrote with checkpoint-format key names (which
# do not match for Qwen2.5-VL in transformers 5), and PEFT checkpoints omit fully trained modules.
TRAINABLE_STATE = "trainable_state.safetensors"


class FaultInjected(RuntimeError):
    """Raised by the fault-injection hook (tests stop a run mid-stage with it)."""


@dataclass
class StageResult:
    name: str
    output: str
    steps: int
    final_loss: float | None
    tokens_per_second: float | None
    visual_tokens_per_image: float | None
    packing_efficiency: float
    packs_per_epoch: int
    dropped: int
    trainable: dict[str, list[int]] = field(default_factory=dict)
    resumed_from: str | None = None


# --------------------------------------------------------------------------- helpers


def attention_backend(requested: str) -> str:
    """``auto`` → flash-attn varlen if installed on a GPU, FlexAttention on other GPUs, SDPA on the CPU."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            return "flex_attention"
    return "sdpa"


def fault_point() -> tuple[str, int] | None:
    raw = os.environ.get("INFIMED_FAULT_AT")
    if not raw:
        return None
    name, _, step = raw.rpartition(":")
    if not name or not step.isdigit():
        raise ValueError(f"INFIMED_FAULT_AT must be '<stage>:<step>', got {raw!r}")
    return name, int(step)


def _die(stage: str, step: int) -> None:
    mode = os.environ.get("INFIMED_FAULT_MODE", "raise")
    log.warning("fault injected in stage %s after step %d (%s)", stage, step, mode)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "exit":
        os._exit(75)
    raise FaultInjected(f"fault injected in stage {stage} after step {step}")


class FaultCallback(TrainerCallback):
    """Stops the run after a given step of a given stage (after that step's checkpoint, if any)."""

    def __init__(self, stage: str, step: int) -> None:
        self.stage, self.step = stage, step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step and not (args.save_steps and state.global_step % args.save_steps == 0):
            _die(self.stage, self.step)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            _die(self.stage, self.step)


def complete_checkpoints(stage_dir: Path) -> list[Path]:
    """Checkpoints of a stage whose ``COMPLETE`` marker exists, oldest first."""
    found = [p for p in stage_dir.glob("checkpoint-*") if (p / COMPLETE).exists() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def is_main_process() -> bool:
    """Rank 0 of a torchrun/deepspeed launch (or a single process)."""
    return int(os.environ.get("RANK", "0")) == 0


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the Trainer


class PackTrainer(Trainer):
    """HF Trainer with the packed sampler, per-module parameter groups and packed attention."""

    def __init__(self, *args: Any, stage: Stage, sampler: PackBatchSampler, backend: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.pack_sampler = sampler
        self.backend = backend
        self._tokens = 0
        self._images = 0
        self._visual = 0
        self._t0 = time.perf_counter()
        self.last_loss: torch.Tensor | None = None
        self.throughput: list[float] = []

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        dl = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=self.pack_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        return self.accelerator.prepare(dl)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            groups = param_groups(self.model if model is None else model, self.stage)
            self.optimizer = torch.optim.AdamW(groups, lr=self.stage.learning_rate, betas=(0.9, 0.999), eps=1e-8)
        return self.optimizer

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        boundaries = inputs.pop("pack_boundaries")
        self._tokens += real_tokens({"pack_boundaries": boundaries})
        if "image_grid_thw" in inputs:
            g = inputs["image_grid_thw"]
            self._images += int(g.shape[0])
            self._visual += int(g.prod(-1).sum().item()) // 4
        dtype = torch.bfloat16 if self.args.bf16 else torch.float32
        inputs.update(boundaries.attention_inputs(self.backend, dtype=dtype, device=inputs["input_ids"].device))
        outputs = model(**inputs, use_cache=False)
        loss = outputs.loss
        self.last_loss = loss.detach()
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        now = time.perf_counter()
        if "loss" in logs and now > self._t0:
            tps = self._tokens / (now - self._t0)
            logs["tokens_per_second"] = round(tps, 2)
            self.throughput.append(tps)
            if self._images:
                logs["visual_tokens_per_image"] = round(self._visual / self._images, 2)
            self._tokens = 0
            self._t0 = now
        super().log(logs, start_time)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        ckpt = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save and ckpt.is_dir():
            if not self.is_deepspeed_enabled:  # DeepSpeed restores its own (partitioned) states
                from safetensors.torch import save_file

                state = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
                save_file(state, str(ckpt / TRAINABLE_STATE))
            consumed = self.state.global_step * self.args.gradient_accumulation_steps * self.args.world_size
            _write_json_atomic(ckpt / SAMPLER_STATE, self.pack_sampler.state_dict(consumed))
            _write_json_atomic(ckpt / COMPLETE, {"global_step": self.state.global_step})

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        model = self.model if model is None else model
        path = Path(resume_from_checkpoint) / TRAINABLE_STATE
        if not path.exists():
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        from safetensors.torch import load_file

        state = load_file(str(path))
        params = dict(model.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in state]
        unknown = [n for n in state if n not in params]
        if missing or unknown:
            raise ValueError(
                f"{path}: does not match this stage's trainable parameters "
                f"({len(missing)} missing, e.g. {missing[:2]}; {len(unknown)} unknown, e.g. {unknown[:2]})"
            )
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)
        log.info("restored %d trainable tensors from %s", len(state), path.parent.name)


# --------------------------------------------------------------------------- one stage


def _load_model(path: str, cfg: RunConfig, backend: str) -> Any:
    from transformers import AutoModelForImageTextToText

    from training.attention import load_implementation

    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=torch.float32, attn_implementation=load_implementation(backend)
    )
    model.config.use_cache = False
    return model


def _training_args(cfg: RunConfig, stage: Stage, stage_dir: Path, max_steps: int) -> TrainingArguments:
    warmup = stage.warmup_steps or math.ceil(stage.warmup_ratio * max_steps)
    schedule = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[stage.schedule]
    return TrainingArguments(
        output_dir=str(stage_dir),
        max_steps=max_steps,
        per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.gradient_accumulation,
        learning_rate=stage.learning_rate,
        lr_scheduler_type=schedule,
        warmup_steps=warmup,
        weight_decay=stage.weight_decay,
        max_grad_norm=stage.max_grad_norm,
        logging_steps=stage.logging_steps,
        save_strategy="steps",
        save_steps=stage.save_steps,
        save_total_limit=cfg.save_total_limit,
        bf16=cfg.precision == "bf16",
        gradient_checkpointing=stage.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if stage.gradient_checkpointing else None,
        deepspeed=cfg.deepspeed,
        report_to=[r for r in cfg.report_to if r != "none"] or "none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=cfg.dataloader_workers,
        remove_unused_columns=False,
        disable_tqdm=False,
        use_cpu=not torch.cuda.is_available(),
    )


def run_stage(cfg: RunConfig, stage: Stage, *, init_path: str, stage_dir: Path, resume: bool) -> StageResult:
    """Train one stage into ``stage_dir`` and save ``stage_dir/final``; see the module docstring."""
    from transformers import AutoProcessor

    backend = attention_backend(cfg.attn_implementation)
    stage_dir.mkdir(parents=True, exist_ok=True)
    processor = AutoProcessor.from_pretrained(init_path)
    dataset = StageDataset(stage, processor, base_budget=budget_from_processor(processor), seed=cfg.seed)
    plan0 = dataset.plan(0)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = stage.batch_size * stage.gradient_accumulation * world
    if stage.steps is not None:
        max_steps = stage.steps
    else:
        max_steps = max(1, math.floor(stage.epochs * len(plan0.packs) / per_step))
    sampler = PackBatchSampler(
        dataset.plan, batch_size=stage.batch_size, total_batches=max_steps * stage.gradient_accumulation * world
    )
    _, images = dataset.lengths()
    n_img = sum(images[i] for p in plan0.packs for i in p)
    vis = sum(sum(dataset.visual_tokens(i)) for p in plan0.packs for i in p)
    vt_per_image = vis / n_img if n_img else None
    log.info(
        "stage %s: pixels [%d, %d], %d packs/epoch of ≤ %d tokens, efficiency %.3f, %d dropped, %s visual tokens/image, %d steps",
        stage.name, dataset.budget.min_pixels, dataset.budget.max_pixels, len(plan0.packs), stage.max_length,
        plan0.efficiency(stage.pad_to_multiple_of), len(plan0.dropped),
        f"{vt_per_image:.1f}" if vt_per_image else "no", max_steps,
    )  # fmt: skip

    args = _training_args(cfg, stage, stage_dir, max_steps)  # before the model: ZeRO-3 needs it at load time
    # Seeded before the model: PEFT initialises LoRA's A matrices from the global RNG, and the Trainer
    # only seeds once it exists, so without this a stage's result would depend on what ran before it.
    from transformers import set_seed

    set_seed(cfg.seed)
    model = apply_trainability(_load_model(init_path, cfg, backend), stage)
    if stage.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    tok = processor.tokenizer
    collator = PackCollator(
        pad_token_id=tok.pad_token_id, image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        spatial_merge_size=dataset.budget.merge_size,
        pad_to_multiple_of=static_pad_length(backend, stage.max_length, stage.pad_to_multiple_of),
    )  # fmt: skip
    callbacks = []
    fault = fault_point()
    if fault and fault[0] == stage.name:
        callbacks.append(FaultCallback(*fault))
    trainer = PackTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=callbacks,
        stage=stage, sampler=sampler, backend=backend,
    )  # fmt: skip

    ckpt: Path | None = None
    if resume:
        done = complete_checkpoints(stage_dir)
        ckpt = done[-1] if done else None
        if ckpt is not None:
            sampler.check_state(json.loads((ckpt / SAMPLER_STATE).read_text()))
            log.info("stage %s: resuming from %s", stage.name, ckpt.name)
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)

    result = StageResult(
        name=stage.name,
        output=str(stage_dir / "final"),
        steps=trainer.state.global_step,
        final_loss=float(trainer.last_loss.item()) if trainer.last_loss is not None else None,
        tokens_per_second=sum(trainer.throughput) / len(trainer.throughput) if trainer.throughput else None,
        visual_tokens_per_image=vt_per_image,
        packing_efficiency=plan0.efficiency(stage.pad_to_multiple_of),
        packs_per_epoch=len(plan0.packs),
        dropped=len(plan0.dropped),
        trainable={k: list(v) for k, v in trainable_summary(trainer.model).items()},
        resumed_from=ckpt.name if ckpt else None,
    )
    save_final(trainer, processor, stage_dir / "final", result)
    # Rank 0 writes final/; the next stage starts from it on every rank, so nobody may run ahead.
    trainer.accelerator.wait_for_everyone()
    return result


def _gathered_for_reading(trainer: PackTrainer) -> contextlib.AbstractContextManager:
    """ZeRO-3: all parameters gathered on every rank, changes discarded on exit; otherwise a no-op."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if trainer.is_deepspeed_enabled and plugin is not None and plugin.zero_stage == 3:
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(trainer.model.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


def save_final(trainer: PackTrainer, processor: Any, final: Path, result: StageResult) -> None:
    """Write the stage's model (LoRA merged; adapter kept beside it), processor and summary atomically."""
    tmp = final.with_name(final.name + ".tmp")
    if trainer.args.should_save and tmp.exists():
        shutil.rmtree(tmp)
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # PEFT
        # Under ZeRO-3 every rank holds a shard of each weight: gather them all (every rank takes part)
        # for rank 0 to merge and save. The gather is read-only; the model is not trained any further.
        with _gathered_for_reading(trainer):
            if trainer.args.should_save:
                model.save_pretrained(tmp / "adapter")
                model.merge_and_unload().save_pretrained(tmp)
    else:
        trainer.save_model(str(tmp))
    if trainer.args.should_save:
        processor.save_pretrained(tmp)
        # Older readers (vLLM, core.budget) look for preprocessor_config.json with min/max pixels.
        b = budget_from_processor(processor)
        pre = processor.image_processor.to_dict() | {"min_pixels": b.min_pixels, "max_pixels": b.max_pixels}
        (tmp / "preprocessor_config.json").write_text(json.dumps(pre, indent=2, sort_keys=True, default=str) + "\n")
        _write_json_atomic(tmp / STAGE_DONE, asdict(result))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)


# --------------------------------------------------------------------------- the run


def run_stages(cfg: RunConfig, *, output_dir: str | Path | None = None, resume: bool = True) -> list[StageResult]:
    """Train every stage in order; stage *k* starts from stage *k−1*'s output when ``init_from: previous``.

    With ``resume`` (the default) finished stages are skipped and an unfinished stage continues from
    its newest complete checkpoint; without it, an existing output directory is refused.
    """
    out = Path(output_dir or cfg.output_dir)
    # Under torchrun/deepspeed every rank runs this; only rank 0 checks and writes the run's files (a
    # refusal on rank 0 ends the launch: the launcher stops the other ranks).
    main = is_main_process()
    if main and not resume and out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: output directory is not empty (pass --resume to continue the run)")
    out.mkdir(parents=True, exist_ok=True)
    if main:
        _write_json_atomic(out / "run_config.json", cfg.model_dump(mode="json"))
        if not (out / PROVENANCE).exists():  # the data and code the run started from (kept across resumes)
            _write_json_atomic(out / PROVENANCE, run_provenance(cfg))
    results: list[StageResult] = []
    previous = cfg.model
    for stage in cfg.stages:
        stage_dir = out / stage.name
        done = stage_dir / "final" / STAGE_DONE
        if resume and done.exists():
            log.info("stage %s: already finished, skipping", stage.name)
            results.append(StageResult(**json.loads(done.read_text())))
            previous = str(stage_dir / "final")
            continue
        init = {"base": cfg.model, "previous": previous}.get(stage.init_from, stage.init_from)
        res = run_stage(cfg, stage, init_path=init, stage_dir=stage_dir, resume=resume)
        results.append(res)
        previous = res.output
    if main:
        _write_json_atomic(out / "run_summary.json", [asdict(r) for r in results])
    return results
