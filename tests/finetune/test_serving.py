"""The taught tiny model — trained by `infimed finetune run`, exported by `infimed finetune export` — served
by vLLM behind the gateway and asked through the official `openai` client: as a LoRA adapter (the session
gateway) and as a merged model (one extra engine). The adapter's greedy output equals transformers + PEFT's."""

from __future__ import annotations

import json

import pytest

from tests.conftest import png_data_url
from tests.support.taught import ADAPTER_NAME, ANSWER, QUESTION, messages, taught_image

pytestmark = [pytest.mark.engine, pytest.mark.slow]
N_TOKENS = 12
MARGIN = 1e-4


def _ask(client, model: str, question: str, **kw):
    content = [
        {"type": "image_url", "image_url": {"url": png_data_url(taught_image())}},
        {"type": "text", "text": question},
    ]
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], temperature=0, **kw
    )


def test_adapter_export_is_served_by_vllm_and_answers_what_it_was_taught(gateway, taught_model):
    cfg = json.loads((taught_model.adapter / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["base_model_name_or_path"] == str(gateway.model_dir)  # two rank-4 stages, stacked
    assert gateway.lora == ADAPTER_NAME and gateway.adapter_dir == taught_model.adapter
    c = gateway.client()
    assert ADAPTER_NAME in {m.id for m in c.models.list().data}
    taught = _ask(c, ADAPTER_NAME, QUESTION, max_tokens=16)
    assert taught.choices[0].message.content == ANSWER
    assert (
        _ask(c, gateway.model, QUESTION, max_tokens=16).choices[0].message.content != ANSWER
    )  # the base was not taught


def test_served_adapter_equals_transformers_and_peft_greedy(gateway, taught_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(gateway.model_dir)
    base = AutoModelForImageTextToText.from_pretrained(gateway.model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, taught_model.adapter).eval()
    model.generation_config.eos_token_id = None  # like vLLM's ignore_eos
    c = gateway.client()
    compared = 0
    for question in (QUESTION, "Describe the findings.", "Is there a nodule? Answer yes or no."):
        r = _ask(c, ADAPTER_NAME, question, max_tokens=N_TOKENS, logprobs=True, top_logprobs=2,
                 extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True, "skip_special_tokens": False})  # fmt: skip
        steps = r.choices[0].logprobs.content
        vllm_ids = [int(s.token.split(":")[1]) for s in steps]
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        batch = processor(text=[prompt], images=[taught_image()], return_tensors="pt")
        assert r.usage.prompt_tokens == batch["input_ids"].shape[1], "vLLM and transformers see different prompts"
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=N_TOKENS, do_sample=False)
        hf_ids = out[0, batch["input_ids"].shape[1] :].tolist()
        for step, (a, b) in enumerate(zip(vllm_ids, hf_ids, strict=False)):
            top = steps[step].top_logprobs
            if len(top) > 1 and top[0].logprob - top[1].logprob < MARGIN:
                break  # a near-tie: past it both continuations are legitimate
            assert a == b, f"{question!r} step {step}: vLLM {a} vs transformers+peft {b}"
            compared += 1
        if question == QUESTION:
            assert processor.tokenizer.decode(hf_ids, skip_special_tokens=True).startswith(ANSWER)
    assert compared >= 2 * N_TOKENS


def test_merged_export_loads_in_transformers_and_answers(taught_model):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(taught_model.merged)  # processor + chat template travelled
    model = AutoModelForImageTextToText.from_pretrained(taught_model.merged, dtype=torch.float32).eval()
    assert model.config.text_config.use_cache  # switched back on for inference
    prompt = processor.apply_chat_template(messages(), add_generation_prompt=True, tokenize=False)
    batch = processor(text=[prompt], images=[taught_image()], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    assert processor.tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True) == ANSWER


def test_merged_export_is_served_by_vllm_and_answers_what_it_was_taught(merged_gateway):
    c = merged_gateway.client()
    assert [m.id for m in c.models.list().data] == ["tiny-taught-merged"]
    r = _ask(c, "tiny-taught-merged", QUESTION, max_tokens=16)
    assert r.choices[0].message.content == ANSWER
    stream = _ask(c, "tiny-taught-merged", QUESTION, max_tokens=16, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == ANSWER


def test_eval_results_of_the_served_model_go_into_the_model_card(merged_gateway, taught_model, tmp_path):
    """`infimed eval` on the taught data through the merged model's gateway, then export with --eval."""
    from infimed.cli import main

    manifest = taught_model.root / "data" / "manifest.jsonl"
    ev = tmp_path / "eval"
    assert main(["eval", "--base-url", merged_gateway.base_url, "--api-key", merged_gateway.api_key,
                 "--model", "tiny-taught-merged", "--benchmarks", f"manifest:{manifest}", "--out", str(ev),
                 "--data-dir", str(tmp_path / "data"), "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads(next(ev.glob("*/metrics.json")).read_text())
    out = tmp_path / "export"
    assert main(["finetune", "export", str(taught_model.run), "--out", str(out), "--mode", "adapter",
                 "--eval", str(ev)]) == 0  # fmt: skip
    card = json.loads((out / "model_card.json").read_text())
    [bench] = card["evaluation"][0]["benchmarks"]
    assert bench["n"] == metrics["n"] == 1 and bench["accuracy"] == metrics["overall"]["acc"]
    readme = (out / "README.md").read_text()
    assert "## Evaluation" in readme and bench["benchmark"] in readme
