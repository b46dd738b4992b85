"""``python -m pretrain RECIPE.yaml [--output-dir DIR] [--dry-run] [--resume]`` (what torchrun / deepspeed launch)."""

from __future__ import annotations

import sys

from pretrain.cli import build_parser, run_args


def main(argv: list[str] | None = None) -> int:
    from core.logs import configure_logging

    configure_logging()
    return run_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
