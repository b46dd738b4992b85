"""Our own manifest JSONL: validated line by line, image paths made absolute."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from core.manifest import Sample
from curation.readers._common import ReaderIssue, build_sample


def read_manifest_input(path: Path) -> Iterator[Sample | ReaderIssue]:
    """Yield samples (image paths resolved against the manifest's folder) or an issue per bad line."""
    root = path.parent.resolve()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield ReaderIssue(str(path), where, f"not valid JSON: {e.msg}")
                continue
            item = build_sample(record, str(path), where)
            if isinstance(item, Sample):
                for ref in item.images:
                    ref.path = str(item.resolve(root, ref).resolve())
                    if ref.files:
                        ref.files = [str((root / f).resolve()) if not Path(f).is_absolute() else f for f in ref.files]
            yield item
