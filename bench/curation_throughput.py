"""Throughput of curation's deterministic scorers on 512² images, 1 vs 2 workers, beside a numpy ceiling.

    OMP_NUM_THREADS=1 .venv/bin/python bench/curation_throughput.py [--samples 256] [--shard-size 32] [--rounds 3]

What it measures, all in one run on the same files:
1. the scoring stage of ``infimed curate`` (decode, five-dimension scorers, PHI scan, pHash, MinHash,
   token budget) — ``curation.pipeline.score_all`` with 1 worker and with 2 worker processes (pool start,
   hand-off and shard writes included);
2. a plain numpy CPU-bound loop (no I/O, no Python-level work) in 1 process and in 2, which is the
   best 1 → 2 scaling this machine gives right now (the cores are shared with other work).
The four measurements run side by side in each of ``--rounds`` rounds, in an order that alternates per
round, so a change of load on a shared machine hits both sides; every figure is the median over the
rounds, and each scaling is the median of the per-round ratios (the ratio of one round is measured
within seconds). Goals (issue 6): ≥ 100 samples/s per core, ≥ 1.7× from 1 to 2 workers. Samples per
CPU-second are printed too: on a machine shared with other work, wall-clock rates undercount what one
core does.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image


def make_data(folder: Path, n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    samples = []
    for i in range(n):
        a = np.zeros((512, 512), np.float32)
        a[((xx - 256) / 215) ** 2 + ((yy - 256) / 195) ** 2 < 1] = 110
        for _ in range(6):
            cx, cy, r = rng.integers(128, 384, 2).tolist() + [int(rng.integers(5, 40))]
            a[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(150, 255)
        a += rng.normal(0, 6, a.shape)
        p = folder / f"img{i:04d}.png"
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p, compress_level=1)
        samples.append(
            {
                "schema_version": 1,
                "id": f"b{i}",
                "task": "vqa",
                "messages": [
                    {"role": "user", "content": "<image>\nIs there a nodule in the left lung on this chest CT?"},
                    {
                        "role": "assistant",
                        "content": f"Yes, {i % 5 + 1} nodules in the left lower lobe, seen on 2021-03-04.",
                    },
                ],
                "images": [{"path": str(p), "kind": "image"}],
                "meta": {"modality": "CT"},
            }
        )
    return samples


def numpy_task(seed: int) -> float:
    """About the arithmetic of one sample's image statistics, in numpy only."""
    g = np.random.default_rng(seed).random((512, 512), dtype=np.float32) * 255
    total = 0.0
    for _ in range(6):
        lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
        total += float(lap.var()) + float(np.percentile(g[::2, ::2], 99))
    return total


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (pool workers are reaped before we read it)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def numpy_rate(n: int, procs: int) -> float:
    t = time.perf_counter()
    if procs == 1:
        for i in range(n):
            numpy_task(i)
    else:
        with mp.get_context("fork").Pool(procs) as pool:
            pool.map(numpy_task, range(n), chunksize=max(1, n // (4 * procs)))
    return n / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--shard-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from curation.pipeline import score_all, score_shard
    from curation.recipe import Recipe, default_recipe_path, load_recipe

    data = load_recipe(default_recipe_path()).model_dump()
    data["run"]["shard_size"] = args.shard_size
    data["splits"]["salt"] = "bench"
    recipe = Recipe.model_validate(data)
    n_np = max(64, args.samples // 2)

    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        samples = make_data(folder, args.samples)
        score_shard(0, 0, samples[:4], recipe, "bench")  # warm-up: imports and caches, inherited by forked workers
        numpy_task(0)

        def curation(workers: int, r: int) -> dict[str, float]:
            state = folder / f"state-{r}-{workers}"
            t, c = time.perf_counter(), cpu_seconds()
            score_all(samples, recipe, "bench", state, workers=workers, progress=False)
            return {
                f"cur{workers}": len(samples) / (time.perf_counter() - t),
                f"cur{workers}_cpu": len(samples) / (cpu_seconds() - c),
            }

        steps = [
            lambda r: curation(1, r),
            lambda r: curation(2, r),
            lambda r: {"np1": numpy_rate(n_np, 1)},
            lambda r: {"np2": numpy_rate(n_np, 2)},
        ]
        for r in range(args.rounds):
            row: dict[str, float] = {}
            for step in steps if r % 2 == 0 else steps[::-1]:
                row |= step(r)
            rounds.append(row)

    def med(key: str) -> float:
        return statistics.median(row[key] for row in rounds)

    def med_ratio(a: str, b: str) -> float:
        return statistics.median(row[a] / row[b] for row in rounds)

    scaling, ceiling = med_ratio("cur2", "cur1"), med_ratio("np2", "np1")
    vs = statistics.median((row["cur2"] / row["cur1"]) / (row["np2"] / row["np1"]) for row in rounds)
    result = {
        "cpu_count": os.cpu_count(),
        "samples": args.samples,
        "rounds": args.rounds,
        "image": "512x512 PNG",
        "curation_1_worker_samples_per_s": round(med("cur1"), 1),
        "curation_2_workers_samples_per_s": round(med("cur2"), 1),
        "curation_scaling_1_to_2": round(scaling, 2),
        "curation_scaling_per_round": [round(row["cur2"] / row["cur1"], 2) for row in rounds],
        "curation_samples_per_cpu_second_1_worker": round(med("cur1_cpu"), 1),
        "curation_samples_per_cpu_second_2_workers": round(med("cur2_cpu"), 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "numpy_1_proc_items_per_s": round(med("np1"), 1),
        "numpy_2_procs_items_per_s": round(med("np2"), 1),
        "numpy_ceiling_scaling_1_to_2": round(ceiling, 2),
        "numpy_ceiling_per_round": [round(row["np2"] / row["np1"], 2) for row in rounds],
        "curation_scaling_vs_ceiling": round(vs, 2),
    }
    print(
        f"curation scoring, {args.samples} samples of 512² (shards of {args.shard_size}), median of {args.rounds} rounds:"
    )
    print(f"  1 worker : {med('cur1'):7.1f} samples/s   (goal ≥ 100 per core); {med('cur1_cpu'):.1f} per CPU-second")
    print(
        f"  2 workers: {med('cur2'):7.1f} samples/s   scaling {scaling:.2f}×  (goal ≥ 1.7×); "
        f"{med('cur2_cpu'):.1f} per CPU-second; per round {result['curation_scaling_per_round']}"
    )
    print(
        f"numpy ceiling on this machine now: 1 proc {med('np1'):.1f}/s, 2 procs {med('np2'):.1f}/s, "
        f"scaling {ceiling:.2f}×; per round {result['numpy_ceiling_per_round']}"
    )
    print(
        f"curation scaling / numpy ceiling scaling: {vs:.2f}"
        f"   (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: shared machine)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
