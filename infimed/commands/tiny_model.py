"""``infimed tiny-model OUT_DIR [--preset tiny|e2e|bench] [--seed 0]`` — build the tiny model."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiny-model", help="build the tiny Qwen2.5-VL-architecture model for tests and demos")
    p.add_argument("out_dir")
    p.add_argument("--preset", default="tiny", help="tiny (<1M parameters), e2e (learning experiments), bench (20–50M)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.tiny import PRESETS, build_tiny_model

    if args.preset not in PRESETS:
        print(f"infimed tiny-model: unknown preset {args.preset!r} (choose {', '.join(PRESETS)})", file=sys.stderr)
        return 2
    info = build_tiny_model(args.out_dir, preset=args.preset, seed=args.seed)
    print(f"{info.path}: preset {info.preset}, seed {info.seed}, {info.parameters:,} parameters, vocabulary {info.vocab_size}")
    for name, sha in info.files.items():
        print(f"  {sha}  {name}")
    return 0
