"""Feedback records: comment scrubbed, linking opt-in, flagged answers become a curation manifest."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from PIL import Image

from core.manifest import read_manifest
from ui.feedback import FeedbackStore, feedback_manifest, feedback_record
from ui.messages import Turn


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


TURN = Turn(question="Patient John Smith, MRN: 7654321 — nodule on the left?", answer="Yes, seen on 03/04/2021.",
            model="tiny", request_id="ui-abc", settings=["CT: window lung"], preview=[_png()])  # fmt: skip


def test_record_scrubs_comment_and_links_only_when_asked():
    rec = feedback_record(
        TURN, rating="flag", comment="Wrong. Call me at 555-123-4567 or jane@example.org, MRN: 1234567"
    )
    assert rec["request_id"] == "ui-abc" and rec["model"] == "tiny" and rec["rating"] == "flag"
    for leaked in ("555-123-4567", "jane@example.org", "1234567"):
        assert leaked not in rec["comment"]
    assert "[PHONE]" in rec["comment"] and "[EMAIL]" in rec["comment"]
    assert rec["linked"] is False and "question" not in rec and "answer" not in rec

    linked = feedback_record(TURN, rating="down", comment="", link=True)
    assert linked["linked"] is True and "7654321" not in linked["question"] and "03/04/2021" not in linked["answer"]
    assert linked["settings"] == ["CT: window lung"]


def test_record_refuses_unknown_rating():
    with pytest.raises(ValueError, match="rating must be one of"):
        feedback_record(TURN, rating="meh")


def test_store_appends_private_jsonl_and_builds_a_manifest(tmp_path):
    store = FeedbackStore(tmp_path / "fb")
    store.add(TURN, rating="up", comment="good")
    store.add(TURN, rating="flag", comment="left/right swapped", link=True)
    lines = [json.loads(x) for x in store.path.read_text().splitlines()]
    assert [r["rating"] for r in lines] == ["up", "flag"]
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    assert lines[1]["images"] == ["images/ui-abc-0.png"] and (store.dir / "images/ui-abc-0.png").exists()

    n = feedback_manifest(store.path, tmp_path / "flagged.jsonl")
    samples = list(read_manifest(tmp_path / "flagged.jsonl"))
    assert n == 1 and len(samples) == 1
    s = samples[0]
    assert s.task == "vqa" and s.meta.source == "ui-feedback" and len(s.images) == 1
    assert s.messages[1].text() == lines[1]["answer"]


def test_a_follow_up_links_the_images_in_context(tmp_path):
    follow_up = Turn(question="And the size?", answer="5 mm", model="tiny", request_id="ui-def")
    rec = FeedbackStore(tmp_path).add(follow_up, rating="flag", link=True, seen=TURN)
    assert rec["settings"] == ["CT: window lung"] and rec["images"] == ["images/ui-def-0.png"]
    assert (tmp_path / "images/ui-def-0.png").exists()
