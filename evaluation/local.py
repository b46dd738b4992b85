"""Benchmarks built from manifests: the synthetic phantoms and the test split of any curated manifest.

Their prompts are the samples' own user messages, unchanged: a model fine-tuned on a manifest is
asked exactly what it was trained on (no MedEvalKit instruction is appended). The answer is
``meta.answer`` or else the final assistant message; ``answer_type`` is ``meta.answer_type`` or else
"closed" when the sample lists options or the answer is yes/no.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.manifest import ManifestError, Message, Sample, read_manifest
from evaluation.benchmarks import Benchmark, BenchmarkDataError, LoadOptions, register
from evaluation.extract import is_yes_no, normalize

log = logging.getLogger(__name__)

PHANTOMS_LAYOUT = """\
DATA_DIR/phantoms/
├── manifest.jsonl (or any *.jsonl)                a phantom manifest (core.phantoms / `infimed phantoms --out`);
│                                                  samples with meta.split == "test" are evaluated
└── images/…                                       paths relative to the manifest
(when the folder has no manifest and core.phantoms is installed, one is generated there)"""


def to_eval_sample(sample: Sample, source: str) -> Sample | None:
    """The evaluation form of a VQA sample (prompt messages + answer in meta), or ``None`` if it has no answer."""
    if sample.messages is None:
        return None
    messages = list(sample.messages)
    answer = sample.meta.answer
    if messages and messages[-1].role == "assistant":
        last = messages.pop()
        if answer is None:
            answer = last.text()
    if not messages or answer is None or not answer.strip():
        return None
    meta = sample.meta.model_copy(deep=True)
    meta.answer = answer.strip()
    if meta.answer_type is None:
        meta.answer_type = "closed" if meta.options or is_yes_no(answer) else "open"
    if meta.options:
        norm = [normalize(o) for o in meta.options]
        if normalize(answer) in norm:
            meta.answer_index = norm.index(normalize(answer))
    question = next((m.text() for m in reversed(messages) if m.role == "user"), "")
    meta.question = question
    meta.benchmark = source
    return sample.model_copy(
        update={"messages": [Message.model_validate(m.model_dump()) for m in messages], "meta": meta}
    )


def manifest_benchmark(path: Path, name: str, *, split: str = "test") -> Benchmark:
    """The ``split`` samples of a manifest (all samples when no sample carries a split)."""
    try:
        samples = list(read_manifest(path))
    except ManifestError as e:
        raise BenchmarkDataError(str(e)) from e
    has_splits = any(s.meta.split for s in samples)
    chosen = [s for s in samples if s.meta.split == split] if has_splits else samples
    if not has_splits:
        log.warning("%s: no sample carries meta.split; evaluating all %d samples", path.name, len(samples))
    out = [e for e in (to_eval_sample(s, name) for s in chosen) if e is not None]
    if not out:
        raise BenchmarkDataError(
            f"{path}: no VQA sample with an answer in split {split!r} "
            f"({len(samples)} samples read; set meta.split to 'test' on the held-out ones)"
        )
    return Benchmark(name, out, path.parent, f"{name} ({split} split of {path.name})")


def load_manifest_benchmark(path: Path, opts: LoadOptions) -> Benchmark:
    """``manifest:PATH`` — how a hospital evaluates on its own curated data."""
    if not path.is_file():
        raise BenchmarkDataError(f"manifest:{path}: file not found")
    return manifest_benchmark(path, f"manifest:{path.stem}")


def _find_manifest(folder: Path) -> Path | None:
    if (folder / "manifest.jsonl").is_file():
        return folder / "manifest.jsonl"
    found = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    return found[0] if found else None


@register("phantoms", "synthetic CT / X-ray / MR phantoms with known answers (held-out split)", PHANTOMS_LAYOUT)
def load_phantoms(opts: LoadOptions) -> Benchmark:
    folder = opts.data_dir / "phantoms"
    manifest = _find_manifest(folder)
    if manifest is None:
        try:
            from core.phantoms import generate_phantoms  # type: ignore[import-not-found]
        except ImportError as e:
            raise BenchmarkDataError(
                f"phantoms: no manifest in {folder} and core.phantoms is not available; "
                "write one with `infimed phantoms --out " + str(folder) + "`"
            ) from e
        log.info("generating %d phantoms (seed %d) in %s", opts.phantoms_n, opts.phantoms_seed, folder)
        result = generate_phantoms(folder, n=opts.phantoms_n, seed=opts.phantoms_seed)
        manifest = (
            Path(result)
            if isinstance(result, (str, Path)) and str(result).endswith(".jsonl")
            else _find_manifest(folder)
        )
        if manifest is None:
            raise BenchmarkDataError(f"phantoms: generate_phantoms wrote no manifest in {folder}")
    return manifest_benchmark(manifest, "phantoms")
