"""Loss only on assistant tokens, checked on the packed batch the trainer receives: multi-turn
conversations with several images per sample (and a system prompt), packed with another sample."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.training.conftest import write_png_manifest
from training.collator import PackCollator
from training.data import StageDataset, budget_from_processor
from training.format import IGNORE_INDEX
from training.stage import Stage

TURNS = [
    ("system", "You are a careful radiologist."),
    ("user", "<image><image>\nCompare the two chest images."),
    ("assistant", "The second shows a new nodule in the left upper lobe."),
    ("user", "And this follow-up? <image>"),
    ("assistant", "Stable size, no new findings."),
    ("user", "Summarise."),
    ("assistant", "Left upper lobe nodule, stable on follow-up."),
]
CAPTION = "Frontal chest X-ray, clear lungs."


def _runs(ids: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """Contiguous runs of labelled positions (label ≠ -100)."""
    runs, cur = [], []
    for t, lab in zip(ids.tolist(), labels.tolist(), strict=True):
        if lab != IGNORE_INDEX:
            assert lab == t, "a label differs from its input token"
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def test_label_mask_covers_exactly_the_assistant_turns_in_a_packed_multi_image_batch(processor, tmp_path: Path):
    manifest = write_png_manifest(tmp_path / "data", [
        {"id": "conv", "messages": [{"role": r, "content": c} for r, c in TURNS],
         "sizes": [(112, 112), (140, 84), (56, 168)], "seed": 1},
        {"id": "cap", "text": f"<image> {CAPTION}", "sizes": [(84, 84)], "seed": 2},
    ])  # fmt: skip
    stage = Stage.model_validate({"name": "s", "data": [{"manifest": str(manifest)}], "steps": 1,
                                  "max_length": 1024, "trainable": {"language": "lora"}})  # fmt: skip
    ds = StageDataset(stage, processor, base_budget=budget_from_processor(processor))
    [pack] = ds.plan(0).packs
    assert sorted(pack) == [0, 1]  # both samples in one pack
    tok = processor.tokenizer
    collate = PackCollator(pad_token_id=tok.pad_token_id, image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                           spatial_merge_size=ds.budget.merge_size, pad_to_multiple_of=8)  # fmt: skip
    batch = collate([ds[pack]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]

    by_id = {ds.entries[i].sample.id: i for i in pack}
    expected_by_sample = {
        "conv": [c + "<|im_end|>" for r, c in TURNS if r == "assistant"],
        "cap": [CAPTION + "<|im_end|>"],
    }
    expected = [t for i in pack for t in expected_by_sample[ds.entries[i].sample.id]]
    assert [tok.decode(r) for r in _runs(ids, labels)] == expected
    # exactly those tokens, counted independently of the formatter
    n_expected = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in expected)
    assert int((labels != IGNORE_INDEX).sum()) == n_expected
    # every visual token is present (3 + 1 images) and none is labelled
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    visual = sum(sum(ds.visual_tokens(by_id[k])) for k in ("conv", "cap"))
    assert int((ids == image_pad).sum()) == visual and batch["image_grid_thw"].shape[0] == 4
    assert not bool((labels[ids == image_pad] != IGNORE_INDEX).any())
    # user and system text never carries a label
    for role, content in TURNS:
        if role != "assistant":
            text = content.replace("<image>", "").strip().split("\n")[-1]
            assert text not in "".join(tok.decode(r) for r in _runs(ids, labels))
