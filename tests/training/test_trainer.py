"""Stages on the HF Trainer: exact resume after an injected fault, trainability, per-module rates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import write_png_manifest
from training.stage import RunConfig, Stage
from training.trainability import apply_trainability, module_of, param_groups, trainable_summary
from training.trainer import FaultInjected, complete_checkpoints, run_stages


def _config(model: Path, manifest: Path, out: Path, **second) -> RunConfig:
    return RunConfig.model_validate({
        "kind": "pretrain", "model": str(model), "output_dir": str(out), "report_to": ["none"], "seed": 3,
        "stages": [
            {"name": "low", "data": [{"manifest": str(manifest)}], "max_pixels": 4 * 784, "max_length": 160, "steps": 2, "save_steps": 2,
             "learning_rate": 1e-3},
            {"name": "high", "data": [{"manifest": str(manifest)}], "max_pixels": 16 * 784, "max_length": 256, "steps": 4, "save_steps": 2,
             "learning_rate": 1e-3, "warmup_steps": 1, **second},
        ],
    })  # fmt: skip


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("captions")
    return write_png_manifest(folder, [
        {"id": f"c{i}", "text": f"<image> Axial CT {i}: a nodule in the {'left' if i % 2 else 'right'} lung.", "sizes": [(56 + 14 * i, 84)], "seed": i}
        for i in range(8)
    ] + [{"id": "t0", "messages": [{"role": "user", "content": "Define nodule."}, {"role": "assistant", "content": "A small round opacity."}]}])  # fmt: skip


@pytest.fixture()
def deterministic():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def test_resume_after_fault_gives_the_same_loss_and_weights(
    tiny_model_dir, captions, tmp_path, monkeypatch, deterministic
):
    straight = run_stages(_config(tiny_model_dir, captions, tmp_path / "a"), resume=False)

    monkeypatch.setenv("INFIMED_FAULT_AT", "high:2")
    with pytest.raises(FaultInjected):
        run_stages(_config(tiny_model_dir, captions, tmp_path / "b"), resume=False)
    assert [p.name for p in complete_checkpoints(tmp_path / "b" / "high")] == ["checkpoint-2"]
    assert not (tmp_path / "b" / "high" / "final").exists()
    monkeypatch.delenv("INFIMED_FAULT_AT")
    resumed = run_stages(_config(tiny_model_dir, captions, tmp_path / "b"), resume=True)

    assert resumed[1].resumed_from == "checkpoint-2" and resumed[1].steps == 4
    state = json.loads((tmp_path / "b" / "high" / "checkpoint-2" / "packed_sampler.json").read_text())
    assert state["batches_consumed"] == 2
    assert abs(straight[1].final_loss - resumed[1].final_loss) <= 1e-6
    wa = load_file(tmp_path / "a" / "high" / "final" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "high" / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # and training did move the weights
    base = load_file(tiny_model_dir / "model.safetensors")
    key = next(k for k in base if k.endswith("layers.0.mlp.up_proj.weight"))
    assert not torch.equal(base[key], wa[key])


def test_trainability_is_applied_to_the_model(tiny_model_dir, captions, tmp_path):
    from transformers import AutoModelForImageTextToText

    stage = Stage.model_validate({
        "name": "s", "data": [{"manifest": str(captions)}], "steps": 1, "learning_rate": 1e-4,
        "trainable": {"vision": "lora", "projector": "frozen", "language": "full"},
        "module_learning_rates": {"vision": 5e-4},
    })  # fmt: skip
    model = apply_trainability(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), stage)
    for name, p in model.named_parameters():
        m = module_of(name)
        if m == "vision":
            assert p.requires_grad == ("lora_" in name), name
        elif m == "projector":
            assert not p.requires_grad, name
        else:
            assert p.requires_grad and "lora_" not in name, name
    summary = trainable_summary(model)
    assert summary["projector"][0] == 0 and 0 < summary["vision"][0] < summary["vision"][1]
    rates = {g["name"]: g["lr"] for g in param_groups(model, stage)}
    assert rates["vision"] == 5e-4 and rates["language"] == 1e-4 and not any(n.startswith("projector") for n in rates)


def test_frozen_modules_do_not_change_in_a_stage(tiny_model_dir, captions, tmp_path, deterministic):
    cfg = _config(
        tiny_model_dir,
        captions,
        tmp_path / "r",
        trainable={"vision": "frozen", "projector": "frozen", "language": "lora"},
        gradient_checkpointing=True,
    )
    cfg.precision = "bf16"  # CPU autocast; LoRA + gradient checkpointing + bf16 in one short stage
    cfg.stages = cfg.stages[1:]
    cfg.stages[0].init_from = "base"
    cfg.stages[0].steps = 2  # step 1 is warm-up at lr 0
    run_stages(cfg, resume=False)
    final = tmp_path / "r" / "high" / "final"
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(final / "model.safetensors")
    for k in before:
        if module_of(k) in ("vision", "projector"):
            assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if ".layers." in k)  # LoRA merged into the LM
    assert (final / "adapter" / "adapter_config.json").exists()
    assert (final / "preprocessor_config.json").exists() and (final / "stage_done.json").exists()
