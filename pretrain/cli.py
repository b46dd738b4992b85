"""Arguments and error handling shared by ``python -m pretrain`` and ``infimed pretrain``."""

from __future__ import annotations

import argparse
import sys


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the recipe's arguments to ``parser`` (or a new one)."""
    p = parser or argparse.ArgumentParser(prog="python -m pretrain", description="continual pretraining recipe")
    p.add_argument("recipe", help="pretrain YAML (kind: pretrain)")
    p.add_argument("--output-dir", default=None, help="run directory (default: the recipe's output_dir)")
    p.add_argument(
        "--dry-run", action="store_true", help="no training: memory estimate per GPU (meta device) and pack plans"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in the output directory (safe on a fresh one)",
    )
    # torchrun / deepspeed launchers may append --local_rank / --local-rank
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


def run_args(args: argparse.Namespace) -> int:
    """Run the recipe; a bad recipe or data gives a one-line message naming the file and exit status 2."""
    from pretrain.recipe import run
    from training.data import DataError
    from training.stage import ConfigError

    try:
        return run(args.recipe, output_dir=args.output_dir, dry=args.dry_run, resume=args.resume)
    except (ConfigError, DataError, FileNotFoundError, FileExistsError) as e:
        print(f"pretrain: {e}", file=sys.stderr)
        return 2
