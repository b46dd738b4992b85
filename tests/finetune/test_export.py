"""`infimed finetune export`: the adapter-only refusal rule (checked on tensors), exact stacking of chained
LoRA stages, the merged model folder, and the model card."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from finetune.export import ExportError, export_run
from infimed.cli import main
from training.export import canonical_key, compare_to_base, read_adapter, stack_adapters
from training.provenance import file_sha256

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- the rule, on small tensors

Q = "model.layers.0.self_attn.q_proj.weight"
QKV = "visual.blocks.0.attn.qkv.weight"
MERGER = "visual.merger.mlp.0.weight"
EMBED = "model.embed_tokens.weight"


def _base() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(8, 8, generator=g) for k in (Q, QKV, MERGER, EMBED)}


def _model_dir(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return folder


def _adapter_dir(folder: Path, module: str, *, r: int, alpha: int, seed: int, **extra) -> Path:
    """A PEFT-format adapter (in-memory module names, as PEFT saves them) on one module."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({f"base_model.model.{module}.lora_A.weight": torch.randn(r, 8, generator=g),
               f"base_model.model.{module}.lora_B.weight": torch.randn(8, r, generator=g)},
              str(folder / "adapter_model.safetensors"))  # fmt: skip
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": [module.rsplit(".", 1)[-1]], **extra}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


LM_Q = "model.language_model.layers.0.self_attn.q_proj"  # the in-memory name of Q's module


def test_only_lm_lora_changes_allow_an_adapter(tmp_path):
    base = _base()
    a1 = read_adapter(_adapter_dir(tmp_path / "a1", LM_Q, r=2, alpha=4, seed=1))
    a2 = read_adapter(_adapter_dir(tmp_path / "a2", LM_Q, r=4, alpha=4, seed=2))
    trained = dict(base)
    trained[Q] = base[Q] + (a1.delta(LM_Q) + a2.delta(LM_Q)).float()  # two chained stages, merged
    b, m = _model_dir(tmp_path / "base", base), _model_dir(tmp_path / "m", trained)
    report = compare_to_base(b, m, [a1, a2])
    assert report.adapter_only and report.lora_explained == [Q] and report.reasons() == []
    # one adapter alone does not explain the merged weights of two stages
    assert compare_to_base(b, m, [a2]).lora_mismatch
    # new-style key names (transformers 5 in memory) compare equal to the old ones
    renamed = {k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else "model." + k: v
               for k, v in trained.items()}  # fmt: skip
    assert compare_to_base(b, _model_dir(tmp_path / "new", renamed), [a1, a2]).adapter_only


@pytest.mark.parametrize(
    ("change", "module", "words"),
    [
        (MERGER, "projector", "projector: 1 tensor(s) changed outside LoRA"),
        (QKV, "vision", "vision: 1 tensor(s) changed outside LoRA"),  # e.g. a merged vision LoRA
        (EMBED, "language", "language: 1 tensor(s) changed outside LoRA"),  # full fine-tuning
    ],
)
def test_anything_else_that_changed_refuses_the_adapter(tmp_path, change, module, words):
    base = _base()
    a = read_adapter(_adapter_dir(tmp_path / "a", LM_Q, r=2, alpha=4, seed=1))
    trained = dict(base, **{Q: base[Q] + a.delta(LM_Q).float(), change: base[change] + 1e-3})
    report = compare_to_base(_model_dir(tmp_path / "b", base), _model_dir(tmp_path / "m", trained), [a])
    assert not report.adapter_only and report.changed[module] == [change]
    assert any(words in r for r in report.reasons())


def test_a_lora_layer_that_was_also_trained_in_full_refuses_the_adapter(tmp_path):
    base = _base()
    a = read_adapter(_adapter_dir(tmp_path / "a", LM_Q, r=2, alpha=4, seed=1))
    trained = dict(base, **{Q: base[Q] + a.delta(LM_Q).float() + 1e-2})
    report = compare_to_base(_model_dir(tmp_path / "b", base), _model_dir(tmp_path / "m", trained), [a])
    assert report.lora_mismatch and "also trained in full" in report.reasons()[0]


def test_stacked_adapter_is_exactly_the_sum_of_the_stages(tmp_path):
    other = "model.language_model.layers.0.mlp.up_proj"
    a1 = read_adapter(_adapter_dir(tmp_path / "a1", LM_Q, r=2, alpha=4, seed=1))
    a2 = read_adapter(_adapter_dir(tmp_path / "a2", other, r=4, alpha=16, seed=2, use_rslora=True))
    stacked = read_adapter(stack_adapters([a1, a2], tmp_path / "s", base_model="/models/base"))
    assert stacked.rank == 6 and stacked.scale == 1.0
    assert torch.allclose(stacked.delta(LM_Q), a1.delta(LM_Q), atol=1e-6)
    assert torch.allclose(stacked.delta(other), a2.delta(other), atol=1e-6)  # rsLoRA scale alpha/sqrt(r) folded in
    assert stacked.config["base_model_name_or_path"] == "/models/base"
    assert sorted(stacked.config["target_modules"]) == sorted([LM_Q, other])  # targets differed: exact paths


# --------------------------------------------------------------------------- on a real run


def test_adapter_export_of_the_smoke_run_is_refused_and_merged_written(smoke_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["finetune", "export", str(smoke_run), "--out", str(out), "--mode", "adapter"]) == 0
    err = capsys.readouterr().err
    assert "adapter export refused" in err and "stage 'general' trained the projector in full" in err
    assert "projector:" in err and "tensor(s) changed outside LoRA" in err
    for name in ("model.safetensors", "config.json", "chat_template.jinja", "tokenizer.json",
                 "preprocessor_config.json", "README.md", "model_card.json", "training_pipeline.yaml"):  # fmt: skip
        assert (out / name).is_file(), name
    assert not (out / "adapter_model.safetensors").exists() and not (out / "adapter").exists()
    card = json.loads((out / "model_card.json").read_text())
    assert card["export"]["mode"] == "merged" and card["export"]["requested_mode"] == "adapter"
    assert any("projector" in r for r in card["export"]["adapter_refused_because"])
    assert "adapter export refused" in (out / "README.md").read_text()
    # the merged weights are the last stage's, under the names transformers and vLLM read
    exported, final = load_file(out / "model.safetensors"), load_file(smoke_run / "mix" / "final" / "model.safetensors")
    assert exported.keys() == final.keys() and all(torch.equal(exported[k], final[k]) for k in final)
    assert all(canonical_key(k) == k for k in exported)


def test_merged_export_loads_in_transformers(smoke_run, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "m"
    result = export_run(smoke_run, out, mode="merged")
    assert result.mode == "merged" and result.refusal is None
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(out)
    assert processor.tokenizer.chat_template and model.config.text_config.use_cache
    ref = AutoModelForImageTextToText.from_pretrained(smoke_run / "mix" / "final", dtype=torch.float32)
    sd, rd = model.state_dict(), ref.state_dict()
    assert all(torch.equal(sd[k], rd[k]) for k in rd)


def test_model_card_names_base_configs_data_hashes_and_code_version(smoke_run, tmp_path):
    export_run(smoke_run, tmp_path / "m", mode="merged", name="ward7-smoke")
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    run_config = json.loads((smoke_run / "run_config.json").read_text())
    assert card["name"] == "ward7-smoke" and card["base_model"] == run_config["model"]
    assert card["config"] == run_config and [s["name"] for s in card["stages"]] == ["general", "medical", "mix"]
    assert card["stages"][0]["trainable"] == {"vision": "frozen", "projector": "full", "language": "lora"}
    for path, m in card["data"].items():
        assert m["sha256"] == file_sha256(path) and m["samples"] > 0
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    assert card["code"]["git_sha"] == head.stdout.strip()
    assert card["libraries"]["torch"] and card["libraries"]["transformers"]
    assert "NOT" in card["intended_use"] and "clinical decisions" in card["intended_use"]
    readme = (tmp_path / "m" / "README.md").read_text()
    assert readme.startswith("---\nbase_model: ") and "## Intended use" in readme and card["code"]["git_sha"] in readme
    assert "No evaluation results were attached" in readme


def test_export_refuses_an_unfinished_run_and_a_used_folder(smoke_run, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(smoke_run, partial, ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
    (partial / "mix" / "final" / "stage_done.json").unlink()
    with pytest.raises(ExportError, match=r"stage 'mix' has not finished.*--resume"):
        export_run(partial, tmp_path / "x")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("x")
    assert main(["finetune", "export", str(smoke_run), "--out", str(used)]) == 2
    assert "not empty" in capsys.readouterr().err and (used / "keep.txt").exists()
    assert main(["finetune", "export", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "no run_config.json" in capsys.readouterr().err


def test_the_refusal_names_what_the_configuration_trained(tmp_path):
    from finetune.export import adapter_blockers_from_config
    from training.stage import Stage

    def stage(name, **trainable):
        return Stage.model_validate({"name": name, "data": [{"manifest": "m.jsonl"}], "steps": 1,
                                     "trainable": {"vision": "frozen", "projector": "frozen", "language": "lora"} | trainable})  # fmt: skip

    saved = read_adapter(_adapter_dir(tmp_path / "a", LM_Q, r=2, alpha=4, seed=1, modules_to_save=["lm_head"]))
    reasons = adapter_blockers_from_config([stage("one"), stage("two", vision="lora")], [saved])
    assert reasons == [
        "stage 'two' trained the vision tower with LoRA (trainable.vision: lora)",
        f"{saved.path}: modules_to_save ['lm_head'] are full weights, not LoRA",
    ]
    assert adapter_blockers_from_config([stage("one")], []) == []
    assert "the language model in full" in adapter_blockers_from_config([stage("f", language="full")], [])[0]


def test_merged_export_works_without_the_base_but_an_adapter_needs_it(smoke_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(smoke_run, moved, ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
    cfg = json.loads((moved / "run_config.json").read_text())
    cfg["model"] = str(tmp_path / "base-was-deleted")
    (moved / "run_config.json").write_text(json.dumps(cfg))
    result = export_run(moved, tmp_path / "m", mode="merged")
    assert result.changes is None and (tmp_path / "m" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "m" / "model_card.json").read_text())["changes_vs_base"] is None
    with pytest.raises(ExportError, match="base-was-deleted: base model is neither a folder nor in the local"):
        export_run(moved, tmp_path / "a", mode="adapter")


def test_merged_export_casts_to_the_requested_dtype(smoke_run, tmp_path):
    from transformers import AutoModelForImageTextToText

    export_run(smoke_run, tmp_path / "bf16", mode="merged", dtype="bfloat16")
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    final = load_file(smoke_run / "mix" / "final" / "model.safetensors")
    assert all(torch.equal(weights[k], final[k].to(torch.bfloat16)) for k in final)
