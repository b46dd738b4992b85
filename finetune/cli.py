"""Arguments and error handling shared by ``python -m finetune`` and ``infimed finetune``.

finetune run PIPELINE.yaml [--output-dir DIR] [--dry-run] [--resume]
finetune export RUN_DIR --out DIR --mode merged|adapter [--dtype auto|float32|bfloat16] [--eval EVAL_DIR ...]
"""

from __future__ import annotations

import argparse
import sys


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the ``run`` / ``export`` subcommands to ``parser`` (or a new one)."""
    p = parser
    if p is None:
        p = argparse.ArgumentParser(prog="python -m finetune", description="three-stage supervised fine-tuning")
        # the deepspeed launcher puts --local_rank=N before the script's own arguments
        p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="finetune_action", metavar="{run,export}")

    r = sub.add_parser("run", help="train the pipeline's stages in order (stage k starts from stage k-1)")
    r.add_argument("pipeline", help="pipeline YAML (kind: finetune)")
    r.add_argument("--output-dir", default=None, help="run directory (default: the pipeline's output_dir)")
    r.add_argument("--dry-run", action="store_true", help="no training: memory per GPU (meta device) and pack plans")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run at the stage and step where it stopped (safe on a fresh directory)",
    )
    # torchrun / deepspeed launchers may append --local_rank / --local-rank
    r.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    r.set_defaults(func=run_args)

    e = sub.add_parser("export", help="write a servable model (merged) or a LoRA adapter, with a model card")
    e.add_argument("run_dir", help="a finished `finetune run` directory")
    e.add_argument("--out", required=True, help="export directory (must not exist or be empty)")
    e.add_argument(
        "--mode",
        choices=("merged", "adapter"),
        default="merged",
        help="merged: a model directory for `infimed serve --model` and transformers; adapter: a PEFT LoRA "
        "adapter for `infimed serve --lora NAME=PATH` (refused, with merged written instead, when anything "
        "besides the language model's LoRA changed)",
    )
    e.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="weights' dtype (auto: the base model's)",
    )
    e.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="EVAL_DIR",
        help="an `infimed eval --out` folder whose results go into the model card (repeatable)",
    )
    e.add_argument("--name", default=None, help="model name in the card (default: the export folder's name)")
    e.set_defaults(func=export_args)
    return p


def run_args(args: argparse.Namespace) -> int:
    """Run the pipeline; a bad pipeline or data gives a one-line message naming the file and exit status 2."""
    from finetune.recipe import run
    from training.data import DataError
    from training.format import FormatError
    from training.stage import ConfigError

    try:
        return run(args.pipeline, output_dir=args.output_dir, dry=args.dry_run, resume=args.resume)
    except (ConfigError, DataError, FormatError, FileNotFoundError, FileExistsError) as e:
        print(f"finetune run: {e}", file=sys.stderr)
        return 2


def export_args(args: argparse.Namespace) -> int:
    """Export a run; a refused adapter export writes the merged model and says why (exit status 0)."""
    from finetune.export import ExportError, export_run

    try:
        result = export_run(
            args.run_dir, args.out, mode=args.mode, dtype=args.dtype, eval_dirs=args.eval, name=args.name
        )
    except ExportError as e:
        print(f"finetune export: {e}", file=sys.stderr)
        return 2
    if result.refusal:
        print(f"finetune export: adapter export refused, wrote the merged model instead: {result.refusal}",
              file=sys.stderr)  # fmt: skip
    print(result.summary())
    return 0
