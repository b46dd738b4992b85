"""``infimed`` — one entry point for every package.

Subcommands live in ``infimed/commands/<name>.py`` (each exposes ``register(subparsers)``); a
subcommand whose module is not there yet is still listed and exits with status 2 saying so.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from infimed import __version__

# (command, module under infimed.commands, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("serve", "serve", "run the OpenAI-compatible gateway (and its vLLM engine)"),
    ("ui", "ui", "run the clinician web app against a gateway"),
    ("deid", "deid", "de-identify a folder of DICOM (and its reports)"),
    ("curate", "curate", "score and filter image-text data on five quality dimensions"),
    ("pretrain", "pretrain", "continual pretraining with packing and a resolution schedule"),
    ("finetune", "finetune", "three-stage supervised fine-tuning; export a servable model"),
    ("eval", "eval", "medical VQA evaluation against an OpenAI-compatible endpoint"),
    ("tiny-model", "tiny_model", "build the tiny Qwen2.5-VL-architecture model for tests and demos"),
    ("phantoms", "phantoms", "write synthetic CT / X-ray / MR phantoms with question-answer pairs"),
]

log = logging.getLogger("infimed")


def _not_built(name: str):
    def run(args: argparse.Namespace) -> int:
        print(f"infimed {name}: not built yet in this version ({__version__}).", file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infimed", description="InfiMed: a medical vision-language model you can serve, evaluate and adapt.")
    parser.add_argument("--version", action="version", version=f"infimed {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING… (default: INFIMED_LOG_LEVEL or INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_ in COMMANDS:
        try:
            mod = importlib.import_module(f"infimed.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"infimed.commands.{module}":
                raise
            p = sub.add_parser(name, help=f"{help_} (not built yet)", add_help=True)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_not_built(name))
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.logs import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
