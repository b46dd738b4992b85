"""`infimed finetune run` on the CPU smoke pipeline: three chained stages, trainability checked on the
model itself, and an interrupted pipeline that resumes in stage 2 at the step where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from infimed.cli import main
from tests.finetune.conftest import SMOKE
from training.export import canonical_key
from training.stage import load_run_config
from training.trainability import module_of

STAGES = ["general", "medical", "mix"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {canonical_key(k): v for k, v in load_file(folder / "model.safetensors").items()}


def _by_module(weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {"vision": {}, "projector": {}, "language": {}}
    for k, v in weights.items():
        out[module_of(k)][k] = v
    return out


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_three_stages_chain_each_from_the_previous_output(smoke_run: Path):
    summary = json.loads((smoke_run / "run_summary.json").read_text())
    assert [s["name"] for s in summary] == STAGES
    assert all(s["steps"] == 4 and s["final_loss"] is not None for s in summary)
    cfg = json.loads((smoke_run / "run_config.json").read_text())
    base = _by_module(_weights(Path(cfg["model"])))
    final = {name: _by_module(_weights(smoke_run / name / "final")) for name in STAGES}
    # Stage 1 trained the projector; stages 2 and 3 froze it, so they carry stage 1's projector: they
    # started from stage 1's output, not from the base.
    assert not _same(final["general"]["projector"], base["projector"])
    assert _same(final["medical"]["projector"], final["general"]["projector"])
    assert _same(final["mix"]["projector"], final["general"]["projector"])
    # Each stage's LoRA was merged into the language model on top of the previous stage's.
    assert not _same(final["medical"]["language"], final["general"]["language"])
    assert not _same(final["mix"]["language"], final["medical"]["language"])
    for name in STAGES:
        assert _same(final[name]["vision"], base["vision"]), f"{name}: the frozen vision tower changed"
        assert (smoke_run / name / "final" / "adapter" / "adapter_config.json").is_file()
    assert (smoke_run / "pipeline.yaml").read_text() == SMOKE.read_text()
    prov = json.loads((smoke_run / "provenance.json").read_text())
    assert len(prov["manifests"]) == 1 and all(len(m["sha256"]) == 64 for m in prov["manifests"].values())


def test_trainable_and_frozen_parameters_per_stage_are_as_configured_on_the_model(smoke_run: Path):
    """Apply each stage's trainability to the model the stage started from and read ``requires_grad``."""
    from transformers import AutoModelForImageTextToText

    from training.trainability import apply_trainability

    cfg = load_run_config(SMOKE, kind="finetune")
    base = json.loads((smoke_run / "run_config.json").read_text())["model"]
    init = base
    for stage in cfg.stages:
        model = apply_trainability(AutoModelForImageTextToText.from_pretrained(init, dtype=torch.float32), stage)
        counts = {"vision": [0, 0], "projector": [0, 0], "language": [0, 0]}
        for name, p in model.named_parameters():
            m = module_of(name)
            counts[m][1] += p.numel()
            counts[m][0] += p.numel() if p.requires_grad else 0
            if m == "vision":
                assert not p.requires_grad, f"{stage.name}: {name} trains but the vision tower is frozen"
            elif m == "projector":
                assert p.requires_grad == (stage.trainable.projector == "full"), f"{stage.name}: {name}"
            else:  # language model: LoRA only
                assert p.requires_grad == ("lora_" in name), f"{stage.name}: {name}"
        assert counts["language"][0] > 0
        # what the trainer's live model reported when the stage ran is the same
        done = json.loads((smoke_run / stage.name / "final" / "stage_done.json").read_text())
        assert done["trainable"] == counts, stage.name
        init = str(smoke_run / stage.name / "final")


def test_fault_in_stage_two_resumes_there_at_the_same_step_with_the_same_result(
    smoke_run: Path, tmp_path, monkeypatch, capsys
):
    from training.trainer import FaultInjected

    torch.set_num_threads(1)
    out = tmp_path / "run"
    monkeypatch.setenv("INFIMED_FAULT_AT", "medical:2")
    with pytest.raises(FaultInjected):
        main(["finetune", "run", str(SMOKE), "--output-dir", str(out)])
    assert (out / "general" / "final" / "stage_done.json").is_file()
    assert [p.name for p in (out / "medical").glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (out / "medical" / "final").exists() and not (out / "mix").exists()
    monkeypatch.delenv("INFIMED_FAULT_AT")

    assert main(["finetune", "run", str(SMOKE), "--output-dir", str(out)]) == 2  # no silent overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["finetune", "run", str(SMOKE), "--output-dir", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "medical: 4 steps (resumed from checkpoint-2)" in printed

    straight = json.loads((smoke_run / "run_summary.json").read_text())
    resumed = json.loads((out / "run_summary.json").read_text())
    assert [s["resumed_from"] for s in resumed] == [None, "checkpoint-2", None]
    state = json.loads((out / "medical" / "checkpoint-2" / "packed_sampler.json").read_text())
    assert state["batches_consumed"] == 2
    for a, b in zip(straight, resumed, strict=True):
        assert a["steps"] == b["steps"] and abs(a["final_loss"] - b["final_loss"]) <= 1e-6, a["name"]
    wa, wb = _weights(smoke_run / "mix" / "final"), _weights(out / "mix" / "final")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6), k


def test_dry_run_plans_every_stage(infimed_cache, capsys):
    assert main(["finetune", "run", str(SMOKE), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in STAGES:
        assert f"{name}: " in out and "packs of ≤ 512 tokens" in out
    assert "total GiB" in out


def test_bad_pipeline_names_the_file_and_the_problem(tmp_path, capsys, infimed_cache):
    bad = tmp_path / "p.yaml"
    bad.write_text("kind: finetune\nschema_version: 1\nmodel: tiny://tiny\nstages:\n"
                   "  - {name: a, data: [{manifest: nowhere.jsonl}], steps: 1, trainable: {language: lora}}\n")  # fmt: skip
    assert main(["finetune", "run", str(bad), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("finetune run: ") and "nowhere.jsonl" in err and "not found" in err
    pre = tmp_path / "pre.yaml"
    pre.write_text(bad.read_text().replace("kind: finetune", "kind: pretrain"))
    assert main(["finetune", "run", str(pre)]) == 2
    assert "expected 'finetune'" in capsys.readouterr().err
