"""``infimed curate``: a thin command; bad input gives a message naming the file, non-zero exit, no traceback."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom

from infimed.cli import main

from .conftest import make_image, write_jsonl

RECIPE = str(Path(__file__).resolve().parents[2] / "curation" / "recipes" / "default.yaml")


def test_curate_sharegpt_dataset(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("INFIMED_SPLIT_SALT", "cli-test")
    for i in range(2):
        make_image(tmp_path / f"{i}.png", seed=i)
    data = [
        {
            "id": f"s{i}",
            "image": f"{i}.png",
            "conversations": [
                {"from": "human", "value": "<image>\nIs there a nodule in the lung on this CT?"},
                {"from": "gpt", "value": "Yes, a nodule in the left lower lobe."},
            ],
        }
        for i in range(2)
    ]
    (tmp_path / "llava.json").write_text(json.dumps(data))
    rc = main(
        [
            "curate",
            RECIPE,
            "--input",
            str(tmp_path / "llava.json"),
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
            "--workers",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "2 samples: 2 kept, 0 rejected" in out and "report.html" in out
    assert len((tmp_path / "out" / "kept.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "out" / ".state" / "salt").exists()  # the salt came from the environment


def test_curate_dicom_folder_with_reports_csv(tmp_path: Path, dicom_files, capsys) -> None:
    folder = dicom_files["CT_small.dcm"].parent
    rep = tmp_path / "reports.csv"
    with rep.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["SOPInstanceUID", "report"])
        for f in sorted(folder.glob("*.dcm")):
            w.writerow(
                [
                    pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID,
                    "CT of the chest: a 4 mm nodule in the right upper lobe, no effusion.",
                ]
            )
    rc = main(
        [
            "curate",
            RECIPE,
            "--input",
            str(folder),
            "--reports",
            str(rep),
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "gate:burned_in_annotation: 1" in out
    kept = [json.loads(line) for line in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()]
    assert kept and all(s["images"][0]["kind"] == "dicom" for s in kept)


def test_bad_inputs_exit_non_zero_with_a_message(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: curation\nschema_version: 1\nscorers: []\n")
    assert main(["curate", str(bad), "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    assert main(["curate", RECIPE, "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    write_jsonl(tmp_path / "empty.jsonl", [{"schema_version": 1, "id": "x", "task": "vqa"}])
    assert (
        main(
            [
                "curate",
                RECIPE,
                "--input",
                str(tmp_path / "empty.jsonl"),
                "--output",
                str(tmp_path / "o"),
                "--no-progress",
            ]
        )
        == 1
    )
    assert "no usable samples" in capsys.readouterr().err
    assert (
        main(
            [
                "curate",
                RECIPE,
                "--input",
                str(tmp_path / "empty.jsonl"),
                "--output",
                str(tmp_path / "o"),
                "--judge-model",
                "m",
            ]
        )
        == 2
    )
