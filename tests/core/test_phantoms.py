from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pydicom
import pytest

from core.budget import PixelBudget
from core.manifest import load_manifest
from core.phantoms import (
    PhantomParams,
    generate_phantoms,
    generate_series,
    make_phantom,
    phantom_truth,
    read_truth,
    split_of,
)
from core.render import render


def test_manifest_truth_and_dicom(tmp_path) -> None:
    manifest = generate_phantoms(tmp_path, n=30, seed=7, size=96)
    samples = load_manifest(manifest)
    truth = read_truth(tmp_path)
    assert len(truth) == 30
    vqa = [s for s in samples if s.task == "vqa"]
    captions = [s for s in samples if s.task == "caption"]
    assert len(captions) == 30 and all(s.text.startswith("<image>") for s in captions)
    assert {s.meta.question_type for s in vqa} == {"modality", "presence", "side", "count"}
    assert {s.meta.answer_type for s in vqa} == {"closed", "open"}
    for s in vqa:
        pid = s.id.rsplit("-", 1)[0].removesuffix("-mod")
        t = truth[pid]
        assert s.messages[0].content.count("<image>") == 1 and s.messages[1].content == s.meta.answer
        assert s.meta.split == split_of(pid) and s.meta.modality == t.modality
        assert s.meta.patient_hash == hashlib.sha256(pid.encode()).hexdigest()[:16]
        if s.meta.options:
            assert s.meta.answer in s.meta.options
        if s.meta.question_type == "count":
            assert s.meta.answer == str(t.count)
        if s.meta.question_type == "presence":
            assert s.meta.answer == ("yes" if t.count else "no")
        if s.meta.question_type == "side":
            assert s.meta.answer in ("left", "right", "both") and t.count > 0
    for pid, t in list(truth.items())[:10]:
        ds = pydicom.dcmread(tmp_path / "images" / f"{pid}.dcm")
        assert ds.Modality == t.modality and (ds.Rows, ds.Columns) == (96, 96)
        assert ds.PhotometricInterpretation == ("MONOCHROME1" if t.monochrome1 else "MONOCHROME2")
        if t.modality == "CT":
            hu = ds.pixel_array.astype(float) * ds.RescaleSlope + ds.RescaleIntercept
            assert hu.min() < -900 and ds.RescaleIntercept == -1024  # air at about −1000 HU
            lung = hu[48, 48 - int(96 * 0.19)]
            assert -1000 < lung < -700  # lung parenchyma
        budget = PixelBudget(56 * 56, 224 * 224)
        images, record = render(tmp_path / "images" / f"{pid}.dcm", None, budget)
        assert images[0].size == budget.resized(96, 96) == (84, 84) and record.modality == t.modality


def test_deterministic_and_independent_of_n(tmp_path) -> None:
    a, ta = make_phantom(3, 5)
    b, tb = make_phantom(3, 5)
    assert a.PixelData == b.PixelData and ta == tb and a.SOPInstanceUID == b.SOPInstanceUID
    generate_phantoms(tmp_path / "x", n=3, seed=3)
    generate_phantoms(tmp_path / "y", n=8, seed=3)
    for i in range(3):
        pid = f"ph-s3-{i:05d}"
        assert (tmp_path / "x" / "images" / f"{pid}.dcm").read_bytes() == (
            tmp_path / "y" / "images" / f"{pid}.dcm"
        ).read_bytes()
    assert phantom_truth(3, 5) == ta


def test_nodule_side_and_contrast_are_in_the_pixels() -> None:
    params = PhantomParams(
        size=128, modalities=("CT",), noise=0.0, p_no_nodule=0.0, max_nodules=1, lesion_radius=(5, 6)
    )
    seen = Counter()
    for i in range(20):
        ds, truth = make_phantom(0, i, params)
        hu = ds.pixel_array.astype(float) - 1024
        (n,) = truth.nodules
        assert hu[int(round(n.y)), int(round(n.x))] == pytest.approx(30, abs=1)  # nodule value
        # radiological convention: the patient's left lung is on the image's right
        assert (n.x > 64) == (n.side == "left")
        seen[n.side] += 1
    assert seen["left"] and seen["right"]
    faint = PhantomParams(size=128, modalities=("CT",), noise=0.0, p_no_nodule=0.0, max_nodules=1, lesion_contrast=0.2)
    ds, truth = make_phantom(0, 0, faint)
    (n,) = truth.nodules
    assert int(ds.pixel_array[int(round(n.y)), int(round(n.x))]) - 1024 == pytest.approx(-850 + 0.2 * 880, abs=1)


def test_grid_alignment_parameter() -> None:
    params = PhantomParams(size=224, modalities=("CR",), grid_align="center", patch=28, p_no_nodule=0.0)
    for i in range(5):
        for n in phantom_truth(1, i, params).nodules:
            assert n.x % 28 == 14 and n.y % 28 == 14
    with pytest.raises(ValueError):
        PhantomParams(size=8)
    with pytest.raises(ValueError):
        PhantomParams(modalities=("PET",))


def test_series_geometry(tmp_path) -> None:
    paths = generate_series(tmp_path, slices=6, seed=2, size=64)
    z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in paths]
    assert z == sorted(z) and len(set(z)) == 6
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in paths}
    assert len(uids) == 1
    names = [p.name for p in paths]
    assert names != sorted(names)  # file names do not give the order away


def test_generates_a_few_hundred_phantoms(tmp_path) -> None:
    manifest = generate_phantoms(tmp_path, n=200, seed=0, size=64)
    assert sum(1 for _ in manifest.open()) >= 200 * 5
    arr = pydicom.dcmread(next((tmp_path / "images").iterdir())).pixel_array
    assert arr.shape == (64, 64) and np.ptp(arr) > 100


def test_cli(tmp_path, capsys) -> None:
    from infimed.cli import main

    assert main(["phantoms", str(tmp_path / "p"), "--n", "4", "--seed", "1", "--size", "64", "--series", "3"]) == 0
    out = capsys.readouterr().out
    assert "4 phantoms" in out and "3 CT slices" in out
    assert len(list((tmp_path / "p" / "images").glob("*.dcm"))) == 4
    assert main(["phantoms", str(tmp_path / "q"), "--n", "2", "--modalities", "PET"]) == 2
    assert "modalities" in capsys.readouterr().err


def test_cli_reports_csv_is_keyed_by_the_files_sop_uids(tmp_path, capsys) -> None:
    import csv
    import json

    from infimed.cli import main

    out_csv = tmp_path / "export" / "reports_qa.csv"
    assert main(["phantoms", str(tmp_path / "p"), "--n", "3", "--seed", "2", "--size", "64", "--reports-csv", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    samples = load_manifest(tmp_path / "p" / "manifest.jsonl")
    sops = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (tmp_path / "p" / "images").glob("*.dcm")}
    assert len(rows) == len(samples) and {r["SOPInstanceUID"] for r in rows} == sops
    qa = [r for r in rows if r["question"]]
    assert len(qa) == sum(1 for s in samples if s.task == "vqa") and all(r["answer"] and not r["report"] for r in qa)
    assert all(r["report"] and "<image>" not in r["report"] for r in rows if not r["question"])
    closed = [r for r in qa if r["options"]]
    assert closed and all(r["answer"] in json.loads(r["options"]) for r in closed)
    assert f"{len(rows)} rows ({len(qa)} QA, {len(rows) - len(qa)} reports)" in capsys.readouterr().out
    # The closed question set also has chat samples (the same questions as one conversation): not rows.
    closed_csv = tmp_path / "closed.csv"
    assert main(["phantoms", str(tmp_path / "c"), "--n", "2", "--size", "64", "--question-set", "closed", "--reports-csv", str(closed_csv)]) == 0
    chats = sum(1 for s in load_manifest(tmp_path / "c" / "manifest.jsonl") if s.task == "chat")
    assert chats and len(list(csv.DictReader(closed_csv.open(encoding="utf-8")))) == len(load_manifest(tmp_path / "c" / "manifest.jsonl")) - chats


def test_closed_question_set(tmp_path) -> None:
    """The end-to-end proof's questions: all closed, count with 0…max options, one chat per image."""
    manifest = generate_phantoms(tmp_path, n=24, seed=5, size=112, max_nodules=2, question_set="closed")
    samples = load_manifest(manifest)
    truth = read_truth(tmp_path)
    vqa = [s for s in samples if s.task == "vqa"]
    assert {s.meta.question_type for s in vqa} == {"modality", "presence", "side", "count"}
    assert all(s.meta.answer_type == "closed" and s.meta.answer in s.meta.options for s in vqa)
    assert {tuple(s.meta.options) for s in vqa if s.meta.question_type == "count"} == {("0", "1", "2")}
    for s in (s for s in samples if s.task == "chat"):
        t = truth[s.id.removesuffix("-chat")]
        singles = {v.messages[0].content.removeprefix("<image>\n"): v.meta.answer for v in vqa if v.id.startswith(t.id)}
        turns = [m.content for m in s.messages]
        assert turns[0].startswith("<image>\n") and sum(x.count("<image>") for x in turns) == 1
        asked = dict(zip([q.removeprefix("<image>\n") for q in turns[::2]], turns[1::2], strict=True))
        assert asked == singles  # the same questions and answers as the single-question samples
    for s in (s for s in samples if s.task == "caption"):
        t = truth[s.id.removesuffix("-cap")]
        right = sum(n.side == "right" for n in t.nodules)
        assert s.text.endswith(f"{t.count} nodule{'' if t.count == 1 else 's'}: {right} right, {t.count - right} left.")
    with pytest.raises(ValueError):
        generate_phantoms(tmp_path / "x", n=1, seed=0, question_set="open-only")
