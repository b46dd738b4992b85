"""The optional Ray Data engine: one slow test on a local Ray with num_cpus=1 and a guaranteed shutdown.

Skipped only when ``ray`` cannot be imported (it is an optional extra, not installed by default).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from curation import InputSpec, curate
from curation._io import read_jsonl

from .conftest import make_image, vqa, write_jsonl


@pytest.mark.slow
def test_ray_engine_matches_local(tmp_path: Path, recipe_factory) -> None:
    ray = pytest.importorskip("ray", reason="ray is an optional extra and is not installed")
    for i in range(5):
        make_image(tmp_path / f"{i}.png", seed=i)
    write_jsonl(
        tmp_path / "m.jsonl",
        [vqa(f"s{i}", f"{i}.png", "Is there a nodule in the lung?", f"Yes, {i + 1} nodules.") for i in range(5)],
    )
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        curate(
            recipe_factory(**{"run.engine": "ray"}), [InputSpec(tmp_path / "m.jsonl")], tmp_path / "ray", progress=False
        )
    finally:
        ray.shutdown()
    curate(recipe_factory(), [InputSpec(tmp_path / "m.jsonl")], tmp_path / "local", workers=1, progress=False)
    assert read_jsonl(tmp_path / "ray" / "kept.jsonl") == read_jsonl(tmp_path / "local" / "kept.jsonl")


def test_ray_engine_without_ray_fails_clearly(monkeypatch) -> None:
    import sys

    from curation.ray_runner import score_shards_ray

    from .conftest import test_recipe

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the optional extra were not installed
    with pytest.raises(RuntimeError, match="pip install"):
        list(score_shards_ray([(0, 0, [])], test_recipe(), "salt"))
