"""Optional Ray Data engine for data beyond one machine (``run.engine: ray``; ``pip install "ray[data]"``).

Shards become rows of a Ray dataset; ``map_batches`` scores them on the cluster's CPUs and the driver
writes each finished shard to ``.state`` exactly as the local engine does, so resume, dedup, the judge and
the report are shared. Connect to a cluster with ``RAY_ADDRESS`` (else a local Ray starts).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from curation.recipe import Recipe


def _require_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("run.engine: ray needs the optional package ray (pip install 'ray[data]')") from e
    return ray


def score_shards_ray(
    todo: Sequence[tuple[int, int, list[dict[str, Any]]]], recipe: Recipe, salt: str, *, num_cpus: int | None = None
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Score shards with Ray Data; yields ``(shard, records)`` as the driver receives them."""
    import json

    ray = _require_ray()
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        started = True
    recipe_json = recipe.model_dump_json()
    try:
        rows = [{"shard": k, "start": s, "samples": json.dumps(items)} for k, s, items in todo]

        def score(batch: dict[str, Any]) -> dict[str, Any]:
            from curation.pipeline import score_shard

            r = Recipe.model_validate_json(recipe_json)
            out = [
                json.dumps(score_shard(int(k), int(s), json.loads(items), r, salt))
                for k, s, items in zip(batch["shard"], batch["start"], batch["samples"])
            ]
            return {"shard": list(batch["shard"]), "records": out}

        ds = ray.data.from_items(rows).map_batches(score, batch_size=1, batch_format="numpy")
        for row in ds.iter_rows():
            yield int(row["shard"]), json.loads(row["records"])
    finally:
        if started:
            ray.shutdown()
