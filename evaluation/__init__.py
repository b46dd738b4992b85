"""Medical VQA evaluation against any OpenAI-compatible endpoint (MedEvalKit-style prompts and scoring).

Public API::

    evaluate(client, model=..., benchmark=..., out_dir=...) -> Metrics   # one benchmark
    run_suite(client, model=..., benchmarks=[...], out_dir=...)           # several + table + chart
    load_benchmark(spec, data_dir) -> Benchmark                           # samples only
    check_contamination(samples, root, train_manifest) -> ContaminationReport
    load_run(folder), markdown_table(runs), plot_runs(runs, png)          # reports
"""

from __future__ import annotations

from evaluation import loaders as _loaders  # noqa: F401,E402  (register the loaders)
from evaluation import local as _local  # noqa: F401  (registers the phantom loader)
from evaluation.benchmarks import PUBLIC, REGISTRY, Benchmark, BenchmarkDataError, load_benchmark
from evaluation.contamination import ContaminationReport, check_contamination
from evaluation.harness import Metrics, build_messages, evaluate, shuffle_images
from evaluation.judge import Judge
from evaluation.report import Run, RunError, load_run, markdown_table, plot_runs
from evaluation.suite import run_suite

__all__ = [
    "PUBLIC",
    "REGISTRY",
    "Benchmark",
    "BenchmarkDataError",
    "ContaminationReport",
    "Judge",
    "Metrics",
    "Run",
    "RunError",
    "build_messages",
    "check_contamination",
    "evaluate",
    "load_benchmark",
    "load_run",
    "markdown_table",
    "plot_runs",
    "run_suite",
    "shuffle_images",
]
