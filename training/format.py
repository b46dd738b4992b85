"""Turn a manifest sample into token ids and labels with the model's own chat template.

Steps: sample → chat messages (``<image>`` slots become image parts, a slot that renders to several
images becomes several parts) → the tokenizer's chat template (the same one ``serve`` uses) → token ids
with **one** image pad per image → labels on assistant turns only (content and the closing
``<|im_end|>``; the ``<|im_start|>assistant\\n`` header and every user/system token are ``-100``).

Captions (samples with ``text``) are formatted as one exchange: the user turn holds the images (and the
optional ``caption_prompt``), the assistant turn holds the caption; pretraining therefore learns the
caption under the same template the model is served with.

The text part never depends on image sizes, so the planner counts ``len(input_ids)`` once per sample
and adds ``visual_tokens - 1`` per image from :class:`core.budget.PixelBudget`; :func:`expand_images`
produces exactly that many tokens, which a test checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.manifest import IMAGE_TOKEN, Sample

IGNORE_INDEX = -100


class FormatError(ValueError):
    """A sample cannot be formatted (e.g. the template drops an assistant turn)."""


@dataclass(frozen=True)
class FormattedText:
    """Token ids with one image pad per image, their labels, and where the pads are."""

    input_ids: list[int]
    labels: list[int]
    image_positions: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


class ChatFormatter:
    """Formats samples with a tokenizer's chat template; labels only the assistant turns.

    ``tokenizer`` is a fast Hugging Face tokenizer (offset mapping needed) whose chat template renders
    image parts as ``<|vision_start|><|image_pad|><|vision_end|>`` (Qwen-VL family).
    """

    def __init__(self, tokenizer: Any, *, image_token: str = "<|image_pad|>", caption_prompt: str = "") -> None:
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(image_token))
        self.end_token = "<|im_end|>"
        self.caption_prompt = caption_prompt
        if not getattr(tokenizer, "is_fast", False):
            raise FormatError("the chat formatter needs a fast tokenizer (offset mapping)")

    # ------------------------------------------------------------------ messages

    def messages(self, sample: Sample, images_per_slot: list[int] | None = None) -> list[dict[str, Any]]:
        """The sample as chat-template messages; ``images_per_slot[k]`` images for slot ``k`` (default 1)."""
        slots = sample.image_slots()
        per = images_per_slot or [1] * slots
        if len(per) != slots:
            raise FormatError(f"sample {sample.id}: {slots} image slot(s) but {len(per)} image counts")
        counter = iter(per)

        def image_parts() -> list[dict[str, Any]]:
            return [{"type": "image"} for _ in range(next(counter))]

        if sample.text is not None:
            user: list[dict[str, Any]] = []
            for _ in range(slots):
                user.extend(image_parts())
            if self.caption_prompt:
                user.append({"type": "text", "text": self.caption_prompt})
            caption = " ".join(sample.text.replace(IMAGE_TOKEN, " ").split())
            return [
                {"role": "user", "content": user},
                {"role": "assistant", "content": [{"type": "text", "text": caption}]},
            ]

        out: list[dict[str, Any]] = []
        for m in sample.messages or []:
            parts: list[dict[str, Any]] = []
            if isinstance(m.content, str):
                chunks = m.content.split(IMAGE_TOKEN)
                for i, chunk in enumerate(chunks):
                    if i > 0:
                        parts.extend(image_parts())
                    if chunk:
                        parts.append({"type": "text", "text": chunk})
            else:
                for p in m.content:
                    if p.type == "image":
                        parts.extend(image_parts())
                    elif p.text:
                        parts.append({"type": "text", "text": p.text})
            if m.role in ("system", "assistant") and all(p["type"] == "text" for p in parts):
                out.append({"role": m.role, "content": "".join(p["text"] for p in parts)})
            else:
                out.append({"role": m.role, "content": parts})
        return out

    # ------------------------------------------------------------------ tokens

    def _render(self, messages: list[dict[str, Any]], *, generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def format(self, sample: Sample, images_per_slot: list[int] | None = None) -> FormattedText:
        """Token ids (one pad per image), labels on assistant turns, and the pad positions."""
        msgs = self.messages(sample, images_per_slot)
        full = self._render(msgs)
        spans: list[tuple[int, int]] = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            head = self._render(msgs[:i], generation_prompt=True)
            if not full.startswith(head):
                raise FormatError(f"sample {sample.id}: the chat template is not prefix-stable at turn {i}")
            end = full.find(self.end_token, len(head))
            if end < 0:
                raise FormatError(f"sample {sample.id}: assistant turn {i} has no {self.end_token}")
            spans.append((len(head), end + len(self.end_token)))
        if not spans:
            raise FormatError(f"sample {sample.id}: no assistant turn to learn from")
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = list(enc["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        k = 0
        for t, (start, _end) in enumerate(enc["offset_mapping"]):
            while k < len(spans) and start >= spans[k][1]:
                k += 1
            if k < len(spans) and spans[k][0] <= start < spans[k][1]:
                labels[t] = ids[t]
        positions = [t for t, x in enumerate(ids) if x == self.image_token_id]
        for p in positions:
            labels[p] = IGNORE_INDEX
        return FormattedText(ids, labels, positions)


def expand_images(text: FormattedText, visual_tokens: list[int]) -> tuple[list[int], list[int]]:
    """Replace the ``k``-th image pad by ``visual_tokens[k]`` pads (labels ``-100``)."""
    if len(visual_tokens) != len(text.image_positions):
        raise FormatError(f"{len(text.image_positions)} image pad(s) in the text but {len(visual_tokens)} image(s)")
    ids: list[int] = []
    labels: list[int] = []
    prev = 0
    for pos, n in zip(text.image_positions, visual_tokens, strict=True):
        ids.extend(text.input_ids[prev:pos])
        labels.extend(text.labels[prev:pos])
        ids.extend([text.input_ids[pos]] * n)
        labels.extend([IGNORE_INDEX] * n)
        prev = pos + 1
    ids.extend(text.input_ids[prev:])
    labels.extend(text.labels[prev:])
    return ids, labels
