"""The evaluation harness against the live tiny-model server (the real gateway, the real engine), through
the CLI a user runs. The tiny model's answers are noise: what is checked is the plumbing — every item
answered, predictions and metrics written, DICOM parts rendered by the gateway, and a rerun served from
the cached predictions."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_eval_cli_on_phantoms_through_the_gateway(gateway, tmp_path):
    from infimed.cli import main

    out = tmp_path / "run"
    argv = ["eval", "--base-url", gateway.base_url, "--api-key", gateway.api_key, "--model", gateway.model,
            "--benchmarks", "phantoms", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--limit", "12",
            "--send-dicom", "always", "--concurrency", "4"]  # fmt: skip
    assert main(argv) == 0
    preds = [json.loads(line) for p in out.rglob("predictions.jsonl") for line in p.read_text().splitlines() if line.strip()]
    assert len(preds) == 12
    metrics_files = list(out.rglob("metrics.json"))
    assert metrics_files
    metrics = json.loads(metrics_files[0].read_text())
    assert json.dumps(metrics)  # serialisable
    # rerun: everything comes from the cache, nothing is asked again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("predictions.jsonl")}
    assert main(argv) == 0
    assert len([line for p in out.rglob("predictions.jsonl") for line in p.read_text().splitlines() if line.strip()]) == 12
    assert set(before) == set(out.rglob("predictions.jsonl"))
