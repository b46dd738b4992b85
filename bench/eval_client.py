"""Throughput of the shared OpenAI client against a fake server with a fixed latency, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python bench/eval_client.py [--n 64] [--latency 0.05]

Prints wall time for the same requests run sequentially (concurrency 1), with concurrency 8, and
again from the on-disk cache, and the ratios between them (measured in one run).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from core.client import ChatRequest, OpenAIClient
from evaluation.fake_server import FakeOpenAIServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.05)
    args = ap.parse_args()

    def slow(body: dict) -> str:
        time.sleep(args.latency)
        return "yes"

    reqs = [ChatRequest([{"role": "user", "content": f"q{i}"}], "m", {"temperature": 0}) for i in range(args.n)]
    with FakeOpenAIServer(slow) as srv, tempfile.TemporaryDirectory() as cache:
        timings = {}
        for label, conc, cache_dir in (("sequential", 1, None), ("concurrency=8", 8, cache), ("cached", 8, cache)):
            client = OpenAIClient(srv.base_url, "k", concurrency=conc, cache_dir=cache_dir)
            t0 = time.perf_counter()
            results = list(client.map_chat(reqs))
            timings[label] = time.perf_counter() - t0
            assert all(not isinstance(r, Exception) for _, r in results)
    for label, t in timings.items():
        print(f"{label:<14} {args.n} requests in {t:6.3f} s  ({args.n / t:7.1f} req/s)")
    print(f"speed-up concurrency=8 vs sequential: {timings['sequential'] / timings['concurrency=8']:.1f}x")
    print(f"speed-up cached vs concurrency=8:     {timings['concurrency=8'] / timings['cached']:.1f}x")


if __name__ == "__main__":
    main()
