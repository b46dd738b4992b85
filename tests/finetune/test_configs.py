"""Every finetune pipeline in the repository: opens with its launch command, is a three-stage chain
(projector trained in stage 1, vision frozen there), and the GPU presets fit their GPUs by --dry-run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.dryrun import dry_run
from training.stage import load_run_config

REPO = Path(__file__).resolve().parents[2]
FINETUNE_YAMLS = sorted(
    p
    for p in (REPO / "finetune" / "configs").rglob("*.yaml")
    if (yaml.safe_load(p.read_text()) or {}).get("kind") == "finetune"
)
PRESETS = [p for p in FINETUNE_YAMLS if "tiny" not in p.name]  # the GPU presets (tiny = CPU configs)


def test_smoke_and_hardware_presets_exist():
    assert "smoke_tiny_cpu.yaml" in {p.name for p in FINETUNE_YAMLS}
    sizes = {load_run_config(p, kind="finetune").gpu_memory_gib for p in PRESETS}
    assert {24, 48, 80} <= sizes


@pytest.mark.parametrize("path", FINETUNE_YAMLS, ids=lambda p: p.name)
def test_pipeline_opens_with_its_launch_command_and_chains_three_stages(path: Path):
    cfg = load_run_config(path, kind="finetune")
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "finetune run" in first and path.name in first, first
    assert any(w in first for w in ("infimed finetune", "torchrun", "deepspeed")), first
    assert [s.name for s in cfg.stages] == ["general", "medical", "mix"]
    assert cfg.stages[0].trainable.projector == "full" and cfg.stages[0].trainable.vision == "frozen"
    assert all(s.init_from == "previous" for s in cfg.stages[1:])
    if cfg.deepspeed:
        assert Path(cfg.deepspeed).is_file(), cfg.deepspeed


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_gpu_preset_fits_its_gpu_by_dry_run(path: Path):
    cfg = load_run_config(path, kind="finetune")
    assert cfg.gpu_memory_gib and cfg.precision == "bf16" and cfg.deepspeed
    assert all(s.gradient_checkpointing for s in cfg.stages)
    report = dry_run(cfg)
    assert not report.over_budget, report.lines()
    assert all(0 < m.total_gib <= cfg.gpu_memory_gib for m in report.memory)
    assert all(sum(m.params.values()) > 3_000_000_000 for m in report.memory)  # the real architecture (meta device)
    assert "fits" in "\n".join(report.lines())


def test_dry_run_says_when_a_preset_does_not_fit(capsys):
    from infimed.cli import main

    cfg = load_run_config(REPO / "finetune/configs/qwen2_5_vl_3b_80gb.yaml", kind="finetune")
    cfg.gpu_memory_gib = 24  # the 80 GB recipe on 24 GB GPUs
    report = dry_run(cfg)
    assert report.over_budget == ["general", "medical", "mix"]
    assert "does NOT fit" in "\n".join(report.lines())
    assert main(["finetune", "run", str(REPO / "finetune/configs/qwen2_5_vl_3b_24gb.yaml"), "--dry-run"]) == 0
    assert "fits 24 GiB GPUs" in capsys.readouterr().out
