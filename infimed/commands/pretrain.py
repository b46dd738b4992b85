"""``infimed pretrain RECIPE.yaml [--output-dir DIR] [--dry-run] [--resume]`` — continual pretraining."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from pretrain.cli import build_parser, run_args

    p = sub.add_parser("pretrain", help="continual pretraining with packing and a resolution schedule")
    build_parser(p)
    p.set_defaults(func=run_args)
