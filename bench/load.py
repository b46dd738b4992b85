"""A bounded load test on loopback: mixed text / PNG / DICOM requests at concurrency 16, then 64.

    .venv/bin/python bench/load.py [--requests 500]

Goals (issue 4): zero 5xx and zero dropped connections; every request answered (200) or refused with
429; the gateway's RSS at the end within 10 % of its RSS after warm-up. The second run (concurrency 64)
is meant to trigger back-pressure, so the gateway runs with a small cap (--max-concurrency 16,
queue 16) for this benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench._serving import dicom_url, engine_and_gateway, percentile, png_url  # noqa: E402


def _bodies(model: str) -> list[dict]:
    png, dcm = png_url(), dicom_url()
    text = {"model": model, "messages": [{"role": "user", "content": "Summarise a normal chest CT."}], "max_tokens": 16}
    img = {"model": model, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png}}, {"type": "text", "text": "Describe."}]}], "max_tokens": 16}
    dicom = {"model": model, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": dcm, "dicom": {"window": "lung"}}}, {"type": "text", "text": "Describe."}]}], "max_tokens": 16}
    return [text, img, dicom]


async def _load(url: str, key: str, bodies: list[dict], n: int, concurrency: int, seed: int) -> tuple[collections.Counter, list[float], float]:
    rng = random.Random(seed)
    plan = [rng.choice(bodies) for _ in range(n)]
    codes: collections.Counter = collections.Counter()
    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers={"Authorization": f"Bearer {key}"}) as http:

        async def one(body: dict) -> None:
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await http.post(url + "/v1/chat/completions", json=body)
                    codes[r.status_code] += 1
                except httpx.HTTPError as e:
                    codes[f"dropped:{type(e).__name__}"] += 1
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in plan))
        wall = time.perf_counter() - t0
    return codes, lat, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    args = ap.parse_args()
    ok = True
    os.environ.setdefault("INFIMED_MAX_CONCURRENCY", "16")
    os.environ.setdefault("INFIMED_QUEUE_SIZE", "16")
    with engine_and_gateway() as (engine_url, gw_url, key, gw_pid, model):
        proc = psutil.Process(gw_pid)
        bodies = _bodies(model)
        asyncio.run(_load(gw_url, key, bodies, 30, 8, seed=0))  # warm-up
        rss_warm = proc.memory_info().rss
        print(f"\nload: {args.requests} mixed text/PNG/DICOM requests per run, max_tokens 16; gateway RSS after warm-up {rss_warm / 2**20:.0f} MB")
        for conc in (16, 64):
            codes, lat, wall = asyncio.run(_load(gw_url, key, bodies, args.requests, conc, seed=conc))
            five = sum(v for k, v in codes.items() if isinstance(k, int) and k >= 500)
            dropped = sum(v for k, v in codes.items() if isinstance(k, str))
            other = sum(v for k, v in codes.items() if k not in (200, 429) and not (isinstance(k, int) and k >= 500) and not isinstance(k, str))
            ok &= five == 0 and dropped == 0 and other == 0
            print(f"  concurrency {conc:>3}: {dict(codes)}  in {wall:.1f} s ({args.requests / wall:.1f} req/s); p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
                  f"p95 {percentile(lat, 0.95) * 1000:.0f} ms; 5xx {five}, dropped {dropped}")  # fmt: skip
        rss_end = proc.memory_info().rss
    growth = rss_end / rss_warm - 1
    ok &= growth <= 0.10
    print(f"  gateway RSS at the end {rss_end / 2**20:.0f} MB ({growth * 100:+.1f} % vs after warm-up; goal within 10 %)")
    print(f"load: {'all goals met' if ok else 'GOALS NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
