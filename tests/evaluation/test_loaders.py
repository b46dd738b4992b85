from __future__ import annotations

import json
import logging

import pytest

from core.manifest import write_manifest
from evaluation import PUBLIC, REGISTRY, BenchmarkDataError, load_benchmark


def test_every_public_benchmark_and_phantoms_is_registered():
    assert set(PUBLIC) | {"phantoms"} <= set(REGISTRY)


@pytest.mark.parametrize(
    ("name", "n", "n_closed"),
    [
        ("vqa-rad", 4, 2),
        ("slake", 4, 3),
        ("pathvqa", 2, 1),
        ("pmc-vqa", 3, 3),
        ("omnimedvqa", 2, 2),
        ("mmmu-med", 5, 4),
        ("medxpertqa", 2, 2),
    ],
)
def test_loaders_read_their_layouts(data_dir, tmp_path, name, n, n_closed):
    bench = load_benchmark(name, data_dir, image_dir=tmp_path / "img")
    assert len(bench) == n
    assert sum(s.meta.answer_type == "closed" for s in bench.samples) == n_closed
    for s in bench.samples:
        assert s.meta.split == "test" and s.meta.answer
        assert s.meta.benchmark == name
        assert s.image_slots() == len(s.images)
        for ref in s.images:
            assert s.resolve(bench.root, ref).is_file()


def test_vqa_rad_prompts_follow_medevalkit(data_dir, tmp_path):
    bench = load_benchmark("vqa-rad", data_dir, image_dir=tmp_path / "img")
    by_q = {s.meta.question: s for s in bench.samples}
    closed = by_q["Is there a fracture?"]
    assert closed.messages[0].content == "<image>\nIs there a fracture?\nPlease output 'yes' or 'no'(no extra output)."
    assert closed.meta.options == ["yes", "no"]
    open_ = by_q["What organ is shown?"]
    assert open_.messages[0].content.endswith("\nPlease answer the question concisely.")
    assert open_.meta.answer_type == "open"


def test_reasoning_prompts_ask_for_boxed(data_dir, tmp_path):
    bench = load_benchmark("pmc-vqa", data_dir, image_dir=tmp_path / "img", reasoning=True)
    assert "\\boxed{}" in bench.samples[0].messages[0].content


def test_multiple_choice_answers_and_options(data_dir, tmp_path):
    pmc = load_benchmark("pmc-vqa", data_dir, image_dir=tmp_path / "img").samples[0]
    assert pmc.meta.options == ["Axial", "Coronal", "Sagittal", "Oblique"]  # "A:" labels stripped
    assert (pmc.meta.answer, pmc.meta.answer_index) == ("Coronal", 1)
    assert "A. Axial\nB. Coronal" in pmc.messages[0].content
    omni = load_benchmark("omnimedvqa", data_dir, image_dir=tmp_path / "img").samples[1]
    assert omni.meta.options == ["normal", "abnormal"] and omni.meta.answer_index == 0
    assert omni.meta.modality == "X-Ray" and omni.meta.question_type == "Disease Diagnosis"
    mx = load_benchmark("medxpertqa", data_dir, image_dir=tmp_path / "img").samples[0]
    assert len(mx.images) == 2 and mx.meta.answer_index == 3 and mx.meta.answer == "d"
    assert mx.messages[0].content.startswith("<image>\n<image>\n")


def test_mmmu_open_question_and_images(data_dir, tmp_path):
    bench = load_benchmark("mmmu-med", data_dir, image_dir=tmp_path / "img")
    by_type = {s.meta.question_type: s for s in bench.samples}
    pharmacy = by_type["Pharmacy"]
    assert pharmacy.meta.answer_type == "open" and pharmacy.images == [] and pharmacy.meta.answer == "aspirin"
    clinical = by_type["Clinical_Medicine"]
    assert clinical.meta.answer == "beta" and len(clinical.images) == 1
    assert "(A) alpha\n(B) beta" in clinical.messages[0].content


def test_slake_keeps_language_and_types(data_dir, tmp_path):
    bench = load_benchmark("slake", data_dir, image_dir=tmp_path / "img")
    zh = [s for s in bench.samples if s.meta.lang == "zh"]
    assert len(zh) == 1 and zh[0].messages[0].content.endswith("请用一个单词或者短语回答该问题。")
    assert {s.meta.question_type for s in bench.samples} == {"Modality", "Organ"}


def test_vqa_rad_original_json_layout(tmp_path, make_png):
    root = tmp_path / "data" / "VQA_RAD"
    make_png(root / "VQA_RAD Image Folder" / "synpic1.jpg", 1)
    items = [
        {
            "qid": 1,
            "image_name": "synpic1.jpg",
            "question": "Is it CT or MRI?",
            "answer": "CT",
            "answer_type": "CLOSED",
            "question_type": "MODALITY",
            "phrase_type": "test_freeform",
            "image_organ": "HEAD",
        },
        {
            "qid": 2,
            "image_name": "synpic1.jpg",
            "question": "train item",
            "answer": "no",
            "answer_type": "CLOSED",
            "question_type": "PRES",
            "phrase_type": "freeform",
            "image_organ": "HEAD",
        },
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(items))
    bench = load_benchmark("vqa-rad", tmp_path / "data")
    assert [s.id for s in bench.samples] == ["vqa-rad-1"]
    s = bench.samples[0]
    assert s.meta.answer_type == "closed" and s.meta.options is None and s.meta.body_part == "HEAD"
    assert s.messages[0].content.endswith("Answer the question using a single word or phrase.")


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("vqa-rad", "VQA_RAD"),
        ("slake", "test.json"),
        ("pathvqa", "test-*.parquet"),
        ("pmc-vqa", "test_2.csv"),
        ("omnimedvqa", "Open-access"),
        ("mmmu-med", "MMMU"),
        ("medxpertqa", "MM/test.jsonl"),
    ],
)
def test_missing_files_say_what_to_put_where(tmp_path, name, expect):
    with pytest.raises(BenchmarkDataError) as err:
        load_benchmark(name, tmp_path)
    msg = str(err.value)
    assert expect in msg and "Expected layout" in msg and str(tmp_path) in msg


def test_missing_image_names_the_file(data_dir, tmp_path):
    (data_dir / "SLAKE" / "imgs" / "xmlab1" / "source.jpg").unlink()
    with pytest.raises(BenchmarkDataError, match="xmlab1/source.jpg"):
        load_benchmark("slake", data_dir)


def test_unknown_benchmark_lists_known_ones(tmp_path):
    with pytest.raises(BenchmarkDataError, match="known: .*vqa-rad"):
        load_benchmark("imagenet", tmp_path)


def test_manifest_benchmark_takes_the_test_split(tmp_path, make_phantom_records, make_png):
    records = make_phantom_records(2, split="test") + make_phantom_records(2, split="train")
    for r in records:
        make_png(tmp_path / r["images"][0]["path"], 1)
    write_manifest(tmp_path / "m.jsonl", records)
    bench = load_benchmark(f"manifest:{tmp_path / 'm.jsonl'}", tmp_path)
    assert len(bench) == 6 and all(s.meta.split == "test" for s in bench.samples)
    s = bench.samples[0]
    assert [m.role for m in s.messages] == ["user"]  # the answer turn is removed
    assert s.meta.question == "What modality is this image?" and s.meta.answer_index == 0
    assert bench.name == "manifest:m"


def test_manifest_without_splits_uses_all_and_warns(tmp_path, make_phantom_records, caplog):
    records = make_phantom_records(1)
    for r in records:
        del r["meta"]["split"]
        del r["meta"]["answer"]  # answer taken from the assistant turn
    write_manifest(tmp_path / "m.jsonl", records)
    with caplog.at_level(logging.WARNING):
        bench = load_benchmark(f"manifest:{tmp_path / 'm.jsonl'}", tmp_path)
    assert len(bench) == 3 and bench.samples[1].meta.answer == "no"
    assert "no sample carries meta.split" in caplog.text


def test_manifest_without_test_items_is_an_error(tmp_path, make_phantom_records):
    write_manifest(tmp_path / "m.jsonl", make_phantom_records(1, split="train"))
    with pytest.raises(BenchmarkDataError, match="split 'test'"):
        load_benchmark(f"manifest:{tmp_path / 'm.jsonl'}", tmp_path)
    with pytest.raises(BenchmarkDataError, match="file not found"):
        load_benchmark(f"manifest:{tmp_path / 'nope.jsonl'}", tmp_path)


def test_phantoms_read_an_existing_manifest(phantom_manifest):
    bench = load_benchmark("phantoms", phantom_manifest.parent.parent)
    assert bench.name == "phantoms" and len(bench) == 18
    assert {s.meta.question_type for s in bench.samples} == {"modality", "presence", "side"}


def test_docs_show_every_layout():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    for name, (_, _, layout) in REGISTRY.items():
        assert layout in docs, f"docs/evaluation.md lacks the layout of {name}"
