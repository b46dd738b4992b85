"""Benchmarks as lists of :class:`core.manifest.Sample`, and the registry that names them.

Every loader normalises its items into samples with one user message (``<image>`` slots, then the
MedEvalKit-style prompt) and ``meta`` fields: ``answer`` (the answer text), ``options`` (texts, no
letters), ``answer_type`` (closed | open), ``question_type``, ``modality``; extra keys ``benchmark``,
``question`` (the raw question), ``answer_index`` (multiple choice), ``lang``.

Spec strings (CLI ``--benchmarks``): ``vqa-rad``, ``slake``, ``pathvqa``, ``pmc-vqa``, ``omnimedvqa``,
``mmmu-med``, ``medxpertqa``, ``phantoms`` and ``manifest:PATH`` (test split of any manifest).
Files are read from ``--data-dir``; nothing is downloaded. A missing file raises
:class:`BenchmarkDataError` whose message shows the directory tree to create.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.manifest import IMAGE_TOKEN, ImageRef, Message, Meta, Sample


class BenchmarkDataError(ValueError):
    """A benchmark's files are missing or malformed; the message says which files to put where."""


@dataclass
class Benchmark:
    """A loaded benchmark: its name, samples, and the folder relative image paths resolve against."""

    name: str
    samples: list[Sample]
    root: Path
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class LoadOptions:
    """Options every loader receives."""

    data_dir: Path
    image_dir: Path  # where images embedded in parquet files are written
    reasoning: bool = False
    phantoms_n: int = 300
    phantoms_seed: int = 1234


Loader = Callable[[LoadOptions], Benchmark]
# name -> (loader, short description, layout text shown in errors and docs)
REGISTRY: dict[str, tuple[Loader, str, str]] = {}
ALIASES = {
    "vqarad": "vqa-rad",
    "vqa_rad": "vqa-rad",
    "path-vqa": "pathvqa",
    "path_vqa": "pathvqa",
    "pmcvqa": "pmc-vqa",
    "pmc_vqa": "pmc-vqa",
    "mmmu": "mmmu-med",
    "mmmu-hm": "mmmu-med",
    "medxpertqa-mm": "medxpertqa",
    "omnimed": "omnimedvqa",
    "phantom": "phantoms",
}
PUBLIC = ("mmmu-med", "vqa-rad", "slake", "pathvqa", "pmc-vqa", "omnimedvqa", "medxpertqa")


def register(name: str, description: str, layout: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader to :data:`REGISTRY`."""

    def deco(fn: Loader) -> Loader:
        REGISTRY[name] = (fn, description, layout)
        return fn

    return deco


def load_benchmark(
    spec: str,
    data_dir: str | Path | None = None,
    *,
    image_dir: str | Path | None = None,
    reasoning: bool = False,
    phantoms_n: int = 300,
    phantoms_seed: int = 1234,
) -> Benchmark:
    """Load a benchmark by spec (see module docstring). ``image_dir`` receives extracted images."""
    from evaluation import loaders, local  # noqa: F401  (they register themselves)

    data = Path(data_dir) if data_dir is not None else Path("data")
    opts = LoadOptions(
        data_dir=data,
        image_dir=Path(image_dir) if image_dir is not None else data / ".infimed-images",
        reasoning=reasoning,
        phantoms_n=phantoms_n,
        phantoms_seed=phantoms_seed,
    )
    if spec.startswith("manifest:"):
        return local.load_manifest_benchmark(Path(spec.split(":", 1)[1]), opts)
    name = ALIASES.get(spec.lower(), spec.lower())
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY)) + ", manifest:PATH"
        raise BenchmarkDataError(f"unknown benchmark {spec!r} (known: {known})")
    return REGISTRY[name][0](opts)


def layout_help(name: str, data_dir: Path) -> str:
    """The directory tree a benchmark expects under ``data_dir``."""
    return REGISTRY[name][2].replace("DATA_DIR", str(data_dir))


def missing(name: str, data_dir: Path, what: str) -> BenchmarkDataError:
    """The error for a missing file: names it and shows the expected tree."""
    return BenchmarkDataError(
        f"{name}: {what}\nExpected layout (nothing is downloaded):\n{layout_help(name, data_dir)}"
    )


def image_kind(path: str | Path) -> str:
    return "dicom" if str(path).lower().endswith((".dcm", ".dicom")) else "image"


def make_sample(
    *,
    sample_id: str,
    prompt: str,
    images: list[str | Path],
    answer: str,
    answer_type: str,
    benchmark: str,
    question: str,
    options: list[str] | None = None,
    answer_index: int | None = None,
    question_type: str | None = None,
    modality: str | None = None,
    body_part: str | None = None,
    **extra: Any,
) -> Sample:
    """One evaluation sample: the images' slots first, then the prompt (MedEvalKit puts images first)."""
    content = "".join(f"{IMAGE_TOKEN}\n" for _ in images) + prompt.replace(IMAGE_TOKEN, "<img>")
    meta = Meta(
        answer=answer,
        options=options,
        answer_type=answer_type,  # type: ignore[arg-type]
        question_type=question_type,
        modality=modality,
        body_part=body_part,
        split="test",
        source=benchmark,
        benchmark=benchmark,
        question=question,
        **({"answer_index": answer_index} if answer_index is not None else {}),
        **{k: v for k, v in extra.items() if v is not None},
    )
    return Sample(
        id=sample_id,
        task="vqa",
        messages=[Message(role="user", content=content)],
        images=[ImageRef(path=str(p), kind=image_kind(p)) for p in images],  # type: ignore[arg-type]
        meta=meta,
    )


def save_image_bytes(data: bytes, image_dir: Path, benchmark: str, hint: str | None = None) -> Path:
    """Write image bytes embedded in a parquet/JSON file once (content-addressed) and return the path."""
    digest = hashlib.sha256(data).hexdigest()[:24]
    suffix = (
        ".jpg"
        if data[:3] == b"\xff\xd8\xff"
        else ".png"
        if data[:8] == b"\x89PNG\r\n\x1a\n"
        else Path(hint or "x.img").suffix or ".img"
    )
    out = image_dir / benchmark / f"{digest}{suffix}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out
