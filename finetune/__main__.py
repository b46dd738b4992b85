"""``python -m finetune run PIPELINE.yaml [...]`` / ``python -m finetune export RUN_DIR --out DIR`` (what
torchrun / deepspeed launch; the same arguments as ``infimed finetune``)."""

from __future__ import annotations

import sys

from finetune.cli import build_parser


def main(argv: list[str] | None = None) -> int:
    from core.logs import configure_logging

    configure_logging()
    args = build_parser().parse_args(argv)
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
