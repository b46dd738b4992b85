from __future__ import annotations

import json

import pytest

from core.manifest import (
    SCHEMA_VERSION,
    ManifestError,
    Sample,
    dump_sample,
    json_schema,
    load_manifest,
    read_manifest,
    write_manifest,
)

VQA = {
    "schema_version": 1,
    "id": "ph-0001-q0",
    "task": "vqa",
    "messages": [
        {"role": "user", "content": "<image>\nIs there a nodule in the left lung?"},
        {"role": "assistant", "content": "yes"},
    ],
    "images": [{"path": "images/ph-0001.dcm", "kind": "dicom", "width": 256, "height": 256, "render": {"window": "lung"}}],
    "meta": {"modality": "CT", "question_type": "presence", "answer_type": "closed", "answer": "yes",
             "options": ["yes", "no"], "split": "test", "patient_hash": "ab12", "custom_field": 3},
}  # fmt: skip
CAPTION = {"id": "c1", "task": "caption", "text": "<image> A chest CT phantom with two nodules.", "images": [{"path": "a.png"}]}
CHAT = {
    "id": "chat-1",
    "task": "chat",
    "messages": [
        {"role": "user", "content": [{"type": "image", "index": 0}, {"type": "image", "index": 1}, {"type": "text", "text": "Compare."}]},
        {"role": "assistant", "content": "The second shows an effusion."},
        {"role": "user", "content": "Which side?"},
        {"role": "assistant", "content": "Right."},
    ],
    "images": [{"path": "x1.png", "max_pixels": 200704}, {"path": "s/", "kind": "series", "files": ["s/1.dcm", "s/2.dcm"],
               "render": {"window": {"center": 40, "width": 400}, "frames": "uniform:8"}}],
}  # fmt: skip


def test_round_trip_is_lossless(tmp_path):
    path = tmp_path / "m.jsonl"
    assert write_manifest(path, [VQA, CAPTION, CHAT]) == 3
    samples = load_manifest(path)
    assert [s.id for s in samples] == ["ph-0001-q0", "c1", "chat-1"]
    # written → read → written again gives the same bytes
    path2 = tmp_path / "m2.jsonl"
    write_manifest(path2, samples)
    assert path.read_bytes() == path2.read_bytes()
    # unknown meta keys survive (readers carry source-specific fields)
    assert samples[0].meta.model_extra == {"custom_field": 3}
    assert samples[0].images[0].render.window == "lung"
    assert samples[2].images[1].render.window == {"center": 40.0, "width": 400.0}


def test_image_slots_must_match_images():
    bad = dict(CAPTION, images=[])
    with pytest.raises(ValueError, match="1 image slot"):
        Sample.model_validate(bad)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"task": "segmentation"}, "task"),
        ({"schema_version": 99}, "schema_version 99"),
        ({"messages": []}, "empty"),
        ({"text": "x"}, "exactly one of"),
        ({"images": [{"path": "a", "render": {"window": {"center": 1, "width": 0}}}]}, "width"),
        ({"images": [{"path": "a", "render": {"frames": "every:2"}}]}, "uniform:N"),
        ({"images": [{"path": "s", "kind": "series"}]}, "files"),
        ({"id": ""}, "id"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_samples_are_refused(patch, message):
    with pytest.raises(ValueError, match=message):
        Sample.model_validate(dict(VQA, **patch))


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(VQA) + "\n\n{not json\n")
    it = read_manifest(path)
    assert next(it).id == "ph-0001-q0"
    with pytest.raises(ManifestError, match=r"bad\.jsonl:3: not valid JSON"):
        next(it)
    path.write_text(json.dumps(dict(VQA, task="nope")) + "\n")
    with pytest.raises(ManifestError, match=r"bad\.jsonl:1: invalid sample: task"):
        load_manifest(path)
    with pytest.raises(ManifestError, match="cannot open"):
        load_manifest(tmp_path / "missing.jsonl")


def test_write_is_atomic(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest(path, [VQA])
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_manifest(path, [VQA, {"id": "broken"}])
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]  # no temp file left behind


def test_json_schema_validates_a_written_line():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    assert schema["properties"]["schema_version"]["default"] == SCHEMA_VERSION
    for record in (VQA, CAPTION, CHAT):
        line = json.loads(dump_sample(Sample.model_validate(record)))
        jsonschema.validate(line, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "x", "task": "vqa", "images": "nope"}, schema)


def test_resolve_is_relative_to_manifest(tmp_path):
    s = Sample.model_validate(VQA)
    assert s.resolve(tmp_path, s.images[0]) == tmp_path / "images" / "ph-0001.dcm"
