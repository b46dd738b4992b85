"""Readers: every foreign format becomes manifest samples (or a located issue), images referenced by path."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import pytest

from core.manifest import Sample
from curation.readers import ReaderError, ReaderIssue, detect_format, read_input

from .conftest import make_image, vqa, write_jsonl


def _read(path: Path, fmt: str = "auto", **kw):
    items = list(read_input(path, fmt, scratch=path.parent / "scratch", **kw))
    return [i for i in items if isinstance(i, Sample)], [i for i in items if isinstance(i, ReaderIssue)]


def test_manifest_reader_resolves_paths_and_reports_bad_lines(tmp_path: Path) -> None:
    make_image(tmp_path / "a.png")
    m = write_jsonl(tmp_path / "m.jsonl", [vqa("a", "a.png", "Is it normal?", "yes")])
    with m.open("a") as fh:
        fh.write("{not json\n" + json.dumps({"schema_version": 1, "id": "x", "task": "vqa"}) + "\n")
    samples, issues = _read(m)
    assert detect_format(m) == "manifest"
    assert [s.id for s in samples] == ["a"] and Path(samples[0].images[0].path) == (tmp_path / "a.png").resolve()
    assert [i.where for i in issues] == ["line 2", "line 3"]


def test_sharegpt_llava_markers_must_match_images(tmp_path: Path) -> None:
    make_image(tmp_path / "img" / "a.png")
    data = [
        {
            "id": "ok",
            "image": "img/a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat modality is this?"},
                {"from": "gpt", "value": "CT"},
            ],
        },
        {
            "id": "two",
            "images": ["img/a.png", "img/a.png"],
            "conversations": [{"from": "human", "value": "<image>\nCompare."}, {"from": "gpt", "value": "Same."}],
        },
        {
            "id": "chat",
            "conversations": [
                {"from": "human", "value": "hi"},
                {"from": "gpt", "value": "hello"},
                {"from": "human", "value": "bye"},
                {"from": "gpt", "value": "bye"},
            ],
        },
    ]
    f = tmp_path / "llava.json"
    f.write_text(json.dumps(data))
    samples, issues = _read(f)
    assert detect_format(f) == "sharegpt"
    assert [s.id for s in samples] == ["ok", "chat"]
    assert samples[0].task == "vqa" and samples[1].task == "chat"
    assert samples[0].messages[0].role == "user" and samples[0].messages[1].content == "CT"
    assert issues[0].where == "item 1" and "1 <image> marker(s) but 2 image(s)" in issues[0].message


def test_openai_messages_with_typed_parts_and_data_urls(tmp_path: Path) -> None:
    png = make_image(tmp_path / "a.png").read_bytes()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    recs = [
        {
            "id": "p",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "a.png"}},
                        {"type": "text", "text": "Normal?"},
                    ],
                },
                {"role": "assistant", "content": "Yes."},
            ],
        },
        {
            "id": "d",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}],
                },
                {"role": "assistant", "content": "No."},
            ],
        },
        {
            "id": "remote",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]}
            ],
        },
    ]
    f = write_jsonl(tmp_path / "oa.jsonl", recs)
    samples, issues = _read(f)
    assert detect_format(f) == "openai"
    assert [s.id for s in samples] == ["p", "d"]
    assert samples[0].messages[0].content[0].type == "image" and samples[0].images[0].path == str(
        (tmp_path / "a.png").resolve()
    )
    embedded = Path(samples[1].images[0].path)
    assert embedded.parent == tmp_path / "scratch" and embedded.read_bytes() == png
    assert "not fetched" in issues[0].message


def test_hf_parquet_arrow_and_json_with_image_bytes(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    png = make_image(tmp_path / "a.png").read_bytes()
    rows = [
        {
            "id": "q1",
            "image": {"bytes": png, "path": None},
            "question": "Is there a nodule?",
            "answer": "yes",
            "modality": "CT",
        },
        {
            "id": "q2",
            "image": {"bytes": None, "path": "a.png"},
            "question": "Where?",
            "answer": "left",
            "modality": "CT",
        },
    ]
    d = tmp_path / "ds"
    (d / "train").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), d / "train" / "data-0.parquet")
    with pa.OSFile(str(d / "train" / "data-1.arrow"), "wb") as sink:
        table = pa.Table.from_pylist([{"id": "c1", "image": "../a.png", "caption": "Chest X-ray without findings."}])
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
    (d / "dataset_info.json").write_text("{}")
    samples, issues = _read(d, image_root=d / "train")
    assert detect_format(d) == "hf" and not issues
    by = {s.id: s for s in samples}
    assert by["q1"].task == "vqa" and by["q1"].meta.answer == "yes" and by["q1"].meta.modality == "CT"
    assert Path(by["q1"].images[0].path).read_bytes() == png
    assert by["q2"].images[0].path == str((d / "train" / "a.png").resolve())
    assert by["c1"].task == "caption" and by["c1"].text.startswith("<image>")
    jf = tmp_path / "rows.jsonl"
    jf.write_text(json.dumps({"id": "j", "image": "a.png", "text": "An MR of the knee."}) + "\n")
    samples, _ = _read(jf, "hf")
    assert samples[0].task == "caption"


def test_dicom_folder_with_reports_by_sop_and_by_study(tmp_path: Path, dicom_files: dict[str, Path]) -> None:
    import pydicom

    folder = dicom_files["CT_small.dcm"].parent
    ct = pydicom.dcmread(dicom_files["CT_small.dcm"], stop_before_pixels=True)
    mr = pydicom.dcmread(dicom_files["MR_small.dcm"], stop_before_pixels=True)
    rep = tmp_path / "reports.csv"
    with rep.open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["SOPInstanceUID", "StudyInstanceUID", "report", "question", "answer"])
        w.writeheader()
        w.writerow({"SOPInstanceUID": ct.SOPInstanceUID, "report": "CT of the chest: no nodule."})
        w.writerow({"SOPInstanceUID": ct.SOPInstanceUID, "question": "Is there a nodule?", "answer": "no"})
        w.writerow({"SOPInstanceUID": "1.2.999", "report": "unknown"})
    samples, issues = _read(folder, reports=rep)
    assert detect_format(folder) == "dicom"
    assert [s.task for s in samples] == ["caption", "vqa"]
    s = samples[0]
    assert s.images[0].kind == "dicom" and (s.images[0].width, s.images[0].height) == (128, 128)
    assert s.meta.modality == "CT" and (s.meta.model_extra or {}).get("patient_id") == str(ct.PatientID)
    assert ct.SOPInstanceUID not in s.id  # ids are hashed UIDs
    assert any("not found" in i.message for i in issues)
    rep2 = tmp_path / "by_study.jsonl"
    rep2.write_text(json.dumps({"StudyInstanceUID": mr.StudyInstanceUID, "report": "MR of the head."}) + "\n")
    samples, _ = _read(folder, "dicom", reports=rep2)
    assert len(samples) == 1 and samples[0].meta.modality == "MR" and len(samples[0].images) >= 1


def test_dicom_reports_csv_options_pipe_or_json_list(tmp_path: Path, dicom_files: dict[str, Path]) -> None:
    import pydicom

    folder = dicom_files["CT_small.dcm"].parent
    sop = str(pydicom.dcmread(dicom_files["CT_small.dcm"], stop_before_pixels=True).SOPInstanceUID)
    rep = tmp_path / "qa.csv"
    rows = [  # (question, answer, options); CSV row numbers count the header as row 1
        ("Is there a nodule?", "Yes", "yes|no"),  # row 2: '|'-separated, answer matched ignoring case
        ("Which side?", "B", '["A. left", "B. right"]'),  # row 3: lettered JSON list, answer by letter
        ("Which side?", "(A) left", '["(A) left", "(B) right"]'),  # row 4: answer as the labelled option
        ("Which lobe?", "", '["upper | middle", "lower"]'),  # row 5: JSON list because an option has '|'
        ("Is it normal?", "no", ""),  # row 6: no options
        ("Is there a mass?", "maybe", "yes|no"),  # row 7: answer not among the options
        ("Which side?", "C", '["A. left", "B. right"]'),  # row 8: letter beyond the options
        ("Is there a mass?", "yes", "yes||no"),  # row 9: an empty option
        ("Is there a mass?", "yes", "[yes, no]"),  # row 10: starts with '[' but is not JSON
        ("Is there a mass?", "yes", "yes|Yes"),  # row 11: the same option twice
        ("Which side?", "", '["A. left", "B. left"]'),  # row 12: the same once the labels are removed
        ("", "", "yes|no"),  # row 13: options on a report row (no question)
        ("Is there a mass?", "yes", '["yes", 1]'),  # row 14: a number among the options
    ]
    with rep.open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["SOPInstanceUID", "question", "answer", "options", "report"])
        w.writeheader()
        for q, a, o in rows:
            w.writerow({"SOPInstanceUID": sop, "question": q, "answer": a, "options": o, "report": "" if q else "CT."})
    samples, issues = _read(folder, "dicom", reports=rep)
    issues = [i for i in issues if i.where != "file"]  # the shared folder's own file issues, if any

    assert len(samples) == 5
    pipe, letter, labelled, json_pipe, plain = samples
    assert pipe.meta.options == ["yes", "no"] and pipe.meta.answer == "yes" and pipe.meta.answer_type == "closed"
    assert pipe.messages[-1].content == "Yes"  # the training target stays as written
    assert letter.meta.options == ["left", "right"] and letter.meta.answer == "right"  # labels removed
    assert letter.messages[-1].content == "B"
    assert labelled.meta.options == ["left", "right"] and labelled.meta.answer == "left"
    assert json_pipe.meta.options == ["upper | middle", "lower"] and json_pipe.meta.answer is None
    assert len(json_pipe.messages) == 1  # a question without an answer
    assert plain.meta.options is None and plain.meta.answer == "no" and plain.meta.answer_type is None
    assert Sample.model_validate_json(letter.model_dump_json()).meta.options == ["left", "right"]

    assert all(i.source == str(rep) for i in issues)
    found = {i.where: i.message for i in issues}
    assert found == {
        "row 7": "answer is not one of the 2 options",
        "row 8": "answer is neither one of the 2 options nor a letter A–B",
        "row 9": "option 2 is empty",
        "row 10": found["row 10"],
        "row 11": "options 1 and 2 are the same",
        "row 12": "options 1 and 2 are the same",
        "row 13": "options given on a row without a question",
        "row 14": "option 2 is not a string but int",
    }
    assert found["row 10"].startswith("options cell starts with '[' but is not a JSON list (")
    assert not any("maybe" in m or "left" in m for m in found.values())  # issues never quote the text


def test_dicom_reports_jsonl_options_must_be_a_list(tmp_path: Path, dicom_files: dict[str, Path]) -> None:
    import pydicom

    folder = dicom_files["CT_small.dcm"].parent
    sop = str(pydicom.dcmread(dicom_files["CT_small.dcm"], stop_before_pixels=True).SOPInstanceUID)
    rep = tmp_path / "qa.jsonl"
    lines = [
        {"options": ["A: axial", "B: coronal", "C: sagittal"], "answer": "c"},  # line 1: letter, any case
        {"options": ["T1", "T2"], "answer": "T2"},  # line 2
        {"options": None, "answer": "yes"},  # line 3: no options
        {"options": "yes|no", "answer": "yes"},  # line 4: a string is a CSV cell's form, not JSONL's
        {"options": [], "answer": "yes"},  # line 5
        {"options": ["yes", "  "], "answer": "yes"},  # line 6
        {"options": ["T1", "T2"], "answer": "FLAIR"},  # line 7
    ]
    write_jsonl(rep, [{"SOPInstanceUID": sop, "question": "Which plane?", **x} for x in lines])
    samples, issues = _read(folder, "dicom", reports=rep)
    issues = [i for i in issues if i.where != "file"]

    assert [s.meta.options for s in samples] == [["axial", "coronal", "sagittal"], ["T1", "T2"], None]
    assert [s.meta.answer for s in samples] == ["sagittal", "T2", "yes"]
    assert {(i.source, i.where, i.message) for i in issues} == {
        (str(rep), "row 4", "options must be a JSON list of strings, not str"),
        (str(rep), "row 5", "options is an empty list"),
        (str(rep), "row 6", "option 2 is empty"),
        (str(rep), "row 7", "answer is not one of the 2 options"),
    }


def test_bad_inputs_raise_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="no such file"):
        list(read_input(tmp_path / "missing.jsonl", scratch=tmp_path))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ReaderError, match="--input-format"):
        list(read_input(tmp_path / "x.txt", scratch=tmp_path))
    with pytest.raises(ReaderError, match="unknown input format"):
        list(read_input(tmp_path / "x.txt", "csv", scratch=tmp_path))


def test_study_keyed_report_makes_a_series_slot(tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    from curation.features import analyse_image

    folder = tmp_path / "study"
    folder.mkdir()
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for i in range(3):
        base.SOPInstanceUID = f"1.2.3.9.{i}"
        base.InstanceNumber = 3 - i
        base.save_as(folder / f"slice{i}.dcm")
    rep = tmp_path / "r.jsonl"
    rep.write_text(
        json.dumps({"study_uid": str(base.StudyInstanceUID), "findings": "CT chest.", "impression": "Normal."})
    )
    samples, issues = _read(folder, "dicom", reports=rep)
    assert not issues and len(samples) == 1
    ref = samples[0].images[0]
    assert ref.kind == "series" and len(ref.files) == 3 and ref.files[0].endswith("slice2.dcm")  # InstanceNumber order
    assert samples[0].text.endswith("Impression: Normal.")
    info = analyse_image(Path(ref.path), ref.kind, [Path(f) for f in ref.files])
    assert info.ok and info.frames == 3 and info.modality == "CT"
