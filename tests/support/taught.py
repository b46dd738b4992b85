"""The one trained tiny-model fixture: a LoRA adapter taught a fixed answer to a fixed image question.

Shared by the serving, fine-tuning and evaluation tests (built once per test session, cached by the
tiny model's checksum). Plain PEFT on the language model's attention projections, so vLLM can serve
the adapter with ``--enable-lora`` exactly as it serves an adapter from ``infimed finetune export``.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

QUESTION = "What does this test card say?"
ANSWER = "hello infimed"
ADAPTER_NAME = "tiny-taught"


def taught_image() -> Image.Image:
    """A fixed 112×112 image (already within the tiny model's pixel budget: no resize anywhere)."""
    img = Image.new("RGB", (112, 112), (20, 20, 20))
    d = ImageDraw.Draw(img)
    d.ellipse((20, 30, 60, 70), fill=(230, 230, 230))
    d.rectangle((70, 20, 100, 95), fill=(120, 180, 60))
    return img


def messages() -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]


def train_taught_adapter(base_dir: Path, out_dir: Path, *, steps: int = 80, seed: int = 0, lr: float = 5e-3, verbose: bool = False) -> Path:
    """Train a rank-8 LoRA adapter on the tiny model until it answers ``ANSWER``; save it to ``out_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(base_dir)
    model = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32)
    # Language-model modules only ("layers.N.mlp.*" leaves the vision tower's "blocks.N.mlp.*" alone).
    n_layers = model.config.text_config.num_hidden_layers
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"] + [f"layers.{i}.mlp.{m}" for i in range(n_layers) for m in ("gate_proj", "up_proj", "down_proj")]
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets, bias="none")
    model = get_peft_model(model, cfg)

    prompt = processor.apply_chat_template(messages(), add_generation_prompt=True, tokenize=False)
    full = prompt + ANSWER + "<|im_end|>\n"
    batch = processor(text=[full], images=[taught_image()], return_tensors="pt")
    n_prompt = processor(text=[prompt], images=[taught_image()], return_tensors="pt")["input_ids"].shape[1]
    labels = batch["input_ids"].clone()
    labels[:, :n_prompt] = -100

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss = None
    for _ in range(steps):
        out = model(**batch, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        loss = out.loss.item()
        if verbose and _ % 20 == 0:
            print(_, loss)
        if loss < 0.05:
            break
    model.save_pretrained(out_dir)
    (out_dir / "taught.json").write_text(json.dumps({"question": QUESTION, "answer": ANSWER, "final_loss": loss}))
    return out_dir
