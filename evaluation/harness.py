"""Run a benchmark against an OpenAI-compatible endpoint: requests, predictions, scores, metrics.

Library use (what ``infimed eval`` and the end-to-end script call)::

    from core.client import OpenAIClient
    from evaluation import evaluate

    client = OpenAIClient("http://localhost:8000/v1", "sk-…", concurrency=4)
    metrics = evaluate(client, model="infimed-tiny", benchmark="phantoms", out_dir="runs/base",
                       data_dir="data")
    print(metrics.accuracy, metrics.summary["by_question_type"])

Outputs in ``out_dir/<benchmark>/``: ``predictions.jsonl`` (one line per item, written as answers
arrive, so an interrupted run resumes: items whose request is unchanged are not asked again) and
``metrics.json``. Requests use greedy decoding (``temperature`` 0) unless ``params`` says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.client import ChatRequest, OpenAIClient, image_part
from core.manifest import IMAGE_TOKEN, ImageRef, Sample
from evaluation.benchmarks import Benchmark, load_benchmark
from evaluation.judge import Judge
from evaluation.metrics import OPEN_KEYS, aggregate
from evaluation.scoring import answer_index, score_response

log = logging.getLogger(__name__)

DEFAULT_PARAMS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 512}


@dataclass
class Metrics:
    """The scores of one model on one benchmark (``summary`` is :func:`evaluation.metrics.aggregate`)."""

    benchmark: str
    model: str
    n: int
    summary: dict[str, Any]
    contamination: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        """Each question counted once: closed by rules, open by exact match (or the judge)."""
        return self.summary["overall"]["acc"]

    @property
    def closed_accuracy(self) -> float | None:
        return self.summary["closed"]["acc"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "model": self.model,
            "n": self.n,
            **self.summary,
            "contamination": self.contamination,
            "config": self.config,
        }


def slug(name: str) -> str:
    """A folder name for a benchmark name (``manifest:ward7`` → ``manifest_ward7``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "benchmark"


# ---------------------------------------------------------------- request building
def image_files(sample: Sample, root: Path, ref: ImageRef) -> list[Path]:
    """The files behind an image slot: one path, or a series' files (relative to the manifest, as ``path``)."""
    if ref.kind == "series" and ref.files:
        return [sample.resolve(root, ImageRef(path=f)) for f in ref.files]
    return [sample.resolve(root, ref)]


def _image_parts(ref: ImageRef, files: list[Path], *, send_dicom: bool, max_pixels: int | None) -> list[dict[str, Any]]:
    if ref.kind == "image":
        return [image_part(files[0])]
    options = ref.render.model_dump(exclude_none=True) if ref.render else {}
    if send_dicom:
        from core.dicom import dicom_part

        return [dicom_part(f, **options) for f in files]
    # Not our gateway: render to PNG here, with the same code the gateway uses.
    from core.budget import PixelBudget
    from core.manifest import RenderSpec
    from core.render import render  # type: ignore[import-not-found]

    budget = PixelBudget(min_pixels=28 * 28, max_pixels=max_pixels or ref.max_pixels or 1_003_520)
    images, _record = render(files if len(files) > 1 else files[0], RenderSpec(**options), budget)
    parts = []
    for im in images:
        if not hasattr(im, "save"):
            from PIL import Image

            im = Image.fromarray(im)
        parts.append(image_part(im))
    return parts


def build_messages(
    sample: Sample, root: Path, *, send_dicom: bool = False, max_pixels: int | None = None
) -> list[dict[str, Any]]:
    """OpenAI messages for a sample: ``<image>`` slots become image parts in place."""
    out: list[dict[str, Any]] = []
    next_image = 0
    for m in sample.messages or []:
        parts: list[dict[str, Any]] = []
        if isinstance(m.content, str):
            pieces = m.content.split(IMAGE_TOKEN)
            for k, piece in enumerate(pieces):
                if k > 0:
                    ref = sample.images[next_image]
                    parts += _image_parts(
                        ref, image_files(sample, root, ref), send_dicom=send_dicom, max_pixels=max_pixels
                    )
                    next_image += 1
                if piece.strip():
                    parts.append({"type": "text", "text": piece.strip()})
        else:
            for p in m.content:
                if p.type == "text" and p.text:
                    parts.append({"type": "text", "text": p.text})
                elif p.type == "image":
                    idx = p.index if p.index is not None else next_image
                    ref = sample.images[idx]
                    parts += _image_parts(
                        ref, image_files(sample, root, ref), send_dicom=send_dicom, max_pixels=max_pixels
                    )
                    next_image = idx + 1
        has_image = any(p["type"] == "image_url" for p in parts)
        if m.role == "user" and has_image:
            out.append({"role": m.role, "content": parts})
        else:
            out.append({"role": m.role, "content": "\n".join(p["text"] for p in parts if p["type"] == "text")})
    return out


def item_key(sample: Sample, root: Path, *, model: str, params: dict[str, Any], send_dicom: bool) -> str:
    """A cheap request fingerprint for resuming: prompt, image files (path, size, mtime), model, params."""
    files = []
    for ref in sample.images:
        for p in image_files(sample, root, ref):
            try:
                st = p.stat()
                files.append([str(p), st.st_size, int(st.st_mtime)])
            except OSError:
                files.append([str(p), None, None])
    blob = json.dumps(
        {
            "model": model,
            "params": params,
            "dicom": send_dicom,
            "images": files,
            "messages": [m.model_dump(mode="json") for m in sample.messages or []],
            "render": [r.render.model_dump() if r.render else None for r in sample.images],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def shuffle_images(samples: list[Sample], seed: int) -> list[Sample]:
    """The control: images permuted across samples (same number of images), questions kept."""
    rng = random.Random(seed)
    by_count: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_count.setdefault(len(s.images), []).append(i)
    out = list(samples)
    for count, idxs in by_count.items():
        if count == 0 or len(idxs) < 2:
            continue
        perm = idxs[:]
        rng.shuffle(perm)
        for dst, src in zip(idxs, perm, strict=True):
            out[dst] = samples[dst].model_copy(update={"images": samples[src].images})
    return out


# ---------------------------------------------------------------- predictions file
def _read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by an interruption
            if isinstance(rec, dict) and rec.get("id") and rec.get("error") is None and "response" in rec:
                done[rec["id"]] = rec
    return done


def _write_jsonl_atomic(path: Path, records: list[dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temp file and rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _base_record(sample: Sample, key: str, model: str) -> dict[str, Any]:
    m = sample.meta
    return {
        "id": sample.id,
        "benchmark": getattr(m, "benchmark", None) or m.source,
        "model": model,
        "key": key,
        "question": getattr(m, "question", None),
        "answer": m.answer,
        "answer_index": answer_index(sample),
        "options": m.options,
        "answer_type": m.answer_type,
        "question_type": m.question_type,
        "modality": m.modality,
    }


# ---------------------------------------------------------------- evaluate
def evaluate(
    client: OpenAIClient,
    *,
    model: str,
    benchmark: str | Benchmark,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    params: dict[str, Any] | None = None,
    reasoning: bool = False,
    send_dicom: bool = False,
    max_pixels: int | None = None,
    judge: Judge | None = None,
    train_manifest: str | Path | None = None,
    shuffle_images_seed: int | None = None,
    progress: bool = True,
    name: str | None = None,
    phantoms_n: int = 300,
    phantoms_seed: int = 1234,
) -> Metrics:
    """Evaluate ``model`` on one benchmark; write predictions and metrics under ``out_dir/<name>/``.

    ``benchmark`` is a spec (``"vqa-rad"``, ``"phantoms"``, ``"manifest:PATH"``) read from ``data_dir``,
    or a loaded :class:`Benchmark`. ``limit`` keeps the first N items; ``shuffle_images_seed`` runs the
    shuffled-image control; ``train_manifest`` adds the contamination report. ``phantoms_n`` /
    ``phantoms_seed`` size the phantom set generated when ``data_dir/phantoms`` holds none. Failed requests
    count as wrong, are recorded with their error, and are asked again by the next run.
    """
    out_root = Path(out_dir)
    if isinstance(benchmark, str):
        bench = load_benchmark(
            benchmark,
            data_dir,
            image_dir=out_root / "images",
            reasoning=reasoning,
            phantoms_n=phantoms_n,
            phantoms_seed=phantoms_seed,
        )
    else:
        bench = benchmark
    samples = bench.samples[:limit] if limit else list(bench.samples)
    if shuffle_images_seed is not None:
        samples = shuffle_images(samples, shuffle_images_seed)
    run_name = name or bench.name + ("-shuffled" if shuffle_images_seed is not None else "")
    folder = out_root / slug(run_name)
    folder.mkdir(parents=True, exist_ok=True)
    pred_path = folder / "predictions.jsonl"
    request_params = {**DEFAULT_PARAMS, **(params or {})}

    keys = [item_key(s, bench.root, model=model, params=request_params, send_dicom=send_dicom) for s in samples]
    previous = _read_predictions(pred_path)
    records: list[dict[str, Any] | None] = [None] * len(samples)
    todo: list[int] = []
    for i, (s, k) in enumerate(zip(samples, keys, strict=True)):
        old = previous.get(s.id)
        if old is not None and old.get("key") == k:
            records[i] = {
                **_base_record(s, k, model),
                "response": old["response"],
                "finish_reason": old.get("finish_reason"),
                "error": None,
                "resumed": True,
            }
        else:
            todo.append(i)
    log.info(
        "%s: %d items, %d resumed from %s, %d to ask",
        run_name,
        len(samples),
        len(samples) - len(todo),
        pred_path.name,
        len(todo),
    )

    sent: list[int] = []  # todo positions in the order their requests were handed to the client

    def requests() -> Iterator[ChatRequest]:
        for i in todo:
            try:
                msgs = build_messages(samples[i], bench.root, send_dicom=send_dicom, max_pixels=max_pixels)
            except (OSError, ValueError, ImportError) as e:  # unreadable image, refused render, …
                log.warning("%s: item %d not sent: %s", run_name, i, type(e).__name__)
                records[i] = {
                    **_base_record(samples[i], keys[i], model),
                    "response": "",
                    "finish_reason": None,
                    "error": f"{type(e).__name__}: {_short(e)}",
                }
                continue
            sent.append(i)
            yield ChatRequest(msgs, model, request_params)

    # Keep what is already known, then append answers as they arrive (an interruption loses nothing).
    _write_jsonl_atomic(pred_path, [r for r in records if r is not None])
    with pred_path.open("a", encoding="utf-8") as fh:
        for j, result in client.map_chat(_Sized(requests(), len(todo)), progress=run_name if progress else None):
            i = sent[j]
            rec = _base_record(samples[i], keys[i], model)
            if isinstance(result, Exception):
                rec.update(response="", finish_reason=None, error=f"{type(result).__name__}: {_short(result)}")
            else:
                rec.update(response=result.text, finish_reason=result.finish_reason, error=None)
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                fh.flush()
            records[i] = rec

    assert all(r is not None for r in records), "every item has a record"
    final: list[dict[str, Any]] = records  # type: ignore[assignment]
    for s, rec in zip(samples, final, strict=True):
        rec.update(
            score_response(s, rec["response"])
            if rec["error"] is None
            else {"correct": False, "extracted": None, "method": "error", "refusal": False}
        )
        if rec["answer_type"] == "open" and "scores" not in rec:
            rec["scores"] = dict.fromkeys(OPEN_KEYS, 0.0)
        rec["judge"] = None
    if judge is not None:
        _apply_judge(judge, final, progress=progress)

    contamination = None
    if train_manifest is not None:
        from evaluation.contamination import check_contamination

        report = check_contamination(samples, bench.root, train_manifest)
        bad = set(report.ids["contaminated"])
        contamination = report.to_dict()
        for rec in final:
            rec["contaminated"] = rec["id"] in bad
    _write_jsonl_atomic(pred_path, final)

    summary = aggregate(final)
    if contamination is not None:
        clean = [r for r in final if not r.get("contaminated")]
        clean_summary = aggregate(clean) if clean else None
        contamination["clean_summary"] = (
            {"overall": clean_summary["overall"], "closed": clean_summary["closed"]} if clean_summary else None
        )
    config = {
        "params": request_params,
        "reasoning": reasoning,
        "send_dicom": send_dicom,
        "limit": limit,
        "shuffle_images_seed": shuffle_images_seed,
        "judge_model": judge.model if judge else None,
        "description": bench.description,
        "base_url": getattr(client, "base_url", None),
    }
    metrics = Metrics(run_name, model, len(final), summary, contamination, config)
    write_json_atomic(folder / "metrics.json", metrics.to_dict())
    if summary["errors"]:
        log.warning("%s: %d requests failed (counted wrong); rerun to retry them", run_name, summary["errors"])
    return metrics


class _Sized:
    """A lazy iterable with a length, so the progress bar knows its total without building every request."""

    def __init__(self, it: Iterator[ChatRequest], n: int) -> None:
        self._it, self._n = it, n

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[ChatRequest]:
        return self._it


def _apply_judge(judge: Judge, records: list[dict[str, Any]], *, progress: bool) -> None:
    open_recs = [r for r in records if r["answer_type"] == "open" and r["error"] is None]
    if not open_recs:
        return
    verdicts = judge.judge_many(
        ((r["question"] or "", r["answer"] or "", r["extracted"] or r["response"]) for r in open_recs),
        progress="judge" if progress else None,
    )
    for rec, verdict in zip(open_recs, verdicts, strict=True):
        rec["judge"] = verdict
        if verdict is not None:
            rec["correct"] = verdict


def _short(e: Exception) -> str:
    # Error messages from servers may echo request content; keep only the first line, capped.
    return str(e).splitlines()[0][:200] if str(e) else ""
