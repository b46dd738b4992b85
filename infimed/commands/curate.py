"""``infimed curate`` — score and filter image-text data on five quality dimensions, with a report.

    infimed curate curation/recipes/default.yaml --input data/dicom --reports data/reports.csv --output runs/cur
    infimed curate curation/recipes/default.yaml --input llava.json --output runs/cur --workers 2
    infimed curate RECIPE.yaml --input data.jsonl --output runs/cur \\
        --base-url http://localhost:8000/v1 --api-key $KEY --judge-model infimed-4b
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("infimed.curate")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "curate",
        help="score and filter image-text data on five quality dimensions",
        description="Read a manifest, ShareGPT/LLaVA, OpenAI-messages, HF-on-disk dataset or a DICOM folder "
        "(+ reports CSV/JSONL), score every sample on five dimensions, apply the recipe's gates, deduplicate, "
        "check the token budget, assign patient-level splits, and write kept/rejected manifests, scores and an "
        "HTML report to --output (see docs/curation.md).",
    )
    p.add_argument("recipe", help="curation recipe YAML (kind: curation)")
    p.add_argument(
        "--input", action="append", required=True, metavar="PATH", help="input file or folder (repeat for several)"
    )
    p.add_argument("--input-format", default="auto", choices=("auto", "manifest", "sharegpt", "openai", "hf", "dicom"))
    p.add_argument(
        "--reports",
        default=None,
        metavar="CSV",
        help="reports / QA keyed by SOPInstanceUID or StudyInstanceUID (DICOM input)",
    )
    p.add_argument("--image-root", default=None, help="folder image paths are relative to (default: the data file's)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder (a rerun resumes)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: the recipe's run.workers)")
    p.add_argument("--base-url", default=None, help="judge endpoint incl. /v1 (default: OPENAI_BASE_URL)")
    p.add_argument("--api-key", default=None, help="judge bearer key (default: OPENAI_API_KEY)")
    p.add_argument("--judge-model", default=None, help="served model that judges (turns the judge on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from curation import CurationError, InputSpec, ReaderError, RecipeError, curate, load_recipe

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as e:
        print(f"infimed curate: {e}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print("infimed curate: --workers must be ≥ 1", file=sys.stderr)
        return 2
    for path in args.input:
        if not Path(path).exists():
            print(f"infimed curate: {path}: no such file or folder", file=sys.stderr)
            return 2
    reports = Path(args.reports) if args.reports else None
    if reports is not None and not reports.is_file():
        print(f"infimed curate: {reports}: reports file not found", file=sys.stderr)
        return 2
    inputs = [
        InputSpec(Path(p), args.input_format, reports, Path(args.image_root) if args.image_root else None)
        for p in args.input
    ]

    client, model = None, args.judge_model or (recipe.judge.model if recipe.judge.enabled else None)
    if model:
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            print("infimed curate: the judge needs --base-url (or OPENAI_BASE_URL)", file=sys.stderr)
            return 2
        from core.client import OpenAIClient

        client = OpenAIClient(
            base_url,
            args.api_key,
            concurrency=recipe.judge.concurrency,
            max_retries=recipe.judge.max_retries,
            timeout=recipe.judge.timeout,
            cache_dir=Path(args.output) / ".state" / "judge_cache",
        )
    try:
        result = curate(
            recipe,
            inputs,
            args.output,
            workers=args.workers,
            judge_client=client,
            judge_model=model,
            progress=not args.no_progress,
        )
    except (CurationError, ReaderError, RecipeError) as e:
        print(f"infimed curate: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # scorer parameter errors name the scorer
        print(f"infimed curate: {e}", file=sys.stderr)
        return 1
    print(
        f"{result.total} samples: {result.kept} kept, {result.rejected} rejected"
        + (f", {result.issues} unreadable record(s)" if result.issues else "")
    )
    for rule, n in sorted(result.rules.items(), key=lambda kv: -kv[1]):
        print(f"  {rule}: {n}")
    if result.judged:
        print(f"  judge: {result.judged} rated, {result.judge_invalid} invalid answer(s)")
    if result.shards_skipped:
        print(f"  resumed: {result.shards_skipped} shard(s) were already done")
    print(f"report: {result.output / 'report.html'}")
    return 0
