"""``infimed finetune run PIPELINE.yaml`` / ``infimed finetune export RUN_DIR --out DIR --mode merged|adapter``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from finetune.cli import build_parser

    p = sub.add_parser(
        "finetune",
        help="three-stage supervised fine-tuning; export a servable model",
        description="Three-stage SFT over the training engine (`run`), and export of a merged model or a LoRA "
        "adapter with a model card (`export`). See README.md, 'Fine-tuning on your own data'.",
    )
    build_parser(p)
    p.set_defaults(func=_help(p))


def _help(p: argparse.ArgumentParser):
    def run(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    return run
