"""``infimed eval`` — medical VQA evaluation against an OpenAI-compatible endpoint; ``eval compare`` charts runs.

    infimed eval --base-url http://localhost:8000/v1 --api-key $KEY --model infimed-4b \\
        --benchmarks vqa-rad,slake,phantoms,manifest:data/ward7/manifest.jsonl --data-dir data --out runs/4b
    infimed eval compare runs/base runs/tuned --out runs/compare.png
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("infimed.eval")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="medical VQA evaluation against an OpenAI-compatible endpoint",
        description="Evaluate a served model on medical VQA benchmarks (MedEvalKit-style prompts and scoring). "
        "`infimed eval compare RUN_DIR… --out chart.png` compares finished runs.",
    )
    p.add_argument("--base-url", default=None, help="endpoint incl. /v1 (default: OPENAI_BASE_URL)")
    p.add_argument("--api-key", default=None, help="bearer key (default: OPENAI_API_KEY)")
    p.add_argument("--model", default=None, help="served model name (default: the endpoint's first model)")
    p.add_argument(
        "--benchmarks",
        default=None,
        help="comma list: vqa-rad, slake, pathvqa, pmc-vqa, omnimedvqa, mmmu-med, medxpertqa, phantoms, manifest:PATH",
    )
    p.add_argument("--data-dir", default="data", help="folder holding the benchmarks' files (see docs/evaluation.md)")
    p.add_argument("--out", default=None, help="run folder: predictions, metrics, results.md, chart.png")
    p.add_argument("--label", default=None, help="name of this run in tables and charts (default: the model)")
    p.add_argument("--limit", type=int, default=None, help="first N items of each benchmark")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--retries", type=int, default=3, help="retries on 429/5xx/connection errors")
    p.add_argument(
        "--reasoning", action="store_true", help="ask for the answer inside \\boxed{} (MedEvalKit REASONING)"
    )
    p.add_argument(
        "--send-dicom",
        choices=("auto", "always", "never"),
        default="auto",
        help="DICOM as wire parts (our gateway) or PNG renders; auto: parts when /v1/models says owned_by infimed",
    )
    p.add_argument("--max-pixels", type=int, default=None, help="pixel budget when rendering DICOM here")
    p.add_argument("--phantoms-n", type=int, default=300, help="phantoms generated when DATA_DIR/phantoms is empty")
    p.add_argument("--phantoms-seed", type=int, default=1234)
    p.add_argument("--train-manifest", default=None, help="training manifest for the contamination check")
    p.add_argument(
        "--shuffle-images",
        type=int,
        default=None,
        metavar="SEED",
        help="control run: images permuted across questions with this seed",
    )
    p.add_argument("--judge-model", default=None, help="LLM judge for open answers (off unless given)")
    p.add_argument("--judge-base-url", default=None, help="judge endpoint (default: --base-url)")
    p.add_argument("--judge-api-key", default=None, help="judge key (default: --api-key)")
    p.add_argument("--no-cache", action="store_true", help="do not keep the response cache in OUT/cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="eval_action", metavar="{compare}")
    c = sub.add_parser("compare", help="table and bar chart comparing finished runs")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR[=LABEL]", help="folders written by `infimed eval --out`")
    c.add_argument("--out", dest="chart", required=True, help="bar chart PNG to write")
    c.add_argument("--table", default=None, help="also write the Markdown table here")
    c.set_defaults(func=run_compare)


def _fail(msg: str, code: int = 2) -> int:
    print(f"infimed eval: {msg}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    import openai

    from core.client import OpenAIClient
    from core.manifest import ManifestError
    from evaluation import BenchmarkDataError, Judge, run_suite

    if not args.benchmarks:
        return _fail("--benchmarks is required (e.g. --benchmarks vqa-rad,phantoms)")
    if not args.out:
        return _fail("--out is required (the run folder)")
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        return _fail("no endpoint: pass --base-url (…/v1) or set OPENAI_BASE_URL")
    out = Path(args.out)
    client = OpenAIClient(
        base_url,
        args.api_key,
        concurrency=args.concurrency,
        max_retries=args.retries,
        timeout=args.timeout,
        cache_dir=None if args.no_cache else out / "cache",
    )
    model = args.model
    send_dicom = args.send_dicom == "always"
    if model is None or args.send_dicom == "auto":
        try:
            cards = client.model_cards()
        except (openai.APIConnectionError, openai.APIStatusError) as e:
            return _fail(f"{base_url}: cannot list models ({type(e).__name__}); is the server up and the key right?")
        if model is None:
            if not cards:
                return _fail(f"{base_url}: serves no model; pass --model")
            model = cards[0]["id"]
        if args.send_dicom == "auto":
            send_dicom = any(c.get("owned_by") == "infimed" for c in cards)
    judge = None
    if args.judge_model:
        judge_client = OpenAIClient(
            args.judge_base_url or base_url,
            args.judge_api_key or args.api_key,
            concurrency=args.concurrency,
            max_retries=args.retries,
            timeout=args.timeout,
            cache_dir=None if args.no_cache else out / "cache" / "judge",
        )
        judge = Judge(judge_client, args.judge_model)
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    try:
        results = run_suite(
            client,
            model=model,
            benchmarks=benchmarks,
            out_dir=out,
            label=args.label,
            data_dir=args.data_dir,
            limit=args.limit,
            params={"temperature": args.temperature, "max_tokens": args.max_tokens},
            reasoning=args.reasoning,
            send_dicom=send_dicom,
            max_pixels=args.max_pixels,
            judge=judge,
            train_manifest=args.train_manifest,
            shuffle_images_seed=args.shuffle_images,
            progress=not args.no_progress,
            phantoms_n=args.phantoms_n,
            phantoms_seed=args.phantoms_seed,
        )
    except (BenchmarkDataError, ManifestError) as e:
        return _fail(str(e))
    errors = 0
    print(f"model {model} at {base_url}")
    for m in results.values():
        s = m.summary
        closed, open_ = s["closed"], s["open"]
        line = f"  {m.benchmark:<22} n={m.n:<6} acc={_pct(m.accuracy)}"
        if closed["total"]:
            line += f"  closed={_pct(closed['acc'])} (chance {_pct(closed.get('chance'))})"
        if open_["total"]:
            line += f"  open EM={_pct(open_['em'])} F1={_pct(open_['f1'])}"
        if m.contamination:
            line += f"  contaminated={m.contamination['contaminated']}"
        if s["errors"]:
            line += f"  errors={s['errors']}"
        errors += s["errors"]
        print(line)
    print(f"wrote {out / 'results.md'} and {out / 'chart.png'}")
    if errors:
        return _fail(f"{errors} request(s) failed and were counted wrong; rerun the same command to retry them", 1)
    return 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def run_compare(args: argparse.Namespace) -> int:
    from evaluation import RunError, load_run, markdown_table, plot_runs

    try:
        runs = []
        for spec in args.runs:
            folder, _, label = spec.partition("=")
            runs.append(load_run(folder, label or None))
    except RunError as e:
        return _fail(str(e))
    table = markdown_table(runs)
    plot_runs(runs, args.chart)
    if args.table:
        Path(args.table).write_text(table, encoding="utf-8")
    print(table)
    print(f"wrote {args.chart}")
    return 0
