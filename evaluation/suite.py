"""Evaluate one model on several benchmarks and write the run's summary, table and chart."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.client import OpenAIClient
from evaluation.harness import Metrics, evaluate, write_json_atomic
from evaluation.report import load_run, markdown_table, plot_runs

log = logging.getLogger(__name__)


def run_suite(
    client: OpenAIClient,
    *,
    model: str,
    benchmarks: list[str],
    out_dir: str | Path,
    label: str | None = None,
    **options: Any,
) -> dict[str, Metrics]:
    """Run :func:`evaluation.harness.evaluate` per benchmark; write ``run.json``, ``results.md``, ``chart.png``.

    ``options`` are passed to ``evaluate`` (``data_dir``, ``limit``, ``judge``, ``train_manifest`` …).
    """
    out = Path(out_dir)
    results: dict[str, Metrics] = {}
    for spec in benchmarks:
        results[spec] = evaluate(client, model=model, benchmark=spec, out_dir=out, **options)
    run = {
        "label": label or model,
        "model": model,
        "base_url": client.base_url,  # never the key
        "benchmarks": {
            m.benchmark: {"n": m.n, "acc": m.accuracy, "closed_acc": m.closed_accuracy, "errors": m.summary["errors"]}
            for m in results.values()
        },
    }
    write_json_atomic(out / "run.json", run)
    runs = [load_run(out, label=run["label"])]
    (out / "results.md").write_text(markdown_table(runs), encoding="utf-8")
    plot_runs(runs, out / "chart.png")
    return results
