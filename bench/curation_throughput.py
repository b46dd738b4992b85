"""Throughput of curation's deterministic scorers on 512² images, 1 vs 2 workers, beside a numpy ceiling.

    OMP_NUM_THREADS=1 .venv/bin/python bench/curation_throughput.py [--samples 256] [--shard-size 32]

What it measures, all in one run on the same files:
1. the scoring stage of ``infimed curate`` (decode, five-dimension scorers, PHI scan, pHash, MinHash,
   token budget) — ``curation.pipeline.score_all`` with 1 worker, then 2 worker processes;
2. a plain numpy CPU-bound loop (no I/O, no Python-level work) in 1 process, then 2, which is the
   best 1 → 2 scaling this machine gives right now (the cores are shared with other work).
Goals (issue 6): ≥ 100 samples/s per core, ≥ 1.7× from 1 to 2 workers. Samples per CPU-second are printed
too: on a machine shared with other work, wall-clock rates undercount what one core does.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
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
    args = ap.parse_args()

    from curation.pipeline import score_all, score_shard
    from curation.recipe import Recipe, default_recipe_path, load_recipe

    data = load_recipe(default_recipe_path()).model_dump()
    data["run"]["shard_size"] = args.shard_size
    data["splits"]["salt"] = "bench"
    recipe = Recipe.model_validate(data)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        samples = make_data(folder, args.samples)
        score_shard(0, 0, samples[:4], recipe, "bench")  # warm-up: imports and caches, inherited by forked workers
        rates, per_cpu_s = {}, {}
        for workers in (1, 2):
            state = folder / f"state{workers}"
            t, c = time.perf_counter(), cpu_seconds()
            score_all(samples, recipe, "bench", state, workers=workers, progress=False)
            rates[workers] = len(samples) / (time.perf_counter() - t)
            per_cpu_s[workers] = len(samples) / (cpu_seconds() - c)
        n_np = max(64, args.samples // 2)
        numpy_task(0)
        np1, np2 = numpy_rate(n_np, 1), numpy_rate(n_np, 2)

    result = {
        "cpu_count": os.cpu_count(),
        "samples": args.samples,
        "image": "512x512 PNG",
        "curation_1_worker_samples_per_s": round(rates[1], 1),
        "curation_2_workers_samples_per_s": round(rates[2], 1),
        "curation_scaling_1_to_2": round(rates[2] / rates[1], 2),
        "curation_samples_per_cpu_second_1_worker": round(per_cpu_s[1], 1),
        "curation_samples_per_cpu_second_2_workers": round(per_cpu_s[2], 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "numpy_1_proc_items_per_s": round(np1, 1),
        "numpy_2_procs_items_per_s": round(np2, 1),
        "numpy_ceiling_scaling_1_to_2": round(np2 / np1, 2),
        "curation_scaling_vs_ceiling": round((rates[2] / rates[1]) / (np2 / np1), 2),
    }
    print(f"curation scoring, {args.samples} samples of 512² (shards of {args.shard_size}):")
    print(f"  1 worker : {rates[1]:7.1f} samples/s   (goal ≥ 100 per core); {per_cpu_s[1]:.1f} per CPU-second")
    print(
        f"  2 workers: {rates[2]:7.1f} samples/s   scaling {rates[2] / rates[1]:.2f}×  (goal ≥ 1.7×); "
        f"{per_cpu_s[2]:.1f} per CPU-second"
    )
    print(f"numpy ceiling on this machine now: 1 proc {np1:.1f}/s, 2 procs {np2:.1f}/s, scaling {np2 / np1:.2f}×")
    print(
        f"curation scaling / numpy ceiling scaling: {result['curation_scaling_vs_ceiling']:.2f}"
        f"   (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: shared machine)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
