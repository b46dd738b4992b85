"""The chat formatter: the model's own template, labels exactly on the assistant turns."""

from __future__ import annotations

import pytest

from core.manifest import Sample
from training.format import IGNORE_INDEX, ChatFormatter, FormatError, expand_images


def _labelled_text(tok, text) -> list[str]:
    """The labelled spans, decoded one contiguous run at a time."""
    runs, cur = [], []
    for t, lab in zip(text.input_ids, text.labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == t
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_labels_cover_exactly_the_assistant_turns(processor):
    tok = processor.tokenizer
    sample = Sample.model_validate({"id": "q", "task": "vqa", "images": [{"path": "a.png"}], "messages": [
        {"role": "system", "content": "You are a radiologist."},
        {"role": "user", "content": "<image>\nIs there a nodule?"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "Which side?"},
        {"role": "assistant", "content": "the left lung"}]})  # fmt: skip
    f = ChatFormatter(tok)
    text = f.format(sample)
    assert _labelled_text(tok, text) == ["yes<|im_end|>", "the left lung<|im_end|>"]
    rendered = tok.decode(text.input_ids)
    assert rendered == tok.apply_chat_template(f.messages(sample), tokenize=False)  # the model's own template
    assert "You are a radiologist." in rendered and len(text.image_positions) == 1


def test_caption_is_the_assistant_turn_and_slots_expand(processor):
    tok = processor.tokenizer
    sample = Sample.model_validate({"id": "c", "task": "caption", "text": "<image><image> Two views of the chest.",
                                    "images": [{"path": "a.png"}, {"path": "b.dcm", "kind": "dicom"}]})  # fmt: skip
    text = ChatFormatter(tok).format(sample, [1, 3])  # the DICOM slot renders three frames
    assert _labelled_text(tok, text) == ["Two views of the chest.<|im_end|>"]
    assert len(text.image_positions) == 4
    ids, labels = expand_images(text, [4, 6, 6, 6])
    assert (
        len(ids) == len(text.input_ids) + 3 + 5 * 3
        and sum(1 for x in labels if x != IGNORE_INDEX) == text.trained_tokens
    )
    with pytest.raises(FormatError):
        expand_images(text, [4])


def test_a_sample_without_assistant_turn_is_refused(processor):
    sample = Sample.model_validate({"id": "u", "task": "chat", "messages": [{"role": "user", "content": "hello"}]})
    with pytest.raises(FormatError, match="no assistant turn"):
        ChatFormatter(processor.tokenizer).format(sample)
