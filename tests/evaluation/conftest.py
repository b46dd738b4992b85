"""Fixtures that write tiny benchmarks in each published layout, plus the scripted answers for them.

``SCRIPT`` maps a question to the response the fake server gives; the expected metrics in the
tests follow from it by hand.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.manifest import write_manifest


def png_bytes(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    # Blocky random pictures: distinct perceptual hashes per seed.
    small = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    arr = np.kron(small, np.ones((size // 4, size // 4), dtype=np.uint8))
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(seed))
    return path


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


# question -> scripted response
SCRIPT: dict[str, str] = {
    # VQA-RAD (parquet): closed 1/2, open EM 1/2
    "Is there a fracture?": "Yes, there is a fracture.",
    "Is the heart enlarged?": "yes",
    "What organ is shown?": "The liver.",
    "Where is the lesion?": "right upper lobe",
    # SLAKE: closed 3/3 (yes/no, exact, zh), open 0/1
    "Is this a CT image?": "No.",
    "Which organ is abnormal?": "Liver",
    "这是CT吗?": "是的",
    "What modality is used?": "It is an MRI scan",
    # PathVQA: 1 closed right, 1 open wrong
    "Is there necrosis?": "There is no necrosis.",
    "What stain is used?": "eosin",
    # PMC-VQA: 1 right (letter), 1 right ("The answer is (C)."), 1 wrong (refusal)
    "What plane is this?": "B",
    "Which imaging modality?": "The answer is (C).",
    "What is the diagnosis?": "I'm sorry, I cannot determine that from the image.",
    # OmniMedVQA: right (letter + text), wrong (text of another option)
    "What organ is in the image?": "A. Lung",
    "Is this image normal or abnormal?": "abnormal",
    # MMMU: 5 items: 3 right
    "Basic question <image 1>": "A",
    "Clinical question <image 1>": "(B) beta",
    "Diagnostics question <image 1>": "C",
    "Pharmacy question": "aspirin",
    "Public health question <image 1>": "b",
    # MedXpertQA: 1 right (boxed), 1 wrong
    "A 45-year-old with chest pain; which finding?": "\\boxed{D}",
    "Which nerve is injured?": "E",
}


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """A data folder with every public benchmark in its layout (a few items each)."""
    root = tmp_path / "data"
    # VQA-RAD (Hugging Face parquet)
    write_parquet(
        root / "VQA_RAD" / "data" / "test-00000-of-00001.parquet",
        [
            {"image": {"bytes": png_bytes(1), "path": "a.png"}, "question": "Is there a fracture?", "answer": "yes"},
            {"image": {"bytes": png_bytes(2), "path": "b.png"}, "question": "Is the heart enlarged?", "answer": "no"},
            {"image": {"bytes": png_bytes(3), "path": "c.png"}, "question": "What organ is shown?", "answer": "liver"},
            {
                "image": {"bytes": png_bytes(4), "path": "d.png"},
                "question": "Where is the lesion?",
                "answer": "right upper lobe",
            },
        ],
    )
    # SLAKE
    slake = root / "SLAKE"
    items = [
        ("Is this a CT image?", "No", "CLOSED", "en", "Modality", "MRI"),
        ("Which organ is abnormal?", "Liver", "CLOSED", "en", "Organ", "CT"),
        ("这是CT吗?", "是", "CLOSED", "zh", "Modality", "CT"),
        ("What modality is used?", "MRI", "OPEN", "en", "Modality", "MRI"),
    ]
    records = []
    for i, (q, a, t, lang, ct, mod) in enumerate(items):
        write_png(slake / "imgs" / f"xmlab{i}" / "source.jpg", 10 + i)
        records.append(
            {
                "img_id": i,
                "img_name": f"xmlab{i}/source.jpg",
                "question": q,
                "answer": a,
                "answer_type": t,
                "q_lang": lang,
                "content_type": ct,
                "modality": mod,
                "location": "Abdomen",
                "qid": 100 + i,
            }
        )
    (slake / "test.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    # PathVQA
    write_parquet(
        root / "PathVQA" / "data" / "test-00000-of-00001.parquet",
        [
            {"image": {"bytes": png_bytes(20), "path": "p1.jpg"}, "question": "Is there necrosis?", "answer": "no"},
            {
                "image": {"bytes": png_bytes(21), "path": "p2.jpg"},
                "question": "What stain is used?",
                "answer": "hematoxylin",
            },
        ],
    )
    # PMC-VQA
    pmc = root / "PMC-VQA"
    rows = [
        ("What plane is this?", ["A:Axial", "B:Coronal", "C:Sagittal", "D:Oblique"], "B"),
        ("Which imaging modality?", ["A: CT", "B: MRI", "C: Ultrasound", "D: PET"], "C"),
        ("What is the diagnosis?", ["A: Pneumonia", "B: Fracture", "C: Tumour", "D: Normal"], "A"),
    ]
    pmc.mkdir(parents=True)
    with (pmc / "test_2.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "index",
                "Figure_path",
                "Caption",
                "Question",
                "Choice A",
                "Choice B",
                "Choice C",
                "Choice D",
                "Answer",
                "split",
            ]
        )
        for i, (q, ch, a) in enumerate(rows):
            write_png(pmc / "figures" / f"PMC{i}.jpg", 30 + i)
            w.writerow([i, f"PMC{i}.jpg", "caption", q, *ch, a, "test"])
    # OmniMedVQA
    omni = root / "OmniMedVQA"
    write_png(omni / "Images" / "ds" / "1.png", 40)
    write_png(omni / "Images" / "ds" / "2.png", 41)
    (omni / "QA_information" / "Open-access").mkdir(parents=True)
    (omni / "QA_information" / "Open-access" / "ds.json").write_text(
        json.dumps(
            [
                {
                    "dataset": "ds",
                    "question_id": "ds_1",
                    "question_type": "Anatomy Identification",
                    "question": "What organ is in the image?",
                    "gt_answer": "Lung",
                    "image_path": "Images/ds/1.png",
                    "option_A": "Lung",
                    "option_B": "Liver",
                    "option_C": "Heart",
                    "option_D": "Kidney",
                    "modality_type": "CT",
                },
                {
                    "dataset": "ds",
                    "question_id": "ds_2",
                    "question_type": "Disease Diagnosis",
                    "question": "Is this image normal or abnormal?",
                    "gt_answer": "normal",
                    "image_path": "Images/ds/2.png",
                    "option_A": "normal",
                    "option_B": "abnormal",
                    "modality_type": "X-Ray",
                },
            ]
        ),
        encoding="utf-8",
    )
    # MMMU (five Health & Medicine subjects)
    mmmu = [
        (
            "Basic_Medical_Science",
            "Basic question <image 1>",
            "['alpha', 'beta', 'gamma']",
            "A",
            "multiple-choice",
            True,
        ),
        (
            "Clinical_Medicine",
            "Clinical question <image 1>",
            "['alpha', 'beta', 'gamma']",
            "B",
            "multiple-choice",
            True,
        ),
        (
            "Diagnostics_and_Laboratory_Medicine",
            "Diagnostics question <image 1>",
            "['alpha', 'beta', 'gamma']",
            "A",
            "multiple-choice",
            True,
        ),
        ("Pharmacy", "Pharmacy question", "[]", "aspirin", "open", False),
        ("Public_Health", "Public health question <image 1>", "['yes', 'no']", "A", "multiple-choice", True),
    ]
    for k, (subject, q, opts, ans, qt, has_img) in enumerate(mmmu):
        row = {
            "id": f"validation_{subject}_1",
            "question": q,
            "options": opts,
            "answer": ans,
            "question_type": qt,
            "img_type": "['Photographs']",
            "subfield": "x",
            "explanation": "",
        }
        for n in range(1, 8):
            row[f"image_{n}"] = {"bytes": png_bytes(50 + k), "path": "i.png"} if (n == 1 and has_img) else None
        write_parquet(root / "MMMU" / subject / "validation-00000-of-00001.parquet", [row])
    # MedXpertQA MM
    mx = root / "MedXpertQA"
    write_png(mx / "images" / "MM-1-a.jpeg", 60)
    write_png(mx / "images" / "MM-1-b.jpeg", 61)
    write_png(mx / "images" / "MM-2-a.jpeg", 62)
    lines = [
        {
            "id": "MM-1",
            "question": "A 45-year-old with chest pain; which finding?",
            "options": {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"},
            "label": "D",
            "images": ["MM-1-a.jpeg", "MM-1-b.jpeg"],
            "medical_task": "Diagnosis",
            "body_system": "Cardiovascular",
            "question_type": "Reasoning",
        },
        {
            "id": "MM-2",
            "question": "Which nerve is injured?",
            "options": {"A": "ulnar", "B": "radial", "C": "median", "D": "axillary", "E": "musculocutaneous"},
            "label": "B",
            "images": ["MM-2-a.jpeg"],
            "medical_task": "Basic Science",
            "body_system": "Nervous",
            "question_type": "Understanding",
        },
    ]
    (mx / "MM").mkdir(parents=True)
    (mx / "MM" / "test.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return root


def phantom_like_samples(n_per_type: int = 6, seed0: int = 100, split: str = "test") -> list[dict]:
    """Manifest records shaped like the phantoms: modality / presence / side questions on PNG slots."""
    out = []
    for i in range(n_per_type):
        modality = ["CT", "MR", "XR"][i % 3]
        present = "yes" if i % 3 else "no"  # majority 'yes' (2/3)
        side = "left" if i % 2 else "right"
        for qt, q, a, opts in (
            ("modality", "What modality is this image?", modality, ["CT", "MR", "XR"]),
            ("presence", "Is there a nodule?", present, ["yes", "no"]),
            ("side", "Which lung has the nodule?", side, ["left", "right"]),
        ):
            out.append(
                {
                    "id": f"ph-{split}-{i:03d}-{qt}",
                    "task": "vqa",
                    "messages": [{"role": "user", "content": f"<image>\n{q}"}, {"role": "assistant", "content": a}],
                    "images": [{"path": f"images/ph-{split}-{i:03d}.png", "kind": "image", "width": 32, "height": 32}],
                    "meta": {
                        "modality": modality,
                        "question_type": qt,
                        "answer_type": "closed",
                        "answer": a,
                        "options": opts,
                        "split": split,
                        "patient_hash": f"pt-{split}-{i}",
                    },
                }
            )
    return out


@pytest.fixture()
def phantom_manifest(tmp_path: Path) -> Path:
    """A phantom-like manifest (test split, 6 images × 3 questions) with its PNG images."""
    folder = tmp_path / "phantoms"
    records = phantom_like_samples()
    for r in records:
        seed = int(r["id"].split("-")[2]) + 100
        write_png(folder / r["images"][0]["path"], seed)
    write_manifest(folder / "manifest.jsonl", records)
    return folder / "manifest.jsonl"


def scripted(body: dict) -> str:
    """Fake-server responder: find the scripted question inside the last user message's text."""
    content = body["messages"][-1]["content"]
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p["type"] == "text")
    for q in sorted(SCRIPT, key=len, reverse=True):
        if q in text:
            return SCRIPT[q]
    return "unknown"


@pytest.fixture()
def responder():
    """The scripted fake-server responder (see ``SCRIPT``)."""
    return scripted


@pytest.fixture()
def make_phantom_records():
    """``phantom_like_samples`` as a fixture (tests cannot import conftest helpers by module name)."""
    return phantom_like_samples


@pytest.fixture()
def make_png():
    return write_png
