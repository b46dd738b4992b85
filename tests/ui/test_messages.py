"""Pure functions of the UI: options → wire extension, study + history → OpenAI messages, chunks → text."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from core.manifest import RenderSpec
from ui.messages import (
    OMITTED_IMAGES,
    ImagingOptions,
    StreamText,
    StudyItem,
    Turn,
    build_messages,
    chat_display,
    describe_options,
    dicom_extension,
    image_parts,
    stream_to_text,
)


# --------------------------------------------------------------------------- options → extension
@pytest.mark.parametrize(
    ("opts", "frames_total", "expected"),
    [
        (ImagingOptions(), 1, {"window": "auto"}),
        (ImagingOptions(window="lung"), 1, {"window": "lung"}),
        (ImagingOptions(window="custom", center=-600, width=1500), 1, {"window": {"center": -600.0, "width": 1500.0}}),
        (ImagingOptions(window="bone", composite=True), 1, {"composite": "ct3"}),  # composite sets its own windows
        (ImagingOptions(frame_mode="current", frame=3), 10, {"window": "auto", "frames": [3]}),
        (ImagingOptions(frame_mode="current", frame=99), 10, {"window": "auto", "frames": [9]}),  # clamped
        (ImagingOptions(frame_mode="uniform", uniform_n=4), 10, {"window": "auto", "frames": "uniform:4"}),
        (ImagingOptions(frame_mode="uniform", uniform_n=8), 3, {"window": "auto", "frames": "uniform:3"}),
        (ImagingOptions(frame_mode="auto"), 5, {"window": "auto", "frames": "auto"}),
        (ImagingOptions(frame_mode="current", frame=2), 1, {"window": "auto"}),  # single frame: no frames key
        (ImagingOptions(window="liver"), 1, {"window": {"center": 30.0, "width": 150.0}}),  # a UI-only preset
        (ImagingOptions(window="subdural"), 1, {"window": {"center": 75.0, "width": 215.0}}),
    ],
)
def test_dicom_extension(opts, frames_total, expected):
    ext = dicom_extension(opts, frames_total=frames_total)
    assert ext == expected
    RenderSpec.model_validate(ext)  # always valid for the gateway's own schema


def test_every_preset_is_valid_on_the_wire():
    from ui.messages import SERVER_PRESETS, WINDOW_PRESETS

    for name in WINDOW_PRESETS:
        ext = dicom_extension(ImagingOptions(window=name))
        RenderSpec.model_validate(ext)
        assert (ext["window"] == name) == (name in SERVER_PRESETS)


def test_dicom_extension_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown window preset"):
        dicom_extension(ImagingOptions(window="spleen"))
    with pytest.raises(ValueError, match="width must be > 0"):
        dicom_extension(ImagingOptions(window="custom", width=0))


def test_describe_options():
    assert describe_options({"window": "lung", "frames": [2]}) == "window lung · frames [2]"
    assert describe_options({"window": {"center": 40.0, "width": 400.0}}) == "window C 40 / W 400"
    assert describe_options({"composite": "ct3"}) == "CT 3-window composite"


# --------------------------------------------------------------------------- study → parts
def test_image_parts_dicom_series_and_png(tmp_path):
    ct_bytes = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG fake")
    items = [
        StudyItem(kind="series", paths=[tmp_path / "1.dcm", tmp_path / "2.dcm"], label="CT series", frames_total=2),
        StudyItem(kind="image", paths=[png], label="PNG", mime="image/png"),
    ]
    for p in items[0].paths:
        p.write_bytes(ct_bytes)
    parts = image_parts(items, ImagingOptions(window="lung", frame_mode="current", frame=1))
    assert len(parts) == 3
    for p in parts[:2]:
        assert p["image_url"]["url"].startswith("data:application/dicom;base64,")
        assert p["image_url"]["dicom"] == {"window": "lung", "frames": [1]}  # same options on every file of a series
    assert base64.b64decode(parts[0]["image_url"]["url"].split(",", 1)[1]) == ct_bytes
    assert parts[2] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()},
    }
    assert "dicom" not in parts[2]["image_url"]


# --------------------------------------------------------------------------- history → messages
IMG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def test_build_messages_multi_turn():
    turns = [
        Turn(question="What is it?", attachments=[IMG], answer="A chest CT."),
        Turn(question="Any nodules?", answer="One, right lung."),
        Turn(question="Size?"),
    ]
    msgs = build_messages(turns, system="Be brief.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"] == "Be brief."
    assert msgs[1]["content"] == [IMG, {"type": "text", "text": "What is it?"}]
    assert msgs[2]["content"] == "A chest CT."
    assert msgs[-1] == {"role": "user", "content": "Size?"}


def test_build_messages_keeps_only_latest_images_and_drops_failed_turns():
    turns = [
        Turn(question="first", attachments=[IMG], answer="a1"),
        Turn(question="broken", answer="", error="engine down"),
        Turn(question="second", attachments=[IMG, IMG], answer="a2"),
        Turn(question="third"),
    ]
    msgs = build_messages(turns)
    assert msgs[0] == {"role": "user", "content": f"{OMITTED_IMAGES}\nfirst"}
    assert all("broken" not in str(m["content"]) for m in msgs)
    assert msgs[2]["content"][:2] == [IMG, IMG]
    assert sum(1 for m in msgs if isinstance(m["content"], list)) == 1
    assert build_messages([Turn(question="q", attachments=[IMG])], keep_images=0)[0]["content"].startswith(
        OMITTED_IMAGES
    )


def test_build_messages_keeps_a_stopped_partial_answer():
    turns = [Turn(question="long?", answer="partial text", stopped=True), Turn(question="go on")]
    msgs = build_messages(turns)
    assert msgs[1] == {"role": "assistant", "content": "partial text"}


# --------------------------------------------------------------------------- chunks → text
def _chunk(content=None, finish=None, **extra):
    choice = {"index": 0, "delta": {"content": content} if content is not None else {}, "finish_reason": finish}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "tiny", "choices": [choice], **extra}


def test_stream_text_accumulates_and_reads_extensions():
    records = [{"source_kind": "dicom", "frames": [0]}]
    chunks = [
        _chunk(""),  # role-only first chunk
        _chunk("The "),
        _chunk("lungs"),
        _chunk(" are clear.", finish="stop"),
        {
            "id": "infimed-x",
            "object": "chat.completion.chunk",
            "model": "tiny",
            "choices": [],
            "infimed": {"render_records": records},
        },
        {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}},
    ]
    acc = StreamText()
    deltas = [acc.feed(c) for c in chunks]
    assert deltas[:4] == ["", "The ", "lungs", " are clear."]
    assert acc.text == "The lungs are clear." == stream_to_text(chunks)
    assert acc.finish_reason == "stop" and acc.id == "chatcmpl-1" and acc.model == "tiny"
    assert acc.records == records and acc.usage == {"prompt_tokens": 5, "completion_tokens": 4}


def test_stream_text_ignores_other_choices():
    c = {"choices": [{"index": 1, "delta": {"content": "other"}}, {"index": 0, "delta": {"content": "mine"}}]}
    assert stream_to_text([c]) == "mine"


def test_sdk_chunks_keep_the_gateway_extension():
    """The openai SDK's chunk objects carry unknown fields through model_dump (what the UI feeds StreamText)."""
    from openai.types.chat import ChatCompletionChunk

    raw = {
        "id": "i",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "infimed": {"render_records": [{"frames": [2]}]},
    }
    dumped = ChatCompletionChunk.model_validate(raw).model_dump(exclude_unset=True)
    acc = StreamText()
    acc.feed(dumped)
    assert acc.records == [{"frames": [2]}]


def test_chat_display_marks_stops_and_errors():
    turns = [Turn(question="q1", answer="a1", settings=["CT: window lung"]), Turn(question="q2", answer="part", stopped=True),
             Turn(question="q3", error="refused: burned-in text")]  # fmt: skip
    shown = chat_display(turns)
    assert len(shown) == 6  # one assistant message per turn: index // 2 is the turn
    assert "CT: window lung" in shown[0]["content"]
    assert shown[3]["content"].startswith("part") and "stopped by the user" in shown[3]["content"]
    assert "burned-in text" in shown[5]["content"]
