"""Loaders for the public medical VQA benchmarks, in the layouts MedEvalKit reads (local files only).

Each loader's layout text (also in ``docs/evaluation.md``) is what the error shows when a file is
missing. Parquet files (Hugging Face snapshots) need ``pyarrow``; JSON/CSV layouts need nothing.
Images embedded in parquet files are written once, content-addressed, under ``image_dir``.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
from pathlib import Path
from typing import Any

from core.manifest import Sample
from evaluation import prompts
from evaluation.benchmarks import (
    Benchmark,
    BenchmarkDataError,
    LoadOptions,
    make_sample,
    missing,
    register,
    save_image_bytes,
)
from evaluation.extract import is_yes_no, normalize, option_letters, strip_option_label

log = logging.getLogger(__name__)

MMMU_MED_SUBJECTS = (
    "Basic_Medical_Science",
    "Clinical_Medicine",
    "Diagnostics_and_Laboratory_Medicine",
    "Pharmacy",
    "Public_Health",
)


# ---------------------------------------------------------------- helpers
def _find_dir(data_dir: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (data_dir / name).is_dir():
            return data_dir / name
    return None


def _read_parquet(paths: list[Path], bench: str) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BenchmarkDataError(
            f"{bench}: reading {paths[0].name} needs pyarrow (pip install pyarrow), or use the JSON layout"
        ) from e
    rows: list[dict[str, Any]] = []
    for p in sorted(paths):
        try:
            rows.extend(pq.read_table(p).to_pylist())
        except (OSError, ValueError) as e:
            raise BenchmarkDataError(f"{bench}: {p}: not a readable parquet file ({e})") from e
    return rows


def _read_json(path: Path, bench: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BenchmarkDataError(f"{bench}: {path}: not readable JSON ({e})") from e


def _parquet_image(value: Any, opts: LoadOptions, bench: str, where: str) -> Path:
    """A Hugging Face ``Image`` cell (``{"bytes": …, "path": …}``) → a file path."""
    if isinstance(value, dict) and value.get("bytes"):
        return save_image_bytes(value["bytes"], opts.image_dir, bench, value.get("path"))
    raise BenchmarkDataError(f"{bench}: {where}: image cell has no bytes")


def _check_image(path: Path, bench: str, data_dir: Path) -> Path:
    if not path.is_file():
        raise missing(bench, data_dir, f"image {path} is missing")
    return path


def _yes_no_or_open(
    sid: str, question: str, answer: str, image: Path, bench: str, opts: LoadOptions, **extra: Any
) -> Sample:
    """MedEvalKit's rule for VQA-RAD / PathVQA: yes/no answers are closed, everything else open."""
    closed = is_yes_no(answer)
    prompt = (prompts.judgement_prompt if closed else prompts.open_prompt)(question, reasoning=opts.reasoning)
    return make_sample(
        sample_id=sid,
        prompt=prompt,
        images=[image],
        answer=answer,
        benchmark=bench,
        question=question,
        answer_type="closed" if closed else "open",
        options=["yes", "no"] if closed else None,
        question_type=extra.pop("question_type", None) or ("yes/no" if closed else "open"),
        **extra,
    )


# ---------------------------------------------------------------- VQA-RAD
VQA_RAD_LAYOUT = """\
DATA_DIR/VQA_RAD/                                  (also accepted: VQA-RAD, vqa-rad)
├── data/test-00000-of-00001.parquet               Hugging Face flaviagiammarino/vqa-rad (image, question, answer)
│                                                  — MedEvalKit's source; yes/no answers are closed, the rest open
└── or the original OSF release:
    ├── VQA_RAD Dataset Public.json                items with phrase_type test_freeform / test_para are the test split
    └── VQA_RAD Image Folder/<image_name>"""


@register("vqa-rad", "VQA-RAD radiology VQA (test split)", VQA_RAD_LAYOUT)
def load_vqa_rad(opts: LoadOptions) -> Benchmark:
    bench = "vqa-rad"
    root = _find_dir(opts.data_dir, ("VQA_RAD", "VQA-RAD", "vqa-rad", "vqa_rad"))
    if root is None:
        raise missing(bench, opts.data_dir, f"folder {opts.data_dir / 'VQA_RAD'} not found")
    samples: list[Sample] = []
    parquet = sorted((root / "data").glob("test-*.parquet")) if (root / "data").is_dir() else []
    if parquet:
        for i, row in enumerate(_read_parquet(parquet, bench)):
            image = _parquet_image(row.get("image"), opts, bench, f"row {i}")
            samples.append(
                _yes_no_or_open(f"vqa-rad-{i:05d}", row["question"], str(row["answer"]).strip(), image, bench, opts)
            )
    else:
        public = root / "VQA_RAD Dataset Public.json"
        if not public.is_file():
            raise missing(bench, opts.data_dir, f"neither {root}/data/test-*.parquet nor {public} exists")
        images = root / "VQA_RAD Image Folder"
        for item in _read_json(public, bench):
            if not str(item.get("phrase_type", "")).startswith("test"):
                continue
            question, answer = item["question"], str(item["answer"]).strip()
            closed = str(item.get("answer_type", "")).upper() == "CLOSED"
            image = _check_image(images / item["image_name"], bench, opts.data_dir)
            if closed and not is_yes_no(answer):
                prompt = prompts.closed_prompt(question, reasoning=opts.reasoning)
            elif closed:
                prompt = prompts.judgement_prompt(question, reasoning=opts.reasoning)
            else:
                prompt = prompts.open_prompt(question, reasoning=opts.reasoning)
            samples.append(
                make_sample(
                    sample_id=f"vqa-rad-{item.get('qid', len(samples))}",
                    prompt=prompt,
                    images=[image],
                    answer=answer,
                    benchmark=bench,
                    question=question,
                    answer_type="closed" if closed else "open",
                    options=["yes", "no"] if closed and is_yes_no(answer) else None,
                    question_type=item.get("question_type"),
                    body_part=item.get("image_organ"),
                )
            )
    return Benchmark(bench, samples, root, "VQA-RAD (test)")


# ---------------------------------------------------------------- SLAKE
SLAKE_LAYOUT = """\
DATA_DIR/SLAKE/                                    (also accepted: Slake, slake, Slake1.0)
├── test.json                                      list of {img_name, question, answer, answer_type OPEN|CLOSED,
│                                                  q_lang en|zh, content_type, modality, location, qid}
└── imgs/<img_name>                                e.g. imgs/xmlab102/source.jpg"""


@register("slake", "SLAKE bilingual radiology VQA (test split, en + zh as MedEvalKit)", SLAKE_LAYOUT)
def load_slake(opts: LoadOptions) -> Benchmark:
    bench = "slake"
    root = _find_dir(opts.data_dir, ("SLAKE", "Slake", "slake", "Slake1.0"))
    test = root / "test.json" if root else opts.data_dir / "SLAKE" / "test.json"
    if root is None or not test.is_file():
        raise missing(bench, opts.data_dir, f"{test} not found")
    samples = []
    for i, item in enumerate(_read_json(test, bench)):
        question, answer = item["question"], str(item["answer"]).strip()
        lang = item.get("q_lang", "en")
        closed = str(item.get("answer_type", "")).upper() == "CLOSED"
        prompt = (prompts.closed_prompt if closed else prompts.open_prompt)(
            question, lang=lang, reasoning=opts.reasoning
        )
        image = _check_image(root / "imgs" / item["img_name"], bench, opts.data_dir)
        samples.append(
            make_sample(
                sample_id=f"slake-{item.get('qid', i)}",
                prompt=prompt,
                images=[image],
                answer=answer,
                benchmark=bench,
                question=question,
                answer_type="closed" if closed else "open",
                options=None,
                question_type=item.get("content_type"),
                modality=item.get("modality"),
                body_part=item.get("location"),
                lang=lang,
            )
        )
    return Benchmark(bench, samples, root, "SLAKE (test, en+zh)")


# ---------------------------------------------------------------- PathVQA
PATHVQA_LAYOUT = """\
DATA_DIR/PathVQA/                                  (also accepted: PATH_VQA, path-vqa, pathvqa)
└── data/test-0000N-of-0000M.parquet               Hugging Face flaviagiammarino/path-vqa (image, question, answer);
                                                   yes/no answers are closed, the rest open (MedEvalKit's rule)"""


@register("pathvqa", "PathVQA pathology VQA (test split)", PATHVQA_LAYOUT)
def load_pathvqa(opts: LoadOptions) -> Benchmark:
    bench = "pathvqa"
    root = _find_dir(opts.data_dir, ("PathVQA", "PATH_VQA", "path-vqa", "pathvqa", "Path-VQA"))
    parquet = sorted((root / "data").glob("test-*.parquet")) if root and (root / "data").is_dir() else []
    if root is None or not parquet:
        raise missing(bench, opts.data_dir, f"no {opts.data_dir / 'PathVQA' / 'data' / 'test-*.parquet'} found")
    samples = []
    for i, row in enumerate(_read_parquet(parquet, bench)):
        image = _parquet_image(row.get("image"), opts, bench, f"row {i}")
        samples.append(
            _yes_no_or_open(
                f"pathvqa-{i:05d}",
                row["question"],
                str(row["answer"]).strip(),
                image,
                bench,
                opts,
                modality="pathology",
            )
        )
    return Benchmark(bench, samples, root, "PathVQA (test)")


# ---------------------------------------------------------------- PMC-VQA
PMC_VQA_LAYOUT = """\
DATA_DIR/PMC-VQA/                                  (also accepted: PMC_VQA, pmc-vqa)
├── test_2.csv                                     header: index,Figure_path,Caption,Question,Choice A,Choice B,
│                                                  Choice C,Choice D,Answer,split (Answer is the letter)
└── figures/<Figure_path>                          (or images/<Figure_path>)"""


@register("pmc-vqa", "PMC-VQA multiple choice (test_2)", PMC_VQA_LAYOUT)
def load_pmc_vqa(opts: LoadOptions) -> Benchmark:
    bench = "pmc-vqa"
    root = _find_dir(opts.data_dir, ("PMC-VQA", "PMC_VQA", "pmc-vqa", "pmc_vqa"))
    csv_path = root / "test_2.csv" if root else opts.data_dir / "PMC-VQA" / "test_2.csv"
    if root is None or not csv_path.is_file():
        raise missing(bench, opts.data_dir, f"{csv_path} not found")
    samples = []
    with csv_path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"Figure_path", "Question", "Choice A", "Choice B", "Answer"}
        if not need <= set(reader.fieldnames or []):
            raise BenchmarkDataError(f"{bench}: {csv_path}: header lacks {sorted(need - set(reader.fieldnames or []))}")
        for i, row in enumerate(reader):
            options = [
                strip_option_label(row[k])
                for k in ("Choice A", "Choice B", "Choice C", "Choice D")
                if row.get(k) not in (None, "")
            ]
            index = _answer_index(row["Answer"], options)
            if index is None:
                raise BenchmarkDataError(
                    f"{bench}: {csv_path}: row {i + 2}: answer {row['Answer']!r} matches no choice"
                )
            image = root / "figures" / row["Figure_path"]
            if not image.is_file():
                image = root / "images" / row["Figure_path"]
            _check_image(image, bench, opts.data_dir)
            question = row["Question"]
            samples.append(
                make_sample(
                    sample_id=f"pmc-vqa-{row.get('index') or i}",
                    prompt=prompts.choice_prompt(question, options, reasoning=opts.reasoning),
                    images=[image],
                    answer=options[index],
                    answer_index=index,
                    options=options,
                    benchmark=bench,
                    question=question,
                    answer_type="closed",
                    question_type="multiple-choice",
                )
            )
    return Benchmark(bench, samples, root, "PMC-VQA (test_2)")


def _answer_index(answer: str, options: list[str]) -> int | None:
    """A letter (``"B"``, ``"B:"``, ``"(B)"``) or an option's text → its index."""
    a = answer.strip()
    letters = option_letters(len(options))
    bare = a.strip("():. ").upper()
    if len(bare) == 1 and bare in letters:
        return letters.index(bare)
    norm = [normalize(o) for o in options]
    text = normalize(strip_option_label(a))
    return norm.index(text) if text in norm else None


# ---------------------------------------------------------------- OmniMedVQA
OMNIMEDVQA_LAYOUT = """\
DATA_DIR/OmniMedVQA/
├── QA_information/Open-access/<dataset>.json      lists of {question_id, question, gt_answer, option_A…option_D,
│                                                  image_path, question_type, modality_type, dataset}
└── Images/…                                       image_path is relative to DATA_DIR/OmniMedVQA"""


@register("omnimedvqa", "OmniMedVQA open-access split (multiple choice)", OMNIMEDVQA_LAYOUT)
def load_omnimedvqa(opts: LoadOptions) -> Benchmark:
    bench = "omnimedvqa"
    root = _find_dir(opts.data_dir, ("OmniMedVQA", "omnimedvqa"))
    qa_dir = (
        root / "QA_information" / "Open-access"
        if root
        else opts.data_dir / "OmniMedVQA" / "QA_information" / "Open-access"
    )
    files = sorted(qa_dir.glob("*.json")) if qa_dir.is_dir() else []
    if root is None or not files:
        raise missing(bench, opts.data_dir, f"no JSON files in {qa_dir}")
    samples = []
    for f in files:
        for j, item in enumerate(_read_json(f, bench)):
            options = [str(item[f"option_{x}"]) for x in "ABCD" if item.get(f"option_{x}") not in (None, "")]
            index = _answer_index(str(item["gt_answer"]), options)
            if index is None:
                raise BenchmarkDataError(f"{bench}: {f}: item {j}: gt_answer matches no option")
            image = _check_image(root / item["image_path"], bench, opts.data_dir)
            question = item["question"]
            samples.append(
                make_sample(
                    sample_id=f"omnimedvqa-{item.get('question_id', f'{f.stem}-{j}')}",
                    prompt=prompts.choice_prompt(question, options, reasoning=opts.reasoning),
                    images=[image],
                    answer=options[index],
                    answer_index=index,
                    options=options,
                    benchmark=bench,
                    question=question,
                    answer_type="closed",
                    question_type=item.get("question_type"),
                    modality=item.get("modality_type") or item.get("modality"),
                    dataset=item.get("dataset"),
                )
            )
    return Benchmark(bench, samples, root, "OmniMedVQA (open-access)")


# ---------------------------------------------------------------- MMMU (Health & Medicine)
MMMU_LAYOUT = """\
DATA_DIR/MMMU/                                     Hugging Face MMMU/MMMU snapshot, the five Health & Medicine subjects:
├── Basic_Medical_Science/validation-00000-of-00001.parquet
├── Clinical_Medicine/validation-00000-of-00001.parquet
├── Diagnostics_and_Laboratory_Medicine/validation-00000-of-00001.parquet
├── Pharmacy/validation-00000-of-00001.parquet
└── Public_Health/validation-00000-of-00001.parquet
    (columns id, question, options (a list literal), answer, question_type, image_1…image_7, img_type, subfield)"""


@register("mmmu-med", "MMMU Health & Medicine (validation split)", MMMU_LAYOUT)
def load_mmmu_med(opts: LoadOptions) -> Benchmark:
    bench = "mmmu-med"
    root = _find_dir(opts.data_dir, ("MMMU", "mmmu"))
    if root is None:
        raise missing(bench, opts.data_dir, f"folder {opts.data_dir / 'MMMU'} not found")
    samples = []
    for subject in MMMU_MED_SUBJECTS:
        files = sorted((root / subject).glob("validation-*.parquet"))
        if not files:
            raise missing(bench, opts.data_dir, f"no {root / subject / 'validation-*.parquet'} found")
        for row in _read_parquet(files, bench):
            sid = str(row["id"])
            try:
                options = [str(o) for o in ast.literal_eval(row.get("options") or "[]")]
            except (ValueError, SyntaxError) as e:
                raise BenchmarkDataError(f"{bench}: {files[0]}: item {sid}: options is not a list literal") from e
            images = [
                _parquet_image(row[k], opts, bench, f"{sid} {k}")
                for k in (f"image_{n}" for n in range(1, 8))
                if row.get(k)
            ]
            question = row["question"]
            multiple = row.get("question_type") == "multiple-choice" and options
            index = _answer_index(str(row["answer"]), options) if multiple else None
            answer = options[index] if index is not None else str(row["answer"])
            samples.append(
                make_sample(
                    sample_id=f"mmmu-{sid}",
                    prompt=prompts.mmmu_prompt(question, options if multiple else None, reasoning=opts.reasoning),
                    images=images,
                    answer=answer,
                    answer_index=index,
                    options=options if multiple else None,
                    benchmark=bench,
                    question=question,
                    answer_type="closed" if multiple else "open",
                    question_type=subject,
                    modality=str(row.get("img_type") or "") or None,
                    subfield=row.get("subfield"),
                )
            )
    return Benchmark(bench, samples, root, "MMMU Health & Medicine (validation)")


# ---------------------------------------------------------------- MedXpertQA (MM)
MEDXPERTQA_LAYOUT = """\
DATA_DIR/MedXpertQA/
├── MM/test.jsonl                                  one {id, question, options {A…E}, label, images [names],
│                                                  medical_task, body_system, question_type} per line
└── images/<name>                                  from the release's images.zip"""


@register("medxpertqa", "MedXpertQA multimodal subset (test split)", MEDXPERTQA_LAYOUT)
def load_medxpertqa(opts: LoadOptions) -> Benchmark:
    bench = "medxpertqa"
    root = _find_dir(opts.data_dir, ("MedXpertQA", "medxpertqa"))
    path = root / "MM" / "test.jsonl" if root else opts.data_dir / "MedXpertQA" / "MM" / "test.jsonl"
    if root is None or not path.is_file():
        raise missing(bench, opts.data_dir, f"{path} not found")
    samples = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as e:
                raise BenchmarkDataError(f"{bench}: {path}:{lineno}: not valid JSON") from e
            labels = sorted(item["options"])
            options = [str(item["options"][k]) for k in labels]
            label = str(item["label"]).strip()
            if label not in labels:
                raise BenchmarkDataError(f"{bench}: {path}:{lineno}: label {label!r} is not an option key")
            images = [_check_image(root / "images" / name, bench, opts.data_dir) for name in item.get("images") or []]
            question = item["question"]
            samples.append(
                make_sample(
                    sample_id=f"medxpertqa-{item.get('id', lineno)}",
                    prompt=prompts.choice_prompt(question, options, reasoning=opts.reasoning),
                    images=images,
                    answer=options[labels.index(label)],
                    answer_index=labels.index(label),
                    options=options,
                    benchmark=bench,
                    question=question,
                    answer_type="closed",
                    question_type=item.get("question_type"),
                    medical_task=item.get("medical_task"),
                    body_system=item.get("body_system"),
                )
            )
    return Benchmark(bench, samples, root, "MedXpertQA MM (test)")
