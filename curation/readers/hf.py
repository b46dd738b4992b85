"""Hugging Face datasets saved on disk: parquet, JSON/JSONL or Arrow files (``save_to_disk`` folders too).

Read with pandas / pyarrow only: ``save_to_disk`` folders are Arrow IPC stream files, which pyarrow
reads directly, so the ``datasets`` package is not needed. Each row is converted by its columns:
``conversations`` → ShareGPT, ``messages`` → OpenAI, ``question`` + ``answer`` → VQA, ``caption`` /
``text`` / ``report`` → caption. Image columns (``image``, ``images``, ``image_path``) hold paths or HF
``Image`` dicts ``{"bytes", "path"}``; bytes are written to the run's scratch folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.manifest import Sample
from curation.readers._common import ReaderError, ReaderIssue, build_sample, image_from_value, image_kind, meta_from
from curation.readers.openai import convert_openai
from curation.readers.sharegpt import convert_sharegpt

DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json")
_SKIP = {"dataset_info.json", "state.json", "dataset_dict.json"}
_IMAGE_COLS = ("images", "image", "image_path", "img", "img_path")
_CAPTION_COLS = ("caption", "report", "text", "findings")


def data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in DATA_SUFFIXES and p.name not in _SKIP and p.is_file())
    if not files:
        raise ReaderError(f"{path}: no parquet, arrow or JSON files found")
    return files


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif path.suffix == ".arrow":
        import pyarrow as pa

        try:
            with pa.memory_map(str(path)) as src:
                table = pa.ipc.open_stream(src).read_all()  # what datasets' save_to_disk writes
        except pa.ArrowInvalid:
            with pa.memory_map(str(path)) as src:
                table = pa.ipc.open_file(src).read_all()
    else:
        import pandas as pd

        lines = path.read_text(encoding="utf-8").lstrip()[:1] != "["
        df = pd.read_json(path, lines=lines, dtype=False)
        yield from df.to_dict(orient="records")
        return
    yield from table.to_pylist()


def _plain(value: Any) -> Any:
    """numpy arrays from pandas → lists (recursively)."""
    if hasattr(value, "tolist") and not isinstance(value, (bytes, str)):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def convert_row(
    row: dict[str, Any], *, source: str, where: str, root: Path, scratch: Path, index: int
) -> Sample | ReaderIssue:
    row = {k: _plain(v) for k, v in row.items()}
    if row.get("conversations") is not None:
        return convert_sharegpt(row, source=source, where=where, root=root, scratch=scratch, index=index)
    if row.get("messages") is not None:
        return convert_openai(row, source=source, where=where, root=root, scratch=scratch, index=index)
    col = next((c for c in _IMAGE_COLS if row.get(c) is not None), None)
    raw = row.get(col) if col else None
    values = raw if isinstance(raw, list) else ([] if raw is None else [raw])
    images = []
    for value in values:
        try:
            p = image_from_value(value, root, scratch)
        except ValueError as e:
            return ReaderIssue(source, where, f"{col}: {e}")
        images.append({"path": str(p), "kind": image_kind(p)})
    slots = "<image>\n" * len(images)
    sid = str(row.get("id", row.get("qid", f"{Path(source).stem}-{index}")))
    meta = meta_from(row, f"hf:{Path(source).name}")
    if row.get("question") is not None:
        answer = row.get("answer")
        if isinstance(answer, (list, tuple)):
            answer = answer[0] if answer else None
        messages = [{"role": "user", "content": slots + str(row["question"])}]
        if answer is not None:
            messages.append({"role": "assistant", "content": str(answer)})
            meta.setdefault("answer", str(answer))
        data = {"id": sid, "task": "vqa", "messages": messages, "images": images, "meta": meta}
    else:
        cap = next((c for c in _CAPTION_COLS if row.get(c) is not None), None)
        if cap is None:
            return ReaderIssue(source, where, "row has none of conversations, messages, question, caption/text/report")
        data = {"id": sid, "task": "caption", "text": slots + str(row[cap]), "images": images, "meta": meta}
    return build_sample(data, source, where)


def read_hf(path: Path, *, image_root: Path | None, scratch: Path) -> Iterator[Sample | ReaderIssue]:
    """Rows of every data file under ``path`` (sorted), converted by their columns."""
    base = path if path.is_dir() else path.parent
    root = (image_root or base).resolve()
    index = 0
    for f in data_files(path):
        try:
            rows = list(_rows(f))
        except (OSError, ValueError) as e:
            yield ReaderIssue(str(f), "file", f"cannot read: {type(e).__name__}: {e}")
            continue
        for i, row in enumerate(rows):
            yield convert_row(row, source=str(f), where=f"row {i}", root=root, scratch=scratch, index=index)
            index += 1
